//! A real Envoy driven through a real cluster: pods on the test kubelet, their slices written
//! by the EndpointSlice controller, reach Envoy with their metadata, and a probe edit made
//! with kubectl reaches Envoy's config_dump within a second.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use edgexds_tests::cluster::{Cluster, run_pod};
use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::envoy::{Envoy, PROBE_HEADER, ROUTED_CLUSTER, lb_endpoints};
use edgexds_tests::eventually;
use edgexds_tests::kube_objects::{selecting_service, web_probe};
use edgexds_tests::kube_server::{apply, delete};
use serde_json::json;

async fn answers(envoy: &Envoy) -> BTreeSet<(String, String)> {
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        if let Ok(reply) = envoy.request("/").await
            && reply.status == 200
        {
            seen.insert((reply.body.clone(), reply.header(PROBE_HEADER).unwrap_or_default().to_owned()));
        }
    }
    seen
}

/// The probe intervals Envoy holds: the cluster's health check, and each endpoint's from its
/// metadata, in ascending order (endpoints are ordered by address, and the ports are random).
async fn intervals(envoy: &Envoy) -> Option<(String, Vec<f64>)> {
    let (cluster, endpoints) = envoy.cluster_and_endpoints(ROUTED_CLUSTER).await.ok().flatten()?;
    let mut endpoint_intervals: Vec<f64> = lb_endpoints(&endpoints)
        .iter()
        .filter_map(|e| e["metadata"]["filter_metadata"]["edgexds"]["probe_interval_ms"].as_f64())
        .collect();
    endpoint_intervals.sort_by(f64::total_cmp);
    Some((cluster["health_checks"][0]["interval"].as_str()?.to_owned(), endpoint_intervals))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_services_slices_and_probes_from_a_real_api_server() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let server = &cluster.kube;
    let admin = server.admin_client().await.unwrap();
    server.named_namespace(&admin, "shop").await.unwrap();
    apply(&admin, &selecting_service("shop", "web", 80, None)).await.unwrap();
    run_pod(&admin, "shop", "web-0", "web").await;
    run_pod(&admin, "shop", "web-canary-1", "web").await;
    apply(&admin, &web_probe("shop", "web", "web", 5000, 500)).await.unwrap();
    let cp = ControlPlane::kubernetes(admin.clone(), &[], None).await.unwrap();
    let envoy = Envoy::start("k8s-sidecar", cp.xds_addr).await.unwrap();

    let expected: BTreeSet<_> = [("web-0".into(), "5000".into()), ("web-canary-1".into(), "500".into())].into();
    eventually(Duration::from_secs(30), "both upstreams with their probe intervals", || async {
        (answers(&envoy).await == expected).then_some(())
    })
    .await;

    // Edits as an operator makes them, each timed from the moment kubectl returns.
    let mut took = Vec::new();
    for (index, (base, canary)) in [(2000, 400), (3000, 300), (4000, 600), (2000, 250), (5000, 500)].iter().enumerate()
    {
        let patch = json!({"spec": {"intervalMs": base, "overrides": [{"match": {"podName": "web-canary-*"},
            "intervalMs": canary, "timeoutMs": canary / 2, "failureThreshold": 2}]}})
        .to_string();
        let kubectl = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let out = server.kubectl(&["patch", "hp", "web", "-n", "shop", "--type=merge", "-p", &patch]);
            (out, started.elapsed())
        });
        let (out, kubectl_time) = kubectl.await.unwrap();
        out.unwrap();
        let expected = (format!("{}s", base / 1000), vec![*canary as f64, *base as f64]);
        let (_, latency) = eventually(Duration::from_secs(1), &format!("probe edit {index} in Envoy"), || async {
            (intervals(&envoy).await.as_ref() == Some(&expected)).then_some(())
        })
        .await;
        took.push(latency);
        println!("kubectl patch hp ({} ms) -> Envoy config_dump: {} ms", kubectl_time.as_millis(), latency.as_millis());
    }
    took.sort();
    println!(
        "probe edit -> Envoy config_dump through the real API server: median {} ms, max {} ms",
        took[took.len() / 2].as_millis(),
        took[took.len() - 1].as_millis()
    );

    delete(&admin, "Pod", "shop", "web-canary-1").await.unwrap();
    eventually(Duration::from_secs(15), "traffic only to web-0", || async {
        let seen = answers(&envoy).await;
        (seen.len() == 1 && seen.iter().all(|(body, _)| body == "web-0")).then_some(())
    })
    .await;
}
