//! A real Envoy, subscribed with delta ADS, driven by edgexds from a manifests directory.

use std::collections::BTreeSet;
use std::time::Duration;

use edgexds::translate::TranslateOptions;
use edgexds_tests::control_plane::{ControlPlane, web_probe, web_service, web_slice};
use edgexds_tests::envoy::{Envoy, PROBE_HEADER, ROUTED_CLUSTER, endpoint_address, lb_endpoints};
use edgexds_tests::eventually;
use edgexds_tests::upstream::Upstream;
use serde_json::Value;

/// Envoy start-up and first health checks are slow on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

async fn setup(options: TranslateOptions) -> (ControlPlane, Upstream, Upstream, Envoy) {
    let (one, two) = Upstream::pair("one", "two").await;
    let cp = ControlPlane::start(options).await.expect("control plane starts");
    cp.write("web.yaml", &web_service());
    cp.write("web-slice.yaml", &web_slice(&[&one, &two]));
    cp.write("web-probe.yaml", &web_probe(5000, 500));
    let envoy = Envoy::start("e2e-sidecar", cp.xds_addr()).await.expect("envoy starts");
    (cp, one, two, envoy)
}

/// Which upstreams answered, with the probe interval Envoy put in the header for each.
async fn sample(envoy: &Envoy, requests: usize) -> BTreeSet<(String, String)> {
    let mut seen = BTreeSet::new();
    for _ in 0..requests {
        if let Ok(reply) = envoy.request("/").await
            && reply.status == 200
        {
            seen.insert((reply.body.clone(), reply.header(PROBE_HEADER).unwrap_or_default().to_owned()));
        }
    }
    seen
}

fn probe_interval(endpoint: &Value) -> Option<f64> {
    endpoint["metadata"]["filter_metadata"]["edgexds"]["probe_interval_ms"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_both_upstreams_and_see_each_endpoints_effective_probe_interval() {
    let (_cp, _one, _two, envoy) = setup(TranslateOptions::default()).await;
    let (seen, _) = eventually(SETTLE, "both upstreams answer", || async {
        let seen = sample(&envoy, 20).await;
        (seen.len() == 2).then_some(seen)
    })
    .await;
    let expected: BTreeSet<_> = [("one".into(), "5000".into()), ("two".into(), "500".into())].into();
    assert_eq!(seen, expected, "the canary override applies to upstream two only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_shows_endpoint_metadata_and_the_cluster_health_check() {
    let (_cp, one, two, envoy) = setup(TranslateOptions::default()).await;
    let ((cluster, endpoints), _) = eventually(SETTLE, "cluster and endpoints in config_dump", || async {
        envoy.cluster_and_endpoints(ROUTED_CLUSTER).await.ok().flatten()
    })
    .await;
    let check = &cluster["health_checks"][0];
    assert_eq!(check["interval"], "5s");
    assert_eq!(check["unhealthy_threshold"], 3);
    assert_eq!(check["http_health_check"]["path"], "/healthz");
    let by_address: Vec<_> = lb_endpoints(&endpoints)
        .iter()
        .map(|e| (endpoint_address(e), e["health_status"].clone(), e["metadata"]["filter_metadata"]["edgexds"].clone()))
        .collect();
    assert_eq!(by_address.len(), 2);
    assert_eq!(by_address[0].0, one.addr.to_string());
    assert_eq!(by_address[1].0, two.addr.to_string());
    assert_eq!(by_address[0].1, "HEALTHY");
    let base = &by_address[0].2;
    assert_eq!(
        (base["probe"].as_str(), base["probe_interval_ms"].as_f64(), base["failure_threshold"].as_f64()),
        (Some("shop/web"), Some(5000.0), Some(3.0))
    );
    let canary = &by_address[1].2;
    assert_eq!(
        (canary["probe_interval_ms"].as_f64(), canary["failure_threshold"].as_f64(), canary["timeout_ms"].as_f64()),
        (Some(500.0), Some(2.0), Some(250.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_probe_file_changes_metadata_and_interval_in_envoy_within_a_second() {
    let (cp, _one, _two, envoy) = setup(TranslateOptions::default()).await;
    eventually(SETTLE, "initial config", || async { envoy.cluster_and_endpoints(ROUTED_CLUSTER).await.ok().flatten() })
        .await;
    cp.write("web-probe.yaml", &web_probe(3000, 700));
    let (_, took) = eventually(Duration::from_secs(1), "probe edit visible in config_dump", || async {
        let (cluster, endpoints) = envoy.cluster_and_endpoints(ROUTED_CLUSTER).await.ok().flatten()?;
        let intervals: Vec<_> = lb_endpoints(&endpoints).iter().filter_map(probe_interval).collect();
        (cluster["health_checks"][0]["interval"] == "3s" && intervals == [3000.0, 700.0]).then_some(())
    })
    .await;
    println!("manifest edit -> Envoy config_dump: {} ms", took.as_millis());
    // The changed cluster is active again, not stuck warming until the initial-fetch timeout.
    let warming = envoy.stat("cluster_manager.warming_clusters").await.unwrap();
    assert_eq!(warming, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_endpoint_from_its_slice_stops_traffic_to_it() {
    let (cp, one, _two, envoy) = setup(TranslateOptions::default()).await;
    eventually(SETTLE, "both upstreams answer", || async { (sample(&envoy, 20).await.len() == 2).then_some(()) }).await;
    cp.write("web-slice.yaml", &web_slice(&[&one]));
    let (_, took) = eventually(Duration::from_secs(2), "only upstream one answers", || async {
        let seen = sample(&envoy, 20).await;
        (seen.len() == 1 && seen.iter().all(|(body, _)| body == "one")).then_some(())
    })
    .await;
    println!("endpoint removal -> traffic stopped: {} ms", took.as_millis());
    // And stays stopped.
    assert!(sample(&envoy, 50).await.iter().all(|(body, _)| body == "one"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_metadata_is_accepted_by_envoy() {
    let (_cp, _one, _two, envoy) = setup(TranslateOptions { typed_metadata: true, ..Default::default() }).await;
    eventually(SETTLE, "both upstreams answer", || async { (sample(&envoy, 20).await.len() == 2).then_some(()) }).await;
    assert_eq!(envoy.stat("cluster_manager.cds.update_rejected").await.unwrap(), Some(0));
    let rejected = envoy.stat(&format!("cluster.{ROUTED_CLUSTER}.update_rejected")).await.unwrap();
    assert_eq!(rejected.unwrap_or(0), 0, "{}", envoy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_manifest_keeps_the_last_good_state_in_envoy() {
    let (cp, _one, _two, envoy) = setup(TranslateOptions::default()).await;
    eventually(SETTLE, "both upstreams answer", || async { (sample(&envoy, 20).await.len() == 2).then_some(()) }).await;
    let scans = |cp: &ControlPlane| {
        let text = cp.running.metrics.encode();
        text.lines().find_map(|l| l.strip_prefix("edgexds_manifest_scans_total ")?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let before = scans(&cp);
    cp.write("web-slice.yaml", "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{ broken\n");
    // The malformed file has been read, and rejected, before traffic is sampled.
    eventually(Duration::from_secs(5), "the malformed file is scanned", || async {
        (scans(&cp) > before).then_some(())
    })
    .await;
    assert_eq!(sample(&envoy, 20).await.len(), 2, "both endpoints are still served");
}

/// `(sleep 0.3; cat web.yaml.src) > web.yaml`: truncated first, written later, in pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plain_rewrite_of_a_manifest_never_interrupts_traffic() {
    let (cp, _one, _two, envoy) = setup(TranslateOptions::default()).await;
    eventually(SETTLE, "both upstreams answer", || async { (sample(&envoy, 20).await.len() == 2).then_some(()) }).await;
    let path = cp.path("web.yaml");
    let writer = tokio::task::spawn_blocking(move || {
        for _ in 0..3 {
            edgexds_tests::careless_writer::rewrite_slowly(&path, &web_service());
        }
    });
    let mut failures = 0;
    let mut requests = 0;
    while !writer.is_finished() {
        requests += 1;
        if !envoy.request("/").await.is_ok_and(|reply| reply.status == 200) {
            failures += 1;
        }
    }
    writer.await.expect("writer");
    assert!(requests > 10, "traffic ran during the rewrites ({requests} requests)");
    assert_eq!(failures, 0, "{failures} of {requests} requests failed while web.yaml was rewritten in place");
}
