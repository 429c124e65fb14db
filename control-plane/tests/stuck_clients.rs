//! Clients that open a stream and never read must not slow the others down. Its own
//! test binary, so no other test shares the two cores while latencies are compared.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use support::{CDS, EDS, Server, node, service, slice, subscriber};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Update latency of a healthy client: from an atomic file write to the EDS response.
async fn update_latencies(
    dir: &Path,
    responses: &mut mpsc::Receiver<(Instant, DeltaDiscoveryResponse)>,
    n: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for round in 0..n {
        let temp = dir.join("svc-0.yaml.tmp~");
        let content =
            format!("{}---\n{}", service("svc-0", 80), slice("svc-0", &format!("10.1.0.{}", round % 200 + 1)));
        std::fs::write(&temp, content).unwrap();
        let written = Instant::now();
        std::fs::rename(&temp, dir.join("svc-0.yaml")).unwrap();
        loop {
            let (at, response) =
                tokio::time::timeout(Duration::from_secs(30), responses.recv()).await.unwrap().unwrap();
            if response.type_url == EDS && response.resources.iter().any(|r| r.name == "svc-0.shop:80") {
                latencies.push(at - written);
                break;
            }
        }
    }
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_stuck_clients_change_a_healthy_clients_p99_by_less_than_ten_percent() {
    const STUCK: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    // Enough that every initial response fills a stuck client's window and stays in flight.
    for index in 0..200 {
        let name = format!("svc-{index}");
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!("{}---\n{}", service(&name, 80), slice(&name, "10.0.0.1")),
        )
        .unwrap();
    }
    let flags = ["--max-connections-per-peer", "1000", "--max-connections", "1000"];
    let server = Server::start(dir.path(), &flags, Stdio::null());
    let mut healthy = subscriber(server.xds, node("healthy")).await;
    // The initial sync is over once every Service's endpoints arrived.
    let mut synced = std::collections::BTreeSet::new();
    while synced.len() < 200 {
        let (_, response) = tokio::time::timeout(Duration::from_secs(30), healthy.recv()).await.unwrap().unwrap();
        if response.type_url == EDS {
            synced.extend(response.resources.into_iter().map(|r| r.name));
        }
    }
    let before = update_latencies(dir.path(), &mut healthy, 200).await;

    // Clients that open a stream and never read: a stream window of zero bytes.
    let mut stuck = Vec::new();
    for index in 0..STUCK {
        let channel = Endpoint::from_shared(format!("http://{}", server.xds))
            .unwrap()
            .initial_stream_window_size(Some(0))
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(1);
        let request = DeltaDiscoveryRequest {
            type_url: CDS.into(),
            node: Some(node(&format!("stuck-{index}"))),
            ..Default::default()
        };
        tx.send(request).await.unwrap();
        let call =
            AggregatedDiscoveryServiceClient::new(channel).delta_aggregated_resources(ReceiverStream::new(rx)).await;
        stuck.push((tx, call));
    }
    // Measured in the steady state: every stuck stream has hit its stall and gone on probation.
    server.wait_until("every stuck stream is seen as stuck", || {
        server.metric("edgexds_xds_stuck_streams") >= STUCK as f64
    });
    let after = update_latencies(dir.path(), &mut healthy, 200).await;
    let (p99_before, p99_after) = (p99(&before), p99(&after));
    eprintln!("healthy client update p99: {p99_before:?} without, {p99_after:?} with {STUCK} stuck clients");
    assert!(
        p99_after.as_secs_f64() <= p99_before.as_secs_f64() * 1.10,
        "p99 {p99_before:?} -> {p99_after:?} with {STUCK} stuck clients"
    );
    drop(stuck);
}
