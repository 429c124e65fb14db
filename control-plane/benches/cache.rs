//! 5,000 endpoint resources, 20 / 200 / 2,000 delta streams, 50 resources change:
//! the time until every affected stream has its response ready.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use edgexds::cache::{ResourceType, Snapshot, SnapshotCache};
use edgexds::xds::{StreamKind, StreamState};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

const RESOURCES: usize = 5_000;
/// Each stream subscribes to every 10th resource (offset by its index): 500 names, like a scoped sidecar.
const STRIDE: usize = 10;
const CHANGES: usize = 50;

fn name(i: usize) -> String {
    format!("svc-{i}.ns-{}:80", i % 10)
}

fn snapshot(previous: Option<&Snapshot>, variant: u8) -> Snapshot {
    let items = (0..RESOURCES).map(|i| {
        // 50 resources, spread over the name space, differ between the two variants.
        let changed = i % (RESOURCES / CHANGES) == 0;
        let body = vec![if changed { variant } else { 0 }; 120];
        (ResourceType::ClusterLoadAssignment, name(i), body)
    });
    Snapshot::new(previous, items)
}

fn streams(count: usize, snapshot: &Snapshot) -> Vec<StreamState> {
    (0..count)
        .map(|s| {
            let mut stream = StreamState::new(StreamKind::Aggregated, edgexds::port::Limits::default());
            let names = (s % STRIDE..RESOURCES).step_by(STRIDE).map(name).collect();
            let request = DeltaDiscoveryRequest {
                type_url: ResourceType::ClusterLoadAssignment.type_url().into(),
                resource_names_subscribe: names,
                ..Default::default()
            };
            let _ = stream.handle_request(request, Some(snapshot));
            while stream.next_response(snapshot).is_some() {}
            stream
        })
        .collect()
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out_50_changes_of_5000");
    group.sample_size(20);
    for count in [20, 200, 2_000] {
        let cache = SnapshotCache::default();
        cache.publish(snapshot(None, 0));
        let mut all = streams(count, &cache.current().unwrap());
        let mut variant = 0u8;
        group.bench_function(BenchmarkId::from_parameter(format!("{count}_streams")), |bench| {
            bench.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    // Untimed: the next generation, 50 resources changed.
                    variant = variant.wrapping_add(1).max(1);
                    let previous = cache.current().unwrap();
                    cache.publish(snapshot(Some(&previous), variant));
                    let next: Arc<Snapshot> = cache.current().unwrap();
                    let started = Instant::now();
                    let mut responses = 0;
                    for stream in all.iter_mut() {
                        stream.snapshot_changed(&next);
                        while let Some(outgoing) = stream.next_response(&next) {
                            responses += black_box(outgoing).response.resources;
                        }
                    }
                    total += started.elapsed();
                    assert_eq!(responses, count * CHANGES / STRIDE);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
