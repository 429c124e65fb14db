//! Translate + encode ClusterLoadAssignments over a grid of services × endpoints,
//! with and without probe metadata; one change through the incremental pipeline at up to
//! 50,000 Services; a route change against an endpoint change; and version hashing +
//! snapshot diff at 10,000 endpoints.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use edgexds::cache::{ResourceType, Snapshot, SnapshotDiff};
use edgexds::kubernetes::crd::{HealthProbeSpec, ProbeOverride, TargetRef};
use edgexds::model::{
    AddressType, BackendRef, CheckVerdicts, EndpointConditions, EndpointSlice, HealthProbe, HttpRoute, ObjectKey,
    ParentRef, PortProtocol, RouteKind, RouteRule, Service, ServicePort, SliceEndpoint, SlicePort, SourceState,
    TargetPort, resolve,
};
use edgexds::pipeline::{SnapshotBuilder, build_snapshot};
use edgexds::translate::{TranslateOptions, load_assignment};
use prost::Message;

const GRID: [(u32, u32); 4] = [(1, 1000), (10, 100), (100, 10), (1000, 1)];

fn state(services: u32, endpoints: u32, probes: bool) -> SourceState {
    let mut state = SourceState::default();
    for s in 0..services {
        let key = ObjectKey::new(format!("ns-{}", s % 10), format!("svc-{s}"));
        let port = ServicePort {
            name: "http".into(),
            port: 80,
            protocol: PortProtocol::Tcp,
            target_port: TargetPort::Number(8080),
            app_protocol: Default::default(),
        };
        state.services.insert(
            key.clone(),
            Arc::new(Service { key: key.clone(), ports: vec![port], external_name: false, traffic_distribution: None }),
        );
        let slice = EndpointSlice {
            key: ObjectKey::new(&key.namespace, format!("{}-1", key.name)),
            service_name: Some(key.name.to_string()),
            address_type: AddressType::Ipv4,
            ports: vec![SlicePort { name: "http".into(), port: 8080, protocol: PortProtocol::Tcp }],
            endpoints: (0..endpoints)
                .map(|e| SliceEndpoint {
                    address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + s * 1000 + e)),
                    conditions: EndpointConditions { ready: Some(true), ..Default::default() },
                    zone: Some(format!("zone-{}", e % 3)),
                    node_name: Some(format!("node-{}", e % 5)),
                    pod_name: Some(format!("{}-{e}", key.name)),
                    hostname: None,
                    hints: Default::default(),
                })
                .collect(),
        };
        state.slices.insert(slice.key.clone(), Arc::new(slice));
        if probes {
            let spec = HealthProbeSpec {
                target_ref: TargetRef { kind: "Service".into(), name: key.name.to_string() },
                overrides: vec![ProbeOverride {
                    matches: edgexds::kubernetes::crd::EndpointMatch {
                        node_name: Some("node-0".into()),
                        ..Default::default()
                    },
                    interval_ms: Some(500),
                    timeout_ms: Some(200),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let valid = edgexds::kubernetes::probe_spec::validate(&key, &spec).map(Arc::new);
            let probe = HealthProbe { key: key.clone(), created: None, generation: Some(1), valid };
            state.probes.insert(key, Arc::new(probe));
        }
    }
    state
}

fn eds_translate_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("eds_translate_encode");
    for probes in [false, true] {
        for (services, endpoints) in GRID {
            let model = resolve(&state(services, endpoints, probes));
            let options = TranslateOptions::default();
            let verdicts = CheckVerdicts::default();
            let bytes: usize =
                model.ports().map(|p| load_assignment(p, &options, &verdicts, None).encode_to_vec().len()).sum();
            let total = u64::from(services * endpoints);
            eprintln!(
                "eds {services}x{endpoints} metadata={probes}: {bytes} bytes, {:.1} bytes/endpoint",
                bytes as f64 / total as f64
            );
            group.throughput(Throughput::Elements(total));
            let id = BenchmarkId::new(
                if probes { "with_metadata" } else { "no_metadata" },
                format!("{services}x{endpoints}"),
            );
            group.bench_with_input(id, &model, |b, model| {
                b.iter(|| {
                    black_box(model)
                        .ports()
                        .map(|p| load_assignment(p, &options, &verdicts, None).encode_to_vec().len())
                        .sum::<usize>()
                })
            });
        }
    }
    group.finish();
}

fn full_pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve_translate_encode_snapshot");
    group.throughput(Throughput::Elements(10_000));
    for (services, endpoints) in [(1000, 10), (100, 100)] {
        let input = state(services, endpoints, true);
        group.bench_function(format!("{services}x{endpoints}_with_probes"), |b| {
            b.iter(|| build_snapshot(black_box(&input), &TranslateOptions::default(), None, &CheckVerdicts::default()))
        });
        // The resolve step alone, to see what the rest of the pipeline costs.
        group.bench_function(format!("{services}x{endpoints}_resolve_only"), |b| b.iter(|| resolve(black_box(&input))));
    }
    group.finish();
}

/// One endpoint's HDS verdict flips at 1,000 Services x 10 endpoints. "full_rebuild" is
/// what a verdict change cost before verdicts became an overlay (resolve, translate and
/// encode everything); "incremental" is what it costs now: the flipped cluster's load
/// assignment, translated again.
fn verdict_flip(c: &mut Criterion) {
    let mut group = c.benchmark_group("verdict_flip_1000x10");
    let input = state(1000, 10, true);
    let options = TranslateOptions::default();
    let healthy = Arc::new(CheckVerdicts::default());
    let mut failing = CheckVerdicts::default();
    failing
        .insert("svc-500.ns-0:80", std::net::SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 500_000)), 8080));
    let failing = Arc::new(failing);
    let (previous, _) = build_snapshot(&input, &options, None, &healthy);
    group.bench_function("full_rebuild", |b| {
        b.iter(|| build_snapshot(black_box(&input), &options, Some(&previous), &failing))
    });
    let mut builder = SnapshotBuilder::new(options.clone());
    builder.update(&input, &healthy, &Default::default());
    let mut flip = false;
    group.bench_function("incremental", |b| {
        b.iter(|| {
            flip = !flip;
            builder.update(black_box(&input), if flip { &failing } else { &healthy }, &Default::default()).diff
        })
    });
    group.finish();
}

/// One EndpointSlice change (one endpoint's address moves) at 1,000, 10,000 and 50,000
/// Services x 10 endpoints, probes on: the source's edit of its state, then resolve,
/// translate, encode and diff. Flat across sizes is the point; `full_rebuild` at 1,000 is
/// what every change cost before the pipeline was incremental.
fn one_slice_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_slice_change");
    group.sample_size(30);
    let options = TranslateOptions::default();
    let verdicts = Arc::new(CheckVerdicts::default());
    for services in [1000u32, 10_000, 50_000] {
        let mut input = state(services, 10, true);
        let key = ObjectKey::new("ns-3", "svc-13-1");
        let original = input.slices[&key].clone();
        let mut moved = EndpointSlice::clone(&original);
        moved.endpoints[0].address = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
        let versions = [original, Arc::new(moved)];
        let mut builder = SnapshotBuilder::new(options.clone());
        builder.update(&input, &verdicts, &Default::default());
        let mut turn = 0;
        group.bench_function(BenchmarkId::new("incremental", services), |b| {
            b.iter(|| {
                turn += 1;
                input.slices.insert(key.clone(), versions[turn % 2].clone());
                let update = builder.update(black_box(&input), &verdicts, &Default::default());
                assert_eq!(update.diff.count(ResourceType::ClusterLoadAssignment), (1, 0));
                update.diff
            })
        });
        if services == 1000 {
            group.bench_function(BenchmarkId::new("full_rebuild", services), |b| {
                b.iter(|| build_snapshot(black_box(&input), &options, None, &verdicts))
            });
        }
    }
    group.finish();
}

/// An HTTPRoute on one Service, its canary weight moving from 10 to 20, against one
/// endpoint's move, at 1,000 and 10,000 Services x 10 endpoints: the pipeline's cost of each,
/// and the bytes each sidecar is sent (printed: the changed resources' encoded sizes).
fn route_vs_endpoint_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_vs_endpoint_change");
    group.sample_size(30);
    let options = TranslateOptions::default();
    let verdicts = Arc::new(CheckVerdicts::default());
    for services in [1000u32, 10_000] {
        let mut input = state(services, 10, false);
        let routes = [10, 20].map(|weight| Arc::new(canary_route(weight)));
        let id = routes[0].id();
        input.routes.insert(id.clone(), routes[0].clone());
        let slice_key = ObjectKey::new("ns-3", "svc-13-1");
        let original = input.slices[&slice_key].clone();
        let mut moved = EndpointSlice::clone(&original);
        moved.endpoints[0].address = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
        let slices = [original, Arc::new(moved)];
        let mut builder = SnapshotBuilder::new(options.clone());
        builder.update(&input, &verdicts, &Default::default());
        let sent =
            |builder: &SnapshotBuilder, ty: ResourceType, name: &str| builder.snapshot().resources(ty)[name].body.len();
        let mut turn = 0;
        group.bench_function(BenchmarkId::new("endpoint", services), |b| {
            b.iter(|| {
                turn += 1;
                input.slices.insert(slice_key.clone(), slices[turn % 2].clone());
                builder.update(black_box(&input), &verdicts, &Default::default()).diff
            })
        });
        let endpoint_bytes = sent(&builder, ResourceType::ClusterLoadAssignment, "svc-13.ns-3:80");
        let mut route_turn = 0;
        group.bench_function(BenchmarkId::new("route", services), |b| {
            b.iter(|| {
                route_turn += 1;
                input.routes.insert(id.clone(), routes[route_turn % 2].clone());
                let update = builder.update(black_box(&input), &verdicts, &Default::default());
                // The outbound route and the Service port's per-name routes for proxyless clients.
                assert_eq!(update.diff.count(ResourceType::RouteConfiguration), (3, 0));
                for ty in [ResourceType::Listener, ResourceType::Cluster, ResourceType::ClusterLoadAssignment] {
                    assert_eq!(update.diff.count(ty), (0, 0), "{ty:?}");
                }
                update.diff
            })
        });
        let route_bytes = sent(&builder, ResourceType::RouteConfiguration, "outbound");
        let proxyless_bytes = sent(&builder, ResourceType::RouteConfiguration, "svc-13.ns-3:80");
        println!(
            "{services} Services: an endpoint change sends each subscriber one ClusterLoadAssignment of {endpoint_bytes} bytes; a route change sends each sidecar the outbound RouteConfiguration, {route_bytes} bytes, and a proxyless client of the Service its route, {proxyless_bytes} bytes"
        );
    }
    group.finish();
}

fn canary_route(weight: u32) -> HttpRoute {
    let backend = |name: &str, weight| BackendRef { service: ObjectKey::new("ns-3", name), port: Some(80), weight };
    HttpRoute {
        kind: RouteKind::Http,
        key: ObjectKey::new("ns-3", "canary"),
        created: None,
        generation: Some(1),
        parents: vec![ParentRef { service: ObjectKey::new("ns-3", "svc-13"), port: Some(80) }],
        rules: vec![RouteRule {
            backends: vec![backend("svc-13", 100 - weight), backend("svc-23", weight)],
            ..Default::default()
        }],
        refused: None,
    }
}

fn versions_and_diff(c: &mut Criterion) {
    let mut group = c.benchmark_group("versions_and_diff");
    let bodies: Vec<(ResourceType, String, Vec<u8>)> = (0..10_000u32)
        .map(|i| (ResourceType::ClusterLoadAssignment, format!("svc-{i}.ns:80"), vec![i as u8; 60]))
        .collect();
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("hash_10000_resources", |b| b.iter(|| Snapshot::new(None, black_box(bodies.clone()))));
    let one = Snapshot::new(None, bodies.clone());
    let mut changed = bodies.clone();
    for item in changed.iter_mut().step_by(200) {
        item.2.push(1);
    }
    let two = Snapshot::new(Some(&one), changed);
    group.bench_function("diff_10000_resources_50_changed", |b| {
        b.iter(|| SnapshotDiff::between(Some(black_box(&one)), &two))
    });
    group.finish();
}

criterion_group!(
    benches,
    eds_translate_encode,
    full_pipeline,
    verdict_flip,
    one_slice_change,
    route_vs_endpoint_change,
    versions_and_diff
);
criterion_main!(benches);
