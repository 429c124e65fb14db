//! Per-place load assignments: the tiers `trafficDistribution` asks for, as priorities.

use std::sync::Arc;

use prost::Message;

use super::{TranslateOptions, load_assignment, load_assignment_at};
use crate::model::fixtures::{endpoint, service, slice, state};
use crate::model::{CheckVerdicts, Place, ResolvedPort, TrafficDistribution, resolve};

const ZONE: TrafficDistribution = TrafficDistribution::PreferSameZone;
const NODE: TrafficDistribution = TrafficDistribution::PreferSameNode;

/// web's port, with endpoints .1 (z1, ready), .2 (z1, not ready), .3 (z2) and .4 (z3).
fn port(hints: bool) -> ResolvedPort {
    let mut endpoints = vec![
        endpoint("10.0.0.1", true, "z1"),
        endpoint("10.0.0.2", false, "z1"),
        endpoint("10.0.0.3", true, "z2"),
        endpoint("10.0.0.4", true, "z3"),
    ];
    if hints {
        // The controller's proportional hints: z3's endpoint serves z1 too.
        for e in &mut endpoints {
            e.hints.for_zones = vec![e.zone.clone().unwrap()];
        }
        endpoints[3].hints.for_zones = vec!["z1".into()];
    }
    let input = state(
        vec![service("shop", "web", &[("http", 80)])],
        vec![slice("shop", "web", "web", &[("http", 8080)], endpoints)],
        vec![],
    );
    resolve(&input).ports().next().unwrap().clone()
}

fn at(zone: &str, node: Option<&str>) -> Place {
    Place { zone: Some(Arc::from(zone)), node: node.map(Arc::from) }
}

/// (priority, address, health status) of each endpoint, in order.
fn tiers(port: &ResolvedPort, preference: TrafficDistribution, place: &Place) -> Vec<(u32, String, i32)> {
    let assignment =
        load_assignment_at(port, &TranslateOptions::default(), &CheckVerdicts::default(), preference, place)
            .expect("a variant");
    assignment
        .endpoints
        .iter()
        .flat_map(|l| {
            l.lb_endpoints.iter().map(move |e| {
                let address = e.endpoint.as_ref().unwrap().address.as_ref().unwrap().socket_address.as_ref().unwrap();
                (l.priority, address.address.clone(), e.health_status)
            })
        })
        .collect()
}

#[test]
fn prefer_same_zone_puts_the_clients_zone_first_and_counts_its_unready_endpoints() {
    let tiers = tiers(&port(false), ZONE, &at("z1", None));
    let (healthy, unhealthy) = (1, 2);
    assert_eq!(
        tiers,
        vec![
            (0, "10.0.0.1".into(), healthy),
            (0, "10.0.0.2".into(), unhealthy),
            (1, "10.0.0.3".into(), healthy),
            (1, "10.0.0.4".into(), healthy)
        ]
    );
}

#[test]
fn prefer_same_node_puts_the_node_then_the_zone_then_the_rest_with_no_gap() {
    // The fixtures put each endpoint on node-<zone>.
    let tiers = tiers(&port(false), NODE, &at("z2", Some("node-z1")));
    let priorities: Vec<(u32, &str)> = tiers.iter().map(|(p, a, _)| (*p, a.as_str())).collect();
    assert_eq!(priorities, vec![(0, "10.0.0.1"), (0, "10.0.0.2"), (1, "10.0.0.3"), (2, "10.0.0.4")]);
    let no_node_endpoints = self::tiers(&port(false), NODE, &at("z2", Some("elsewhere")));
    assert!(no_node_endpoints.iter().all(|(p, _, _)| *p <= 1), "priorities stay contiguous: {no_node_endpoints:?}");
}

#[test]
fn hints_when_every_endpoint_has_them_decide_what_is_the_clients_zone() {
    let tiers = tiers(&port(true), ZONE, &at("z1", None));
    let first: Vec<&str> = tiers.iter().filter(|(p, _, _)| *p == 0).map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(first, vec!["10.0.0.1", "10.0.0.2", "10.0.0.4"]);
}

#[test]
fn a_place_that_changes_nothing_gets_no_variant() {
    let options = TranslateOptions::default();
    let verdicts = CheckVerdicts::default();
    let port = port(false);
    assert!(load_assignment_at(&port, &options, &verdicts, ZONE, &at("z9", None)).is_none(), "no endpoint there");
    assert!(load_assignment_at(&port, &options, &verdicts, ZONE, &Place::default()).is_none(), "nowhere");
}

#[test]
fn without_a_preference_the_shared_assignment_keeps_its_bytes() {
    let port = port(false);
    let options = TranslateOptions::default();
    let plain = load_assignment(&port, &options, &CheckVerdicts::default(), None);
    assert!(plain.endpoints.iter().all(|l| l.priority == 0));
    assert!(
        !plain.endpoints.iter().flat_map(|l| &l.lb_endpoints).any(|e| e
            .endpoint
            .as_ref()
            .unwrap()
            .address
            .as_ref()
            .unwrap()
            .socket_address
            .as_ref()
            .unwrap()
            .address
            == "10.0.0.2"),
        "not-ready endpoints stay out"
    );
    // Priority 0 is proto3's default: not on the wire, so these bytes are what they were.
    let decoded =
        envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(plain.encode_to_vec().as_slice())
            .unwrap();
    assert_eq!(decoded.encode_to_vec(), plain.encode_to_vec());
}

#[test]
fn every_variant_carries_the_probe_metadata_and_the_checkers_verdicts() {
    use crate::model::fixtures::{probe, probe_spec};
    let endpoints = vec![endpoint("10.0.0.1", true, "z1"), endpoint("10.0.0.3", true, "z2")];
    let input = state(
        vec![service("shop", "web", &[("http", 80)])],
        vec![slice("shop", "web", "web", &[("http", 8080)], endpoints)],
        vec![probe("shop", "web", "2024-01-01T00:00:00Z", probe_spec("web", None))],
    );
    let port = resolve(&input).ports().next().unwrap().clone();
    let mut verdicts = CheckVerdicts::default();
    verdicts.insert("web.shop:80", "10.0.0.1:8080".parse().unwrap());
    let variant =
        load_assignment_at(&port, &TranslateOptions::default(), &verdicts, ZONE, &at("z1", None)).expect("a variant");
    let local = &variant.endpoints.iter().find(|l| l.priority == 0).unwrap().lb_endpoints[0];
    assert_eq!(local.health_status, envoy_types::pb::envoy::config::core::v3::HealthStatus::Unhealthy as i32);
    for endpoint in variant.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
        assert!(!endpoint.metadata.is_empty(), "probe metadata in every tier");
    }
}
