//! The state-of-the-world xDS protocol, one rule per test, through a real tonic client that
//! speaks it as Envoy (`api_type: GRPC`) and gRPC's own xDS clients do. Resource bodies are
//! text here, so a response's resources read as their bodies.

use edgexds::cache::ResourceType::{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration};
use edgexds_tests::eventually;
use edgexds_tests::sotw::{SotwClient, bodies};
use edgexds_tests::xds::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

#[tokio::test]
async fn every_response_has_a_version_and_a_nonce_and_error_detail_decides_ack_or_nack() {
    let h = Harness::start();
    h.publish_all(&[(Cluster, "a", "A1")], &[]);
    let mut ads = h.sotw_ads().await;
    ads.subscribe(CDS, &[]).await;
    let first = ads.next().await;
    assert_eq!((first.type_url.as_str(), bodies(&first)), (CDS, vec!["A1".to_owned()]));
    assert!(!first.version_info.is_empty() && !first.nonce.is_empty());
    ads.ack(&first, &[]).await;
    acked(&h, &first.version_info).await;
    h.publish_all(&[(Cluster, "a", "A2")], &[]);
    let second = ads.next().await;
    assert_ne!((&second.version_info, &second.nonce), (&first.version_info, &first.nonce));
    ads.nack(&second, &[], &first.version_info).await;
    let (cds, _) = eventually(PATIENCE, "the NACK recorded", || async {
        h.proxies.report().await.pop().map(|p| p.types["cds"].clone()).filter(|cds| cds.last_nack.is_some())
    })
    .await;
    assert_eq!(cds.version_acked.as_deref(), Some(first.version_info.as_str()), "the ACK is recorded");
    assert_eq!(cds.last_nack.as_ref().map(|n| n.version.as_str()), Some(second.version_info.as_str()));
}

#[tokio::test]
async fn listeners_and_clusters_carry_the_whole_subscribed_set_so_a_vanished_name_is_gone() {
    let h = Harness::start();
    h.publish_all(&[(Cluster, "a", "A"), (Cluster, "b", "B"), (Listener, "l1", "L1"), (Listener, "l2", "L2")], &[]);
    let mut ads = h.sotw_ads().await;
    ads.subscribe(CDS, &[]).await;
    let clusters = ads.next().await;
    assert_eq!(bodies(&clusters), ["A", "B"]);
    ads.ack(&clusters, &[]).await;
    ads.subscribe(LDS, &[]).await;
    let listeners = ads.next().await;
    assert_eq!(bodies(&listeners), ["L1", "L2"]);
    ads.ack(&listeners, &[]).await;
    // b changes and a vanishes: the next response is the whole set, without a.
    h.publish_all(&[(Cluster, "b", "B2"), (Listener, "l1", "L1"), (Listener, "l2", "L2")], &[]);
    let clusters = ads.next().await;
    assert_eq!(bodies(&clusters), ["B2"]);
    ads.ack(&clusters, &[]).await;
    ads.assert_quiet().await;
}

#[tokio::test]
async fn endpoints_and_routes_are_named_only_and_carry_only_what_changed() {
    let h = Harness::start();
    h.publish_all(
        &[(ClusterLoadAssignment, "a", "EA"), (ClusterLoadAssignment, "b", "EB"), (RouteConfiguration, "r", "R1")],
        &[],
    );
    let mut ads = h.sotw_ads().await;
    // Naming nothing asks for no endpoints at all, unlike clusters.
    ads.subscribe(EDS, &[]).await;
    let none = ads.next().await;
    assert!(none.resources.is_empty(), "answered, with nothing");
    ads.ack(&none, &[]).await;
    ads.subscribe(EDS, &["a", "b"]).await;
    let both = ads.next().await;
    assert_eq!(bodies(&both), ["EA", "EB"]);
    ads.ack(&both, &["a", "b"]).await;
    h.publish_all(
        &[(ClusterLoadAssignment, "a", "EA"), (ClusterLoadAssignment, "b", "EB2"), (RouteConfiguration, "r", "R1")],
        &[],
    );
    let changed = ads.next().await;
    assert_eq!(bodies(&changed), ["EB2"], "only the changed assignment");
    ads.ack(&changed, &["a", "b"]).await;
    ads.subscribe(RDS, &["r"]).await;
    assert_eq!(bodies(&ads.next().await), ["R1"]);
}

#[tokio::test]
async fn a_nack_keeps_the_previous_version_and_the_same_bad_version_is_not_resent() {
    let h = Harness::start();
    h.publish_all(&[(Cluster, "a", "good")], &[]);
    let mut ads = h.sotw_ads().await;
    ads.subscribe(CDS, &[]).await;
    let good = ads.next().await;
    ads.ack(&good, &[]).await;
    acked(&h, &good.version_info).await;
    h.publish_all(&[(Cluster, "a", "bad")], &[]);
    let bad = ads.next().await;
    ads.nack(&bad, &[], &good.version_info).await;
    ads.assert_quiet().await;
    let (report, _) = eventually(PATIENCE, "the NACK recorded", || async {
        h.proxies.report().await.pop().map(|p| p.types["cds"].clone()).filter(|cds| cds.last_nack.is_some())
    })
    .await;
    assert_eq!(
        report.version_acked.as_deref(),
        Some(good.version_info.as_str()),
        "the client stays at the good version"
    );
    h.publish_all(&[(Cluster, "a", "fixed")], &[]);
    let fixed = ads.next().await;
    assert_eq!(bodies(&fixed), ["fixed"]);
}

#[tokio::test]
async fn a_request_whose_names_change_is_answered_even_with_a_stale_version() {
    let (_h, mut ads, first) = holding_endpoints_of_a().await;
    // The client names b too, still at the version it has: it is answered.
    ads.ack(&first, &["a", "b"]).await;
    let more = ads.next().await;
    assert_eq!(bodies(&more), ["EB"]);
    ads.ack(&more, &["a", "b"]).await;
    // Dropping a name is a change too, and answered; b is not sent again.
    ads.ack(&more, &["b"]).await;
    let fewer = ads.next().await;
    assert!(fewer.resources.is_empty());
    assert_ne!(fewer.version_info, more.version_info, "the version is the client's new state");
}

#[tokio::test]
async fn responses_go_out_only_when_something_the_client_holds_changed() {
    let (h, mut ads, first) = holding_endpoints_of_a().await;
    h.publish_all(&[(ClusterLoadAssignment, "a", "EA"), (ClusterLoadAssignment, "b", "EB2")], &[]);
    ads.assert_quiet().await;
    // A repeated ACK of the same version and names is no change either.
    ads.ack(&first, &["a"]).await;
    ads.assert_quiet().await;
}

#[tokio::test]
async fn versions_are_derived_from_the_resources_so_replicas_agree() {
    let (one, two) = (Harness::start(), Harness::start());
    // Published in different orders and histories: the same resources in the end.
    one.publish_all(&[(Cluster, "a", "A"), (Cluster, "b", "B")], &[]);
    two.publish_all(&[(Cluster, "b", "B0")], &[]);
    two.publish_all(&[(Cluster, "b", "B"), (Cluster, "a", "A")], &[]);
    let mut first = one.sotw_ads().await;
    let mut second = two.sotw_ads().await;
    first.subscribe(CDS, &[]).await;
    second.subscribe(CDS, &[]).await;
    assert_eq!(first.next().await.version_info, second.next().await.version_info);
}

#[tokio::test]
async fn a_wildcard_listener_request_leaves_out_the_named_only_grpc_listeners() {
    let h = Harness::start();
    h.publish_all(&[(Listener, "outbound", "OUT"), (Listener, "web.shop:80", "GRPC")], &["web.shop:80"]);
    let mut envoy = h.sotw_ads().await;
    envoy.subscribe(LDS, &[]).await;
    assert_eq!(bodies(&envoy.next().await), ["OUT"]);
    let mut grpc = h.sotw_ads().await;
    grpc.subscribe(LDS, &["web.shop:80"]).await;
    assert_eq!(bodies(&grpc.next().await), ["GRPC"]);
}

#[tokio::test]
async fn the_per_type_stream_serves_its_own_type_and_refuses_others() {
    let h = Harness::start();
    h.publish_all(&[(Cluster, "a", "A")], &[]);
    let mut cds = SotwClient::cds(h.channel().await).await;
    cds.subscribe("", &[]).await;
    assert_eq!(bodies(&cds.next().await), ["A"]);
    let mut wrong = SotwClient::cds(h.channel().await).await;
    wrong.subscribe(EDS, &["a"]).await;
    let refused = wrong.next_result().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_stale_nonce_is_ignored() {
    let (h, mut ads, first) = holding_endpoints_of_a().await;
    h.publish_all(&[(ClusterLoadAssignment, "a", "EA2"), (ClusterLoadAssignment, "b", "EB")], &[]);
    let second = ads.next().await;
    // Answering the superseded response changes nothing, names included.
    ads.ack(&first, &["a", "b"]).await;
    ads.assert_quiet().await;
    ads.ack(&second, &["a"]).await;
    ads.assert_quiet().await;
}

/// Waits until the server has taken the client's ACK of `version` of clusters: an ACK that
/// arrives after a newer response went out answers a superseded nonce, and is ignored.
async fn acked(h: &Harness, version: &str) {
    eventually(PATIENCE, "the ACK recorded", || async {
        h.proxies.report().await.pop().filter(|p| p.types["cds"].version_acked.as_deref() == Some(version)).map(drop)
    })
    .await;
}

/// A client holding endpoints `a` (ACKed) of the two published, `a` and `b`.
async fn holding_endpoints_of_a() -> (Harness, SotwClient, DiscoveryResponse) {
    let h = Harness::start();
    h.publish_all(&[(ClusterLoadAssignment, "a", "EA"), (ClusterLoadAssignment, "b", "EB")], &[]);
    let mut ads = h.sotw_ads().await;
    ads.subscribe(EDS, &["a"]).await;
    let first = ads.next().await;
    ads.ack(&first, &["a"]).await;
    (h, ads, first)
}

#[tokio::test]
async fn after_naming_clusters_an_empty_list_unsubscribes_instead_of_asking_for_all() {
    let h = Harness::start();
    h.publish_all(&[(Cluster, "a", "A"), (Cluster, "b", "B")], &[]);
    let mut client = h.sotw_ads().await;
    client.subscribe(CDS, &["a"]).await;
    let named = client.next().await;
    assert_eq!(bodies(&named), ["A"]);
    client.ack(&named, &["a"]).await;
    // A gRPC client that no longer needs any cluster says so with an empty list.
    client.ack(&named, &[]).await;
    let none = client.next().await;
    assert!(none.resources.is_empty(), "not every cluster: {:?}", bodies(&none));
}

/// A first request on a new stream, naming `names` and the version the client holds.
fn reconnecting(
    type_url: &str,
    names: &[&str],
    version: &str,
) -> envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
    envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: version.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_client_reconnecting_with_the_version_it_holds_is_resent_nothing_and_with_another_everything() {
    let h = Harness::start();
    h.publish_all(&[(Cluster, "a", "A"), (Cluster, "b", "B"), (ClusterLoadAssignment, "a", "EA")], &[]);
    let mut ads = h.sotw_ads().await;
    ads.subscribe(CDS, &[]).await;
    let clusters = ads.next().await;
    ads.ack(&clusters, &[]).await;
    ads.subscribe(EDS, &["a"]).await;
    let endpoints = ads.next().await;
    ads.ack(&endpoints, &["a"]).await;
    drop(ads);

    // A new stream, to this replica or another serving the same: the versions it holds.
    let mut again = h.sotw_ads().await;
    again.send(reconnecting(CDS, &[], &clusters.version_info)).await;
    again.send(reconnecting(EDS, &["a"], &endpoints.version_info)).await;
    again.assert_quiet().await;
    // What changes after still reaches it, whole for clusters.
    h.publish_all(&[(Cluster, "a", "A2"), (Cluster, "b", "B"), (ClusterLoadAssignment, "a", "EA")], &[]);
    assert_eq!(bodies(&again.next().await), ["A2", "B"]);
    // A client holding another version gets everything.
    let mut behind = h.sotw_ads().await;
    behind.send(reconnecting(CDS, &[], &clusters.version_info)).await;
    assert_eq!(bodies(&behind.next().await), ["A2", "B"]);
}
