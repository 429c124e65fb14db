//! The incremental snapshot equals a full rebuild, after any sequence of source, verdict and
//! client-place changes, its place variants equal variants built afresh, and its recorded
//! diff names every change of either.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;

use super::SnapshotBuilder;
use crate::cache::{ResourceType, Snapshot, SnapshotDiff};
use crate::kubernetes::crd::HealthProbeSpec;
use crate::model::fixtures::{endpoint, probe, probe_spec, service, slice};
use crate::model::{
    AddressType, CheckVerdicts, ObjectKey, Place, PortProtocol, RouteKind, SourceState, TrafficDistribution, resolve,
};
use crate::pipeline::build_snapshot;
use crate::translate::{ActiveHealthChecks, TranslateOptions};

const NAMESPACES: [&str; 2] = ["a", "b"];
const NAMES: [&str; 3] = ["web", "api", "db"];
const PORTS: [(&str, u16); 3] = [("http", 80), ("grpc", 9090), ("dns", 53)];
const ADDRESSES: [&str; 4] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];

/// One change a source or the checkers can make.
#[derive(Clone, Debug)]
enum Change {
    Service {
        ns: usize,
        name: usize,
        ports: Vec<bool>,
        udp: bool,
        external: bool,
        preference: Option<TrafficDistribution>,
    },
    DeleteService {
        ns: usize,
        name: usize,
    },
    EndpointSlice {
        ns: usize,
        index: usize,
        service: Option<usize>,
        fqdn: bool,
        endpoints: Vec<(usize, bool, usize)>,
    },
    DeleteSlice {
        ns: usize,
        index: usize,
    },
    HealthProbe {
        ns: usize,
        index: usize,
        target: usize,
        port: Option<u16>,
        created: usize,
        valid: bool,
        interval: i64,
    },
    DeleteProbe {
        ns: usize,
        index: usize,
    },
    Verdicts(Vec<(usize, usize, usize, usize)>),
    /// The source refuses an object (`true`), or stops refusing it.
    Refuse(usize, bool),
    /// The source publishes a state built afresh (as the manifests directory does), sharing
    /// no structure with the last one.
    Rebuild,
    /// Clients are now at these places: (zone, node) of `ZONES` and `NODES`.
    Places(Vec<(usize, usize)>),
    /// An HTTPRoute (a GRPCRoute with `grpc`, which may share its name) on Service `parent`
    /// (all ports, or one), splitting over `backends`: (Service, port, weight).
    Route {
        grpc: bool,
        ns: usize,
        index: usize,
        parent: usize,
        port: Option<u16>,
        backends: Vec<(usize, u16, u32)>,
    },
    DeleteRoute {
        grpc: bool,
        ns: usize,
        index: usize,
    },
}

/// Zones and nodes clients may be at: the fixtures' endpoints are in z1 and z2, on node-z1
/// and node-z2; the rest have no endpoint.
const ZONES: [Option<&str>; 4] = [Some("z1"), Some("z2"), Some("z9"), None];
const NODES: [Option<&str>; 3] = [Some("node-z1"), Some("node-x"), None];

fn change() -> impl Strategy<Value = Change> {
    let ns = 0..NAMESPACES.len();
    let name = 0..NAMES.len();
    prop_oneof![
        4 => (
            ns.clone(),
            name.clone(),
            prop::collection::vec(any::<bool>(), 3),
            any::<bool>(),
            prop::bool::weighted(0.1),
            prop::sample::select(vec![None, Some(TrafficDistribution::PreferSameZone), Some(TrafficDistribution::PreferSameNode)])
        )
            .prop_map(|(ns, name, ports, udp, external, preference)| Change::Service { ns, name, ports, udp, external, preference }),
        1 => (ns.clone(), name.clone()).prop_map(|(ns, name)| Change::DeleteService { ns, name }),
        5 => (
            ns.clone(),
            0..4usize,
            prop::option::weighted(0.9, name.clone()),
            prop::bool::weighted(0.05),
            prop::collection::vec((0..ADDRESSES.len(), any::<bool>(), 0..2usize), 0..4)
        )
            .prop_map(|(ns, index, service, fqdn, endpoints)| Change::EndpointSlice { ns, index, service, fqdn, endpoints }),
        1 => (ns.clone(), 0..4usize).prop_map(|(ns, index)| Change::DeleteSlice { ns, index }),
        3 => (
            ns.clone(),
            0..3usize,
            name.clone(),
            prop::option::of(prop::sample::select(vec![80u16, 9090, 7])),
            0..3usize,
            prop::bool::weighted(0.85),
            prop::sample::select(vec![1000i64, 5000])
        )
            .prop_map(|(ns, index, target, port, created, valid, interval)| Change::HealthProbe {
                ns,
                index,
                target,
                port,
                created,
                valid,
                interval
            }),
        1 => (ns.clone(), 0..3usize).prop_map(|(ns, index)| Change::DeleteProbe { ns, index }),
        2 => prop::collection::vec((ns, name, 0..2usize, 0..ADDRESSES.len()), 0..3).prop_map(Change::Verdicts),
        1 => (0..3usize, any::<bool>()).prop_map(|(index, on)| Change::Refuse(index, on)),
        1 => Just(Change::Rebuild),
        2 => prop::collection::vec((0..ZONES.len(), 0..NODES.len()), 0..4).prop_map(Change::Places),
        2 => (
            any::<bool>(),
            0..NAMESPACES.len(),
            0..2usize,
            0..NAMES.len(),
            prop::option::of(prop::sample::select(vec![80u16, 9090])),
            prop::collection::vec((0..NAMES.len(), prop::sample::select(vec![80u16, 9090, 7]), 0..3u32), 0..3)
        )
            .prop_map(|(grpc, ns, index, parent, port, backends)| Change::Route { grpc, ns, index, parent, port, backends }),
        1 => (any::<bool>(), 0..NAMESPACES.len(), 0..2usize).prop_map(|(grpc, ns, index)| Change::DeleteRoute { grpc, ns, index }),
    ]
}

fn apply(change: &Change, state: &mut SourceState, verdicts: &mut Arc<CheckVerdicts>, places: &mut BTreeSet<Place>) {
    match change.clone() {
        Change::Service { ns, name, ports, udp, external, preference } => {
            let chosen: Vec<_> = PORTS[..2].iter().zip(&ports).filter(|(_, on)| **on).map(|(p, _)| *p).collect();
            let mut svc = service(NAMESPACES[ns], NAMES[name], &chosen);
            if udp && ports[2] {
                svc.ports.extend(service("", "", &PORTS[2..]).ports);
                if let Some(last) = svc.ports.last_mut() {
                    last.protocol = PortProtocol::Udp;
                }
            }
            svc.external_name = external;
            svc.traffic_distribution = preference;
            state.services.insert(svc.key.clone(), Arc::new(svc));
        }
        Change::DeleteService { ns, name } => {
            state.services.remove(&ObjectKey::new(NAMESPACES[ns], NAMES[name]));
        }
        Change::EndpointSlice { ns, index, service, fqdn, endpoints } => {
            let endpoints = endpoints
                .iter()
                .map(|(address, ready, zone)| endpoint(ADDRESSES[*address], *ready, ["z1", "z2"][*zone]))
                .collect();
            let target = service.map_or("", |s| NAMES[s]);
            let mut s =
                slice(NAMESPACES[ns], &format!("slice-{index}"), target, &[("http", 8080), ("grpc", 9090)], endpoints);
            s.service_name = service.map(|s| NAMES[s].to_owned());
            if fqdn {
                s.address_type = AddressType::Fqdn;
            }
            state.slices.insert(s.key.clone(), Arc::new(s));
        }
        Change::DeleteSlice { ns, index } => {
            state.slices.remove(&ObjectKey::new(NAMESPACES[ns], format!("slice-{index}")));
        }
        Change::HealthProbe { ns, index, target, port, created, valid, interval } => {
            let spec = HealthProbeSpec {
                interval_ms: Some(interval),
                timeout_ms: Some(if valid { 500 } else { interval * 2 }),
                ..probe_spec(NAMES[target], port.map(i64::from))
            };
            let created = format!("2024-01-0{}T00:00:00Z", created + 1);
            let p = probe(NAMESPACES[ns], &format!("probe-{index}"), &created, spec);
            state.probes.insert(p.key.clone(), Arc::new(p));
        }
        Change::DeleteProbe { ns, index } => {
            state.probes.remove(&ObjectKey::new(NAMESPACES[ns], format!("probe-{index}")));
        }
        Change::Verdicts(failing) => {
            let mut next = CheckVerdicts::default();
            for (ns, name, port, address) in failing {
                let cluster = format!("{}.{}:{}", NAMES[name], NAMESPACES[ns], PORTS[port].1);
                let target = [8080, 9090][port];
                next.insert(&cluster, format!("{}:{target}", ADDRESSES[address]).parse().unwrap());
            }
            *verdicts = Arc::new(next);
        }
        Change::Refuse(index, on) => {
            let refused = crate::model::Diagnostic {
                object: format!("HealthProbe a/refused-{index}"),
                message: format!("probes.yaml:{index}: intervalMs: must be at least 100; refused"),
            };
            if on {
                state.refused.insert(refused);
            } else {
                state.refused.remove(&refused);
            }
        }
        Change::Rebuild => {
            *state = SourceState {
                services: state.services.iter().map(|(k, v)| (k.clone(), Arc::new((**v).clone()))).collect(),
                slices: state.slices.iter().map(|(k, v)| (k.clone(), Arc::new((**v).clone()))).collect(),
                probes: state.probes.iter().map(|(k, v)| (k.clone(), Arc::new((**v).clone()))).collect(),
                nodes: state.nodes.iter().map(|(k, v)| (k.clone(), Arc::new((**v).clone()))).collect(),
                routes: state.routes.iter().map(|(k, v)| (k.clone(), Arc::new((**v).clone()))).collect(),
                refused: state.refused.iter().cloned().collect(),
            };
        }
        Change::Route { grpc, ns, index, parent, port, backends } => {
            use crate::model::{BackendRef, HttpRoute, ParentRef, PathMatch, RequestMatch, RouteRule};
            let namespace = NAMESPACES[ns];
            let route = HttpRoute {
                kind: if grpc { RouteKind::Grpc } else { RouteKind::Http },
                key: ObjectKey::new(namespace, format!("route-{index}")),
                created: Some(format!("2024-01-0{}T00:00:00Z", index + 1)),
                generation: Some(1),
                parents: vec![ParentRef { service: ObjectKey::new(namespace, NAMES[parent]), port }],
                rules: vec![RouteRule {
                    matches: vec![RequestMatch {
                        path: Some(PathMatch::Prefix(format!("/r{index}"))),
                        ..Default::default()
                    }],
                    backends: backends
                        .iter()
                        .map(|(name, port, weight)| BackendRef {
                            service: ObjectKey::new(namespace, NAMES[*name]),
                            port: Some(*port),
                            weight: *weight,
                        })
                        .collect(),
                    ..Default::default()
                }],
                refused: None,
            };
            state.routes.insert(route.id(), Arc::new(route));
        }
        Change::DeleteRoute { grpc, ns, index } => {
            let kind = if grpc { RouteKind::Grpc } else { RouteKind::Http };
            state.routes.remove(&(kind, ObjectKey::new(NAMESPACES[ns], format!("route-{index}"))));
        }
        Change::Places(at) => {
            *places = at
                .into_iter()
                .map(|(zone, node)| Place { zone: ZONES[zone].map(Arc::from), node: NODES[node].map(Arc::from) })
                .collect();
        }
    }
}

/// The variants built afresh from `state`'s model for clients at `places`.
fn variants_afresh(
    state: &SourceState,
    base: &Snapshot,
    options: &TranslateOptions,
    verdicts: &CheckVerdicts,
    places: &BTreeSet<Place>,
) -> crate::cache::Variants {
    let model = resolve(state);
    let mut variants = super::super::variants::PlaceVariants::default();
    let every: BTreeSet<ObjectKey> = model.services.keys().cloned().collect();
    variants.update(&model.services, &every, places, base, (options, verdicts), &mut SnapshotDiff::default());
    variants.published().clone()
}

/// Every name that differs between `before` and `after` is in `diff`.
fn covers(diff: &SnapshotDiff, before: &Snapshot, after: &Snapshot) -> Result<(), TestCaseError> {
    let needed = SnapshotDiff::between(Some(before), after);
    for ty in ResourceType::ALL {
        for name in needed.changed[ty.index()].iter().chain(&needed.removed[ty.index()]) {
            let named = diff.changed[ty.index()].contains(name) || diff.removed[ty.index()].contains(name);
            prop_assert!(named, "{ty:?} {name} changed, but the diff does not say so");
        }
    }
    Ok(())
}

fn options(hds: bool) -> TranslateOptions {
    let active_health_checks = if hds { ActiveHealthChecks::Hds } else { ActiveHealthChecks::Cds };
    TranslateOptions { active_health_checks, send_unhealthy_endpoints: hds, ..Default::default() }
}

fn assert_same(built: &Snapshot, rebuilt: &Snapshot) {
    for ty in ResourceType::ALL {
        let names = |s: &Snapshot| s.resources(ty).keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(built), names(rebuilt), "{ty:?} names");
        for (name, resource) in built.resources(ty) {
            assert_eq!(Some(resource), rebuilt.resources(ty).get(name), "{ty:?} {name}");
        }
        assert_eq!(built.version(ty), rebuilt.version(ty), "{ty:?} version");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::proptest_cases(256), ..ProptestConfig::default() })]

    #[test]
    fn incremental_snapshot_model_and_diff_equal_a_full_rebuild_after_any_changes(
        changes in prop::collection::vec(change(), 1..40),
        hds in any::<bool>(),
    ) {
        let options = options(hds);
        let mut builder = SnapshotBuilder::new(options.clone());
        let mut state = SourceState::default();
        let mut verdicts = Arc::new(CheckVerdicts::default());
        let mut places = BTreeSet::new();
        for change in &changes {
            let before = builder.snapshot().clone();
            apply(change, &mut state, &mut verdicts, &mut places);
            let update = builder.update(&state, &verdicts, &places);
            let (rebuilt, model) = build_snapshot(&state, &options, None, &verdicts);
            assert_same(builder.snapshot(), &rebuilt);
            prop_assert_eq!(builder.model(), &model);
            prop_assert_eq!(builder.model(), &resolve(&state));
            let afresh = variants_afresh(&state, &rebuilt, &options, &verdicts, &places);
            let variants = builder.snapshot().variants();
            prop_assert_eq!((&variants.zones, &variants.nodes), (&afresh.zones, &afresh.nodes));
            prop_assert_eq!(&variants.shared, &afresh.shared);
            prop_assert_eq!(variants.by_key.keys().collect::<Vec<_>>(), afresh.by_key.keys().collect::<Vec<_>>());
            for (key, variant) in &variants.by_key {
                assert_same(variant, &afresh.by_key[key]);
                if let Some(was) = before.variants().by_key.get(key) {
                    covers(&update.diff, was, variant)?;
                }
            }
            if variants.by_key.is_empty() && before.variants().by_key.is_empty() {
                // Without variants the diff is exactly the base's.
                prop_assert_eq!(&update.diff, &SnapshotDiff::between(Some(&before), builder.snapshot()));
            } else {
                covers(&update.diff, &before, builder.snapshot())?;
            }
            let endpoints: usize = model.ports().map(|p| p.endpoints.len()).sum();
            prop_assert_eq!(builder.endpoints(), endpoints);
        }
    }
}

#[test]
fn the_outbound_route_assembled_from_encoded_virtual_hosts_is_byte_for_byte_the_encoded_message() {
    use prost::Message;
    let mut state = SourceState::default();
    for (ns, name) in [("a", "web"), ("b", "web"), ("a", "api")] {
        let svc = service(ns, name, &[("http", 80), ("grpc", 9090)]);
        state.services.insert(svc.key.clone(), Arc::new(svc));
    }
    let options = TranslateOptions::default();
    let mut builder = SnapshotBuilder::new(options.clone());
    builder.update(&state, &Arc::default(), &BTreeSet::new());
    let (rebuilt, _) = build_snapshot(&state, &options, None, &Default::default());
    let whole = &rebuilt.resources(ResourceType::RouteConfiguration)[crate::translate::OUTBOUND].body;
    let routes = builder.snapshot().resources(ResourceType::RouteConfiguration);
    assert_eq!(&routes[crate::translate::OUTBOUND].body, whole);
    // The reference really is one prost encode of the whole message.
    let decoded = envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(whole.as_slice()).unwrap();
    assert_eq!(&decoded.encode_to_vec(), whole);
}

#[test]
fn an_endpoint_change_replaces_only_its_load_assignment_and_shares_everything_else() {
    let mut state = SourceState::default();
    for name in NAMES {
        let svc = service("a", name, &[("http", 80)]);
        state.services.insert(svc.key.clone(), Arc::new(svc));
        let s = slice("a", name, name, &[("http", 8080)], vec![endpoint("10.0.0.1", true, "z1")]);
        state.slices.insert(s.key.clone(), Arc::new(s));
    }
    let mut builder = SnapshotBuilder::new(TranslateOptions::default());
    builder.update(&state, &Arc::default(), &BTreeSet::new());
    let before = builder.snapshot().clone();
    let moved = slice("a", "web", "web", &[("http", 8080)], vec![endpoint("10.0.0.9", true, "z1")]);
    state.slices.insert(moved.key.clone(), Arc::new(moved));
    let update = builder.update(&state, &Arc::default(), &BTreeSet::new());
    let mut expected = SnapshotDiff::default();
    expected.record(ResourceType::ClusterLoadAssignment, "web.a:80", false);
    assert_eq!(update.diff, expected);
    assert!(!update.model_changed || builder.model() != &crate::model::Model::default());
    let after = builder.snapshot();
    for ty in ResourceType::ALL {
        for (name, resource) in before.resources(ty) {
            if &**name != "web.a:80" || ty != ResourceType::ClusterLoadAssignment {
                assert!(Arc::ptr_eq(resource, &after.resources(ty)[name]), "{ty:?} {name} is shared");
            }
        }
    }
}
