//! A real Envoy keeps following edits at its usual pace while 500 clients that never read
//! are connected to the same control plane. Its own test binary, so nothing shares the cores.

use std::time::Duration;

use edgexds::hds::HdsConfig;
use edgexds::port::{Limit, Limits};
use edgexds::translate::TranslateOptions;
use edgexds::xds::StreamKind;
use edgexds_tests::control_plane::{ControlPlane, web_probe, web_service, web_slice};
use edgexds_tests::envoy::{Envoy, ROUTED_CLUSTER, lb_endpoints};
use edgexds_tests::eventually;
use edgexds_tests::upstream::Upstream;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

const STUCK: usize = 500;
use edgexds_tests::xds::CDS;

/// Edits the probe `rounds` times; how long each took to show in Envoy's config_dump.
async fn edit_latencies(cp: &ControlPlane, envoy: &Envoy, rounds: u32, offset: u32) -> Vec<Duration> {
    let mut took = Vec::new();
    for round in 0..rounds {
        let base = 2000 + 100 * (round + offset);
        cp.write("web-probe.yaml", &web_probe(base, 700));
        let (_, elapsed) = eventually(Duration::from_secs(1), "probe edit visible in config_dump", || async {
            let (_, endpoints) = envoy.cluster_and_endpoints(ROUTED_CLUSTER).await.ok().flatten()?;
            let intervals: Vec<f64> = lb_endpoints(&endpoints)
                .iter()
                .filter_map(|e| e["metadata"]["filter_metadata"]["edgexds"]["probe_interval_ms"].as_f64())
                .collect();
            (intervals.first() == Some(&f64::from(base))).then_some(())
        })
        .await;
        took.push(elapsed);
    }
    took.sort();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_envoy_follows_edits_within_a_second_with_500_stuck_clients_connected() {
    let (one, two) = Upstream::pair("one", "two").await;
    let limits = Limits::default().with(Limit::ConnectionsPerPeer, 1000);
    let cp = ControlPlane::start_limited(
        tempfile::tempdir().unwrap(),
        TranslateOptions::default(),
        HdsConfig::default(),
        limits,
    )
    .await
    .expect("control plane starts");
    cp.write("web.yaml", &web_service());
    cp.write("web-slice.yaml", &web_slice(&[&one, &two]));
    cp.write("web-probe.yaml", &web_probe(5000, 500));
    let envoy = Envoy::start("stuck-neighbours", cp.xds_addr()).await.expect("envoy starts");
    eventually(Duration::from_secs(30), "initial config", || async {
        envoy.cluster_and_endpoints(ROUTED_CLUSTER).await.ok().flatten()
    })
    .await;
    let before = edit_latencies(&cp, &envoy, 5, 0).await;

    let mut stuck = Vec::new();
    for index in 0..STUCK {
        let channel = Endpoint::from_shared(format!("http://{}", cp.xds_addr()))
            .unwrap()
            .initial_stream_window_size(Some(0))
            .connect()
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let node = Some(Node { id: format!("stuck-{index}"), ..Default::default() });
        tx.send(DeltaDiscoveryRequest { type_url: CDS.into(), node, ..Default::default() }).await.unwrap();
        let call =
            AggregatedDiscoveryServiceClient::new(channel).delta_aggregated_resources(ReceiverStream::new(rx)).await;
        stuck.push((tx, call));
    }
    let streams = cp.running.xds_metrics.streams_of(StreamKind::Aggregated, edgexds::xds::Flavour::Delta);
    eventually(Duration::from_secs(30), "every stuck stream is open", || async {
        (streams.get() > STUCK as i64).then_some(())
    })
    .await;
    let after = edit_latencies(&cp, &envoy, 5, 5).await;
    println!("probe edit -> Envoy config_dump: {before:?} without, {after:?} with {STUCK} stuck clients");
    let median = |v: &[Duration]| v[v.len() / 2];
    assert!(
        median(&after) <= median(&before) * 3 / 2 + Duration::from_millis(50),
        "Envoy slowed down: median {:?} -> {:?}",
        median(&before),
        median(&after)
    );
    drop(stuck);
}
