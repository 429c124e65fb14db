//! Envoy's incremental xDS protocol, one rule per test, through a real tonic client.

use std::collections::HashMap;

use edgexds::cache::ResourceType;
use edgexds_tests::xds::*;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Code;

#[tokio::test]
async fn every_response_has_a_fresh_nonce_and_carries_type_versions_and_bodies() {
    let h = Harness::start();
    h.publish(&[("a", "A1")], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    let first = ads.next().await;
    assert_eq!(first.type_url, CDS);
    assert!(!first.nonce.is_empty());
    let resource = &first.resources[0];
    assert_eq!(resource.version, h.version(ResourceType::Cluster, "a"));
    let any = resource.resource.as_ref().unwrap();
    assert_eq!((any.type_url.as_str(), any.value.as_slice()), (CDS, b"A1".as_slice()));
    ads.ack(&first).await;
    h.publish(&[("a", "A2")], &[]);
    let second = ads.next().await;
    assert_ne!(second.nonce, first.nonce);
}

#[tokio::test]
async fn ack_and_nack_are_decided_by_error_detail_and_a_nack_keeps_the_stream_up() {
    let h = Harness::start();
    h.publish(&[("a", "bad")], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    let rejected = ads.next().await;
    ads.nack(&rejected, "cluster a: invalid").await;
    // The NACKed version is not resent: nothing arrives until something changes.
    ads.assert_quiet().await;
    h.publish(&[("a", "good")], &[]);
    let fixed = ads.next().await;
    assert_eq!(names(&fixed), ["a"]);
    assert_eq!(fixed.resources[0].version, h.version(ResourceType::Cluster, "a"));
}

#[tokio::test]
async fn first_request_without_names_is_legacy_wildcard() {
    let h = Harness::start();
    h.publish(&[("a", "1"), ("b", "2")], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    assert_eq!(names(&ads.next().await), ["a", "b"]);
    h.publish(&[("a", "1"), ("b", "2"), ("c", "3")], &[]);
    assert_eq!(names(&ads.next().await), ["c"], "wildcard streams learn new resources");
}

#[tokio::test]
async fn explicit_star_is_wildcard() {
    let h = Harness::start();
    h.publish(&[("a", "1"), ("b", "2")], &[]);
    let mut cds = h.cds().await;
    cds.subscribe(CDS, &["*"]).await;
    assert_eq!(names(&cds.next().await), ["a", "b"]);
}

#[tokio::test]
async fn first_request_is_answered_even_when_there_is_nothing_to_send() {
    let h = Harness::start();
    h.publish(&[], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    let response = ads.next().await;
    assert!(response.resources.is_empty() && response.removed_resources.is_empty());
}

#[tokio::test]
async fn subscribing_to_a_missing_name_removes_it_and_sends_it_when_it_appears() {
    let h = Harness::start();
    h.publish(&[], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(EDS, &["ghost"]).await;
    let absent = ads.next().await;
    assert_eq!(removed(&absent), ["ghost"]);
    ads.ack(&absent).await;
    h.publish(&[], &[("ghost", "G")]);
    assert_eq!(names(&ads.next().await), ["ghost"], "the subscription was kept");
}

#[tokio::test]
async fn deleted_resources_are_sent_in_removed_resources() {
    let h = Harness::start();
    h.publish(&[("a", "1"), ("b", "2")], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    let first = ads.next().await;
    ads.ack(&first).await;
    h.publish(&[("a", "1")], &[]);
    let second = ads.next().await;
    assert!(second.resources.is_empty());
    assert_eq!(removed(&second), ["b"]);
}

#[tokio::test]
async fn unsubscribe_needs_no_response() {
    let h = Harness::start();
    h.publish(&[], &[("x", "1"), ("y", "2")]);
    let mut ads = h.ads().await;
    ads.subscribe(EDS, &["x", "y"]).await;
    let first = ads.next().await;
    ads.ack(&first).await;
    ads.send(request(EDS, &[], &["y"])).await;
    ads.assert_quiet().await;
    h.publish(&[], &[("x", "1")]);
    ads.assert_quiet().await;
}

#[tokio::test]
async fn resubscribe_in_same_stream_is_answered_even_if_unchanged() {
    let h = Harness::start();
    h.publish(&[], &[("x", "1")]);
    let mut ads = h.ads().await;
    ads.subscribe(EDS, &["x"]).await;
    let first = ads.next().await;
    ads.ack(&first).await;
    ads.send(request(EDS, &[], &["x"])).await;
    ads.send(request(EDS, &["x"], &[])).await;
    let again = ads.next().await;
    assert_eq!(names(&again), ["x"]);
    assert_eq!(again.resources[0].version, first.resources[0].version);
}

#[tokio::test]
async fn stale_nonce_still_changes_subscription() {
    let h = Harness::start();
    h.publish(&[], &[("x", "1"), ("y", "2")]);
    let mut ads = h.ads().await;
    ads.subscribe(EDS, &["x"]).await;
    let first = ads.next().await;
    h.publish(&[], &[("x", "1b"), ("y", "2")]);
    let second = ads.next().await;
    assert_ne!(first.nonce, second.nonce);
    // Answering the superseded response, while subscribing to more.
    ads.send(DeltaDiscoveryRequest { response_nonce: first.nonce.clone(), ..request(EDS, &["y"], &[]) }).await;
    assert_eq!(names(&ads.next().await), ["y"]);
}

#[tokio::test]
async fn initial_resource_versions_skip_unchanged_and_remove_vanished_on_a_new_stream() {
    let h = Harness::start();
    h.publish(&[("a", "1"), ("b", "2")], &[]);
    let initial = HashMap::from([
        ("a".to_string(), h.version(ResourceType::Cluster, "a")),
        ("b".to_string(), "outdated".to_string()),
        ("gone".to_string(), "whatever".to_string()),
    ]);
    let mut ads = h.ads().await;
    ads.send(DeltaDiscoveryRequest { initial_resource_versions: initial, ..request(CDS, &[], &[]) }).await;
    let response = ads.next().await;
    assert_eq!(names(&response), ["b"]);
    assert_eq!(removed(&response), ["gone"]);
}

#[tokio::test]
async fn reconnect_with_everything_current_resends_nothing() {
    let h = Harness::start();
    h.publish(&[("a", "1"), ("b", "2")], &[("a", "A")]);
    let initial = |names: &[(&str, ResourceType)]| {
        names.iter().map(|(n, t)| (n.to_string(), h.version(*t, n))).collect::<HashMap<_, _>>()
    };
    let mut ads = h.ads().await;
    ads.send(DeltaDiscoveryRequest {
        initial_resource_versions: initial(&[("a", ResourceType::Cluster), ("b", ResourceType::Cluster)]),
        ..request(CDS, &[], &[])
    })
    .await;
    let cds = ads.next().await;
    assert!(cds.resources.is_empty() && cds.removed_resources.is_empty());
    ads.send(DeltaDiscoveryRequest {
        initial_resource_versions: initial(&[("a", ResourceType::ClusterLoadAssignment)]),
        ..request(EDS, &["a"], &[])
    })
    .await;
    let eds = ads.next().await;
    assert!(eds.resources.is_empty() && eds.removed_resources.is_empty());
}

#[tokio::test]
async fn never_the_same_name_twice_in_one_response() {
    let h = Harness::start();
    h.publish(&[], &[("x", "1")]);
    let mut ads = h.ads().await;
    // Subscribed twice, and re-subscribed before the first answer went out.
    ads.subscribe(EDS, &["x", "x", "missing", "missing"]).await;
    ads.subscribe(EDS, &["x", "missing"]).await;
    let mut seen = Vec::new();
    let response = ads.next().await;
    seen.extend(names(&response).into_iter().chain(removed(&response)).map(str::to_owned));
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), unique.len(), "{seen:?}");
}

#[tokio::test]
async fn clusters_are_sent_before_endpoints_on_ads() {
    let h = Harness::start();
    h.publish(&[("a", "1")], &[("a", "A1")]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    ads.subscribe(EDS, &["a"]).await;
    let (one, two) = (ads.next().await, ads.next().await);
    ads.ack(&one).await;
    ads.ack(&two).await;
    // Both change in one snapshot: CDS must go first.
    h.publish(&[("a", "2"), ("b", "1")], &[("a", "A2")]);
    let first = ads.next().await;
    let second = ads.next().await;
    assert_eq!((first.type_url.as_str(), second.type_url.as_str()), (CDS, EDS));
}

#[tokio::test]
async fn a_changed_cluster_gets_its_load_assignment_resent_right_after() {
    let h = Harness::start();
    h.publish(&[("a", "1")], &[("a", "A")]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    let cds = ads.next().await;
    ads.ack(&cds).await;
    ads.subscribe(EDS, &["a"]).await;
    let eds = ads.next().await;
    ads.ack(&eds).await;
    // Only the cluster changes; its endpoints do not.
    h.publish(&[("a", "2")], &[("a", "A")]);
    let cluster = ads.next().await;
    assert_eq!((cluster.type_url.as_str(), names(&cluster)), (CDS, vec!["a"]));
    let endpoints = ads.next().await;
    assert_eq!((endpoints.type_url.as_str(), names(&endpoints)), (EDS, vec!["a"]));
    assert_eq!(endpoints.resources[0].version, eds.resources[0].version);
}

#[tokio::test]
async fn unknown_type_url_gets_invalid_argument_and_server_stays_healthy() {
    let h = Harness::start();
    h.publish(&[("a", "1")], &[]);
    let mut bad = h.ads().await;
    bad.subscribe("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", &[]).await;
    let status = bad.next_result().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("unsupported type_url"), "{}", status.message());
    assert!(status.message().contains(CDS), "the message lists what is served");
    let mut good = h.ads().await;
    good.subscribe(CDS, &[]).await;
    assert_eq!(names(&good.next().await), ["a"]);
}

#[tokio::test]
async fn missing_type_url_on_ads_gets_invalid_argument() {
    let h = Harness::start();
    h.publish(&[], &[]);
    let mut ads = h.ads().await;
    ads.subscribe("", &[]).await;
    let status = ads.next_result().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("type_url is empty"));
}

#[tokio::test]
async fn a_type_on_the_wrong_single_type_stream_is_rejected() {
    let h = Harness::start();
    h.publish(&[], &[]);
    let mut cds = h.cds().await;
    cds.subscribe(EDS, &["a"]).await;
    assert_eq!(cds.next_result().await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn non_aggregated_delta_clusters_and_endpoints_work_alone() {
    let h = Harness::start();
    h.publish(&[("a", "1")], &[("a", "A")]);
    let mut cds = h.cds().await;
    cds.subscribe("", &[]).await;
    assert_eq!(names(&cds.next().await), ["a"], "type_url may be left out on a single-type stream");
    let mut eds = h.eds().await;
    eds.subscribe(EDS, &["a"]).await;
    let response = eds.next().await;
    assert_eq!((response.type_url.as_str(), names(&response)), (EDS, vec!["a"]));
}

#[tokio::test]
async fn nothing_is_served_before_the_first_snapshot() {
    let h = Harness::start();
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    ads.assert_quiet().await;
    h.publish(&[("a", "1")], &[]);
    assert_eq!(names(&ads.next().await), ["a"]);
}

#[tokio::test]
/// The one home of this rule at the protocol level: the stream loop is the same for both
/// flavours. control-plane/tests/stuck_clients.rs bounds the effect of 500 stuck clients on a
/// healthy one's p99, and tests/tests/envoy_stuck_clients.rs shows a real Envoy unaffected.
async fn a_stuck_client_does_not_delay_other_streams_or_the_publisher() {
    let h = Harness::start();
    h.publish(&[("a", "0")], &[]);
    // Subscribes, then never reads: its one outbound slot fills and stays full.
    let mut stuck = h.ads().await;
    stuck.subscribe(CDS, &[]).await;
    let mut live = h.ads().await;
    live.subscribe(CDS, &[]).await;
    live.next().await;
    let big = "x".repeat(64 * 1024);
    for round in 1..=200 {
        h.publish(&[("a", &format!("{round}{big}"))], &[]);
    }
    // The live stream converges on the latest version, skipping what it no longer needs.
    let latest = h.version(ResourceType::Cluster, "a");
    loop {
        let response = live.next().await;
        if response.resources[0].version == latest {
            break;
        }
    }
    // And the stuck stream, once it reads, gets the newest state rather than a backlog.
    let mut last = stuck.next().await;
    while last.resources[0].version != latest {
        last = stuck.next().await;
    }
}

#[tokio::test]
async fn shutdown_closes_streams_with_unavailable() {
    let h = Harness::start();
    h.publish(&[("a", "1")], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    ads.next().await;
    h.shutdown.send_replace(true);
    let status = ads.next_result().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn rest_style_fetch_is_refused_with_a_hint() {
    use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    let h = Harness::start();
    let mut client = ClusterDiscoveryServiceClient::new(h.channel().await);
    let request = envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest::default();
    let status = client.fetch_clusters(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("streams only"));
}

#[tokio::test]
async fn on_ads_clusters_endpoints_listeners_and_routes_go_in_that_order() {
    use ResourceType::{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration};
    let h = Harness::start();
    let everything = |v: &str| {
        [(Cluster, "a", v), (ClusterLoadAssignment, "a", v), (Listener, "l", v), (RouteConfiguration, "l", v)]
            .map(|(t, n, v)| (t, n, v.to_owned()))
    };
    let publish = |v: &str| {
        let items = everything(v);
        let refs: Vec<_> = items.iter().map(|(t, n, b)| (*t, *n, b.as_str())).collect();
        h.publish_all(&refs, &[]);
    };
    publish("1");
    let mut ads = h.ads().await;
    ads.subscribe(RDS, &["l"]).await;
    ads.subscribe(LDS, &[]).await;
    ads.subscribe(EDS, &["a"]).await;
    ads.subscribe(CDS, &[]).await;
    for _ in 0..4 {
        let response = ads.next().await;
        ads.ack(&response).await;
    }
    // All four change in one snapshot: they go out clusters first, routes last.
    publish("2");
    let mut order = Vec::new();
    while order.len() < 4 {
        let response = ads.next().await;
        ads.ack(&response).await;
        if !order.contains(&response.type_url) {
            order.push(response.type_url.clone());
        }
    }
    assert_eq!(order, [CDS, EDS, LDS, RDS]);
}

#[tokio::test]
async fn a_changed_listener_gets_its_routes_resent_right_after() {
    use ResourceType::{Listener, RouteConfiguration};
    let h = Harness::start();
    h.publish_all(&[(Listener, "outbound", "L1"), (RouteConfiguration, "outbound", "R")], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(LDS, &[]).await;
    let lds = ads.next().await;
    ads.ack(&lds).await;
    ads.subscribe(RDS, &["outbound"]).await;
    let rds = ads.next().await;
    ads.ack(&rds).await;
    h.publish_all(&[(Listener, "outbound", "L2"), (RouteConfiguration, "outbound", "R")], &[]);
    let listener = ads.next().await;
    assert_eq!((listener.type_url.as_str(), names(&listener)), (LDS, vec!["outbound"]));
    let routes = ads.next().await;
    assert_eq!((routes.type_url.as_str(), names(&routes)), (RDS, vec!["outbound"]));
    assert_eq!(routes.resources[0].version, rds.resources[0].version);
}

#[tokio::test]
async fn wildcard_listeners_leave_out_named_only_grpc_listeners_which_are_served_by_name() {
    use ResourceType::Listener;
    let h = Harness::start();
    h.publish_all(&[(Listener, "outbound", "OUT"), (Listener, "web.shop:80", "GRPC")], &["web.shop:80"]);
    let mut envoy = h.ads().await;
    envoy.subscribe(LDS, &[]).await;
    assert_eq!(names(&envoy.next().await), ["outbound"]);
    let mut client = h.ads().await;
    client.subscribe(LDS, &["web.shop:80"]).await;
    assert_eq!(names(&client.next().await), ["web.shop:80"]);
}

#[tokio::test]
async fn delta_listeners_and_routes_work_on_their_own_streams() {
    use ResourceType::{Listener, RouteConfiguration};
    let h = Harness::start();
    h.publish_all(&[(Listener, "outbound", "L"), (RouteConfiguration, "outbound", "R")], &[]);
    let mut lds = h.lds().await;
    lds.subscribe("", &[]).await;
    assert_eq!(names(&lds.next().await), ["outbound"]);
    let mut rds = h.rds().await;
    rds.subscribe("", &["outbound"]).await;
    assert_eq!(names(&rds.next().await), ["outbound"]);
}

#[tokio::test]
async fn large_updates_are_split_into_bounded_responses_that_deliver_everything_once() {
    let h = Harness::start();
    // Three of these fit under the bound; a response never carries more than the bound allows.
    let big = "x".repeat(edgexds::xds::MAX_RESPONSE_BYTES / 3 - 64);
    let clusters: Vec<(String, String)> = (0..10).map(|i| (format!("c{i}"), format!("{i}{big}"))).collect();
    let refs: Vec<(&str, &str)> = clusters.iter().map(|(n, b)| (n.as_str(), b.as_str())).collect();
    h.publish(&refs, &[]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let response = ads.next().await;
        let bytes: usize = response.resources.iter().map(|r| r.resource.as_ref().unwrap().value.len()).sum();
        assert!(bytes <= edgexds::xds::MAX_RESPONSE_BYTES, "{bytes} bytes in one response");
        assert!(response.resources.len() <= 3);
        seen.extend(names(&response).into_iter().map(str::to_owned));
        ads.ack(&response).await;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no resource twice: {seen:?}");
    ads.assert_quiet().await;
}

#[tokio::test]
async fn a_resource_larger_than_the_response_bound_still_goes_alone() {
    let h = Harness::start();
    let huge = "x".repeat(edgexds::xds::MAX_RESPONSE_BYTES * 2);
    h.publish(&[("a", &huge), ("b", &huge)], &[]);
    let mut ads = h.ads().await;
    ads.subscribe(CDS, &[]).await;
    let first = ads.next().await;
    ads.ack(&first).await;
    let second = ads.next().await;
    assert_eq!((names(&first), names(&second)), (vec!["a"], vec!["b"]));
}
