use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{Address, Locality, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::Endpoint;
use envoy_types::pb::envoy::service::health::v3::{ClusterEndpointsHealth, LocalityEndpointsHealth};

use super::*;
use crate::kubernetes::crd::{EndpointMatch, HealthProbeSpec, HttpProbe, ProbeOverride};
use crate::model::fixtures::{endpoint, probe, probe_spec, service, slice, state};
use crate::model::resolve;

const REPORT: Duration = Duration::from_millis(500);

/// web.shop:80 with two pods probed every 2s, the second (the canary) every 500ms.
fn model() -> Model {
    let spec = HealthProbeSpec {
        http: Some(HttpProbe { path: "/healthz".into(), host: None }),
        interval_ms: Some(2000),
        timeout_ms: Some(100),
        overrides: vec![ProbeOverride {
            matches: EndpointMatch { address: Some("10.0.0.2/32".into()), ..Default::default() },
            interval_ms: Some(500),
            ..Default::default()
        }],
        ..probe_spec("web", None)
    };
    let pods = vec![endpoint("10.0.0.1", true, "z1"), endpoint("10.0.0.2", true, "z1")];
    resolve(&state(
        vec![service("shop", "web", &[("", 80)])],
        vec![slice("shop", "web-1", "web", &[("", 8080)], pods)],
        vec![probe("shop", "web", "2026-01-01T00:00:00Z", spec)],
    ))
}

fn hub(per_endpoint: usize) -> Arc<HdsHub> {
    HdsHub::new(
        HdsConfig { checkers_per_endpoint: per_endpoint, report_interval: REPORT, ..Default::default() },
        Default::default(),
    )
}

fn node(id: &str) -> Node {
    Node { id: id.into(), locality: Some(Locality { zone: "z1".into(), ..Default::default() }), ..Default::default() }
}

/// A report as Envoy sends it: every endpoint of the checker's schedule with one health status.
fn report(schedule: &HealthCheckSpecifier, unhealthy: &[&str]) -> EndpointHealthResponse {
    let cluster_endpoints_health = schedule
        .cluster_health_checks
        .iter()
        .map(|c| ClusterEndpointsHealth {
            cluster_name: c.cluster_name.clone(),
            locality_endpoints_health: c
                .locality_endpoints
                .iter()
                .map(|l| LocalityEndpointsHealth {
                    locality: l.locality.clone(),
                    endpoints_health: l
                        .endpoints
                        .iter()
                        .map(|e| {
                            let Some(AddressKind::SocketAddress(SocketAddress { address, .. })) =
                                e.address.as_ref().and_then(|a| a.address.as_ref())
                            else {
                                panic!("no address")
                            };
                            let status = if unhealthy.contains(&address.as_str()) {
                                HealthStatus::Unhealthy
                            } else {
                                HealthStatus::Healthy
                            };
                            ReportedEndpoint {
                                endpoint: Some(Endpoint {
                                    address: e.address.clone().map(|a| Address { ..a }),
                                    ..Default::default()
                                }),
                                health_status: status as i32,
                                ..Default::default()
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    EndpointHealthResponse { cluster_endpoints_health, ..Default::default() }
}

fn schedule(rx: &Schedule) -> Arc<HealthCheckSpecifier> {
    rx.borrow().clone().expect("a schedule was sent")
}

/// How many endpoints a checker's current schedule holds.
fn scheduled(rx: &Schedule) -> usize {
    schedule(rx).cluster_health_checks.iter().flat_map(|c| &c.locality_endpoints).map(|l| l.endpoints.len()).sum()
}

fn failing(hub: &HdsHub) -> usize {
    hub.verdicts().borrow().len()
}

#[test]
fn a_checker_gets_one_group_per_probe_policy_with_its_interval() {
    let (hub, now) = (hub(2), Instant::now());
    let (_, rx) = hub.connect(&node("checker-1"), true, true, now);
    hub.set_model(&model(), now);
    let spec = schedule(&rx);
    let intervals: Vec<_> =
        spec.cluster_health_checks.iter().map(|c| c.health_checks[0].interval.unwrap().nanos / 1_000_000).collect();
    assert_eq!(spec.cluster_health_checks.len(), 2);
    assert!(intervals.contains(&500), "canary group at 500ms: {intervals:?}");
}

#[test]
fn reports_during_warm_up_are_ignored_then_a_majority_decides() {
    let (hub, start) = (hub(2), Instant::now());
    hub.set_model(&model(), start);
    let (a, rx_a) = hub.connect(&node("a"), true, true, start);
    let (b, rx_b) = hub.connect(&node("b"), true, true, start);
    // Envoy calls brand-new hosts unhealthy until their first check ends.
    hub.record(a, &report(&schedule(&rx_a), &["10.0.0.1", "10.0.0.2"]), start + Duration::from_millis(50));
    assert_eq!(failing(&hub), 0);
    let later = start + Duration::from_secs(1);
    hub.record(a, &report(&schedule(&rx_a), &["10.0.0.1"]), later);
    assert_eq!(failing(&hub), 1, "one fresh report from one checker is a majority");
    hub.record(b, &report(&schedule(&rx_b), &[]), later);
    assert_eq!(failing(&hub), 0, "one of two is not a majority");
    hub.record(b, &report(&schedule(&rx_b), &["10.0.0.1"]), later);
    assert!(hub.verdicts().borrow().is_failing("web.shop:80", "10.0.0.1:8080".parse().unwrap()));
}

#[test]
fn a_vanished_checker_counts_until_stale_then_kubernetes_decides() {
    let (hub, start) = (hub(1), Instant::now());
    hub.set_model(&model(), start);
    let (a, rx_a) = hub.connect(&node("a"), true, true, start);
    let at = start + Duration::from_secs(1);
    hub.record(a, &report(&schedule(&rx_a), &["10.0.0.1"]), at);
    assert_eq!(failing(&hub), 1);
    hub.disconnect(a, at);
    assert_eq!(failing(&hub), 1, "nothing flips the moment a checker leaves");
    hub.tick(at + Duration::from_secs(6) + Duration::from_millis(1));
    assert_eq!(failing(&hub), 0, "2s interval x 3 later the report is stale");
}

#[test]
fn two_checkers_split_the_endpoints_and_the_survivor_takes_all() {
    let (hub, now) = (hub(1), Instant::now());
    hub.set_model(&model(), now);
    let (a, rx_a) = hub.connect(&node("a"), true, true, now);
    let (_, rx_b) = hub.connect(&node("b"), true, true, now);
    assert_eq!((scheduled(&rx_a), scheduled(&rx_b)), (1, 1));
    hub.disconnect(a, now);
    assert_eq!(scheduled(&rx_b), 2);
    assert_eq!(hub.view(now).endpoints.iter().filter(|e| e.checkers.len() == 1).count(), 2);
}

#[test]
fn reports_for_endpoints_not_assigned_to_the_checker_are_ignored() {
    let (hub, start) = (hub(1), Instant::now());
    hub.set_model(&model(), start);
    let (a, rx_a) = hub.connect(&node("a"), true, true, start);
    let full = schedule(&rx_a);
    let (_, _rx_b) = hub.connect(&node("b"), true, true, start);
    hub.record(a, &report(&full, &["10.0.0.1", "10.0.0.2"]), start + Duration::from_secs(1));
    assert_eq!(failing(&hub), 1, "only the endpoint a still holds counts");
    let ignored =
        hub.metrics.reports_ignored.get_or_create(&crate::hds::metrics::IgnoredLabel { reason: "unassigned" }).get();
    assert_eq!(ignored, 1, "and the other is counted as ignored");
}

#[test]
fn a_checker_that_stops_reporting_loses_its_endpoints_until_it_reports_again() {
    let (hub, start) = (hub(1), Instant::now());
    hub.set_model(&model(), start);
    let (a, rx_a) = hub.connect(&node("a"), true, true, start);
    let (b, rx_b) = hub.connect(&node("b"), true, true, start);
    assert_eq!((scheduled(&rx_a), scheduled(&rx_b)), (1, 1));
    let later = start + REPORT * 2;
    hub.record(b, &report(&schedule(&rx_b), &[]), later);
    hub.tick(start + REPORT * 4);
    assert_eq!((scheduled(&rx_a), scheduled(&rx_b)), (0, 2), "a hung checker's endpoints move to one that reports");
    assert!(hub.view(start + REPORT * 4).checkers.iter().any(|c| c.silent));
    hub.record(a, &report(&schedule(&rx_a), &[]), start + REPORT * 5);
    assert_eq!((scheduled(&rx_a), scheduled(&rx_b)), (1, 1), "reporting again earns its share back");
}

#[test]
fn checkers_never_take_out_more_than_the_limit_beyond_it_the_cluster_fails_open() {
    let (hub, start) = (hub(1), Instant::now());
    hub.set_model(&model(), start);
    let (a, rx_a) = hub.connect(&node("a"), true, true, start);
    let later = start + Duration::from_secs(1);
    // Every ready endpoint of web.shop:80 judged unhealthy: more than 50 %.
    hub.record(a, &report(&schedule(&rx_a), &["10.0.0.1", "10.0.0.2"]), later);
    assert_eq!(failing(&hub), 0, "fail open: Kubernetes readiness decides");
    assert_eq!(hub.metrics.failed_open_clusters.get(), 1);
    assert_eq!(hub.view(later).failed_open_clusters, ["web.shop:80"]);
    // Half is within the limit: the verdict counts again.
    hub.record(a, &report(&schedule(&rx_a), &["10.0.0.1"]), later);
    assert_eq!(failing(&hub), 1);
    assert_eq!(hub.metrics.failed_open_clusters.get(), 0);
    assert!(hub.view(later).failed_open_clusters.is_empty());
}
