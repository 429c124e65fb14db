//! The incremental xDS rules again, on listeners (asked for by wildcard, as clusters are)
//! and routes (asked for by name, as endpoints are), through a real tonic client. The code
//! is the same for every type; these tests keep it that way.

use std::collections::HashMap;

use edgexds::cache::ResourceType::{Listener, RouteConfiguration};
use edgexds_tests::xds::*;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

fn listeners(h: &Harness, items: &[(&str, &str)]) {
    let all: Vec<_> = items.iter().map(|(n, b)| (Listener, *n, *b)).collect();
    h.publish_all(&all, &[]);
}

fn routes(h: &Harness, items: &[(&str, &str)]) {
    let all: Vec<_> = items.iter().map(|(n, b)| (RouteConfiguration, *n, *b)).collect();
    h.publish_all(&all, &[]);
}

#[tokio::test]
async fn listeners_legacy_wildcard_learns_new_ones_and_is_told_of_deleted_ones() {
    let h = Harness::start();
    listeners(&h, &[("a", "1"), ("b", "2")]);
    let mut ads = h.ads().await;
    ads.subscribe(LDS, &[]).await;
    let first = ads.next().await;
    assert_eq!(names(&first), ["a", "b"]);
    ads.ack(&first).await;
    listeners(&h, &[("a", "1"), ("c", "3")]);
    let second = ads.next().await;
    assert_eq!((names(&second), removed(&second)), (vec!["c"], vec!["b"]));
}

#[tokio::test]
async fn listeners_nack_keeps_the_stream_and_the_rejected_version_is_not_resent() {
    let h = Harness::start();
    listeners(&h, &[("a", "bad")]);
    let mut ads = h.ads().await;
    ads.subscribe(LDS, &[]).await;
    let rejected = ads.next().await;
    ads.nack(&rejected, "listener a: invalid").await;
    ads.assert_quiet().await;
    listeners(&h, &[("a", "good")]);
    assert_eq!(names(&ads.next().await), ["a"]);
}

#[tokio::test]
async fn listeners_initial_resource_versions_skip_unchanged_and_remove_vanished() {
    let h = Harness::start();
    listeners(&h, &[("a", "1"), ("b", "2")]);
    let initial = HashMap::from([
        ("a".to_string(), h.version(Listener, "a")),
        ("b".to_string(), "outdated".to_string()),
        ("gone".to_string(), "whatever".to_string()),
    ]);
    let mut ads = h.ads().await;
    ads.send(DeltaDiscoveryRequest { initial_resource_versions: initial, ..request(LDS, &[], &[]) }).await;
    let response = ads.next().await;
    assert_eq!((names(&response), removed(&response)), (vec!["b"], vec!["gone"]));
}

#[tokio::test]
async fn routes_missing_name_is_removed_then_sent_when_it_appears() {
    let h = Harness::start();
    routes(&h, &[]);
    let mut ads = h.ads().await;
    ads.subscribe(RDS, &["ghost"]).await;
    let absent = ads.next().await;
    assert_eq!(removed(&absent), ["ghost"]);
    ads.ack(&absent).await;
    routes(&h, &[("ghost", "G")]);
    assert_eq!(names(&ads.next().await), ["ghost"]);
}

#[tokio::test]
async fn routes_unsubscribe_needs_no_response_and_resubscribe_is_answered_even_if_unchanged() {
    let h = Harness::start();
    routes(&h, &[("x", "1"), ("y", "2")]);
    let mut ads = h.ads().await;
    ads.subscribe(RDS, &["x", "y"]).await;
    let first = ads.next().await;
    ads.ack(&first).await;
    ads.send(request(RDS, &[], &["y"])).await;
    ads.assert_quiet().await;
    ads.send(request(RDS, &["y"], &[])).await;
    let again = ads.next().await;
    assert_eq!(names(&again), ["y"]);
}

#[tokio::test]
async fn routes_stale_nonce_still_changes_the_subscription() {
    let h = Harness::start();
    routes(&h, &[("x", "1"), ("y", "2")]);
    let mut ads = h.ads().await;
    ads.subscribe(RDS, &["x"]).await;
    let first = ads.next().await;
    routes(&h, &[("x", "1b"), ("y", "2")]);
    let _second = ads.next().await;
    ads.send(DeltaDiscoveryRequest { response_nonce: first.nonce.clone(), ..request(RDS, &["y"], &[]) }).await;
    assert_eq!(names(&ads.next().await), ["y"]);
}

#[tokio::test]
async fn routes_reconnect_with_everything_current_resends_nothing() {
    let h = Harness::start();
    routes(&h, &[("x", "1")]);
    let mut ads = h.ads().await;
    let initial = HashMap::from([("x".to_string(), h.version(RouteConfiguration, "x"))]);
    ads.send(DeltaDiscoveryRequest { initial_resource_versions: initial, ..request(RDS, &["x"], &[]) }).await;
    let response = ads.next().await;
    assert!(response.resources.is_empty() && response.removed_resources.is_empty());
}
