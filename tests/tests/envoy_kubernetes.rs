//! A real Envoy driven from the Kubernetes API path: watch → model → delta ADS → Envoy.

use std::collections::BTreeSet;
use std::time::Duration;

use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::envoy::{Envoy, PROBE_HEADER, ROUTED_CLUSTER, lb_endpoints};
use edgexds_tests::eventually;
use edgexds_tests::kube_api::FakeApiServer;
use edgexds_tests::kube_objects::{service, slice, web_probe};
use edgexds_tests::upstream::Upstream;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_services_slices_and_probes_from_the_api_server() {
    let (one, two) = Upstream::pair("one", "two").await;
    let api = FakeApiServer::start().await;
    let port = one.addr.port();
    api.apply(service("shop", "web", 80, json!({})));
    api.apply(slice("shop", "web-1", "web", port, &[one.addr.ip(), two.addr.ip()]));
    api.apply(web_probe("shop", "web", "web", 5000, 500));
    let cp = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();
    let envoy = Envoy::start("k8s-sidecar", cp.xds_addr).await.unwrap();

    let expected: BTreeSet<_> = [("one".into(), "5000".into()), ("two".into(), "500".into())].into();
    eventually(Duration::from_secs(30), "both upstreams with their probe intervals", || async {
        (answers(&envoy).await == expected).then_some(())
    })
    .await;

    api.apply(web_probe("shop", "web", "web", 2000, 400));
    let (_, took) = eventually(Duration::from_secs(2), "probe edit in Envoy", || async {
        let (cluster, endpoints) = envoy.cluster_and_endpoints(ROUTED_CLUSTER).await.ok().flatten()?;
        let intervals: Vec<_> = lb_endpoints(&endpoints)
            .iter()
            .filter_map(|e| e["metadata"]["filter_metadata"]["edgexds"]["probe_interval_ms"].as_f64())
            .collect();
        (cluster["health_checks"][0]["interval"] == "2s" && intervals == [2000.0, 400.0]).then_some(())
    })
    .await;
    println!("HealthProbe edit in the API server -> Envoy config_dump: {} ms", took.as_millis());

    api.apply(slice("shop", "web-1", "web", port, &[one.addr.ip()]));
    eventually(Duration::from_secs(2), "traffic only to upstream one", || async {
        let seen = answers(&envoy).await;
        (seen.len() == 1 && seen.iter().all(|(body, _)| body == "one")).then_some(())
    })
    .await;
}
