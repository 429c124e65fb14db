//! API server outages for real: kube-apiserver stopped at edgexds's start and for 30 s
//! while it serves an Envoy, with changes and an etcd compaction made meanwhile through a
//! second API server on the same etcd, so that edgexds's watches come back to `410 Gone`.
//!
//! This binary has a cluster of its own: stopping it would disturb other tests. The
//! upstreams are pods on the test kubelet, but their slices are written here: the changes
//! are made while the API server the controllers use is down, which no controller can do.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use edgexds::serve::Running;
use edgexds_tests::cluster::{Cluster, default_nodes, run_pod};
use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::envoy::Envoy;
use edgexds_tests::http;
use edgexds_tests::kube_objects::{UPSTREAM_PORT, endpoint_slice, service, web_probe};
use edgexds_tests::kube_server::{KubeServer, apply, client_from, delete};
use edgexds_tests::xds::{CDS, DeltaClient, names, removed};
use edgexds_tests::{eventually, metric};
use serde_json::json;

const OUTAGE: Duration = Duration::from_secs(30);

async fn readyz(cp: &Running) -> u16 {
    http::get(&format!("http://{}/readyz", cp.admin_addr)).await.map_or(0, |r| r.status)
}

async fn upstreams_answering(envoy: &Envoy) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        if let Ok(reply) = envoy.request("/").await
            && reply.status == 200
        {
            seen.insert(reply.body);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_keep_envoy_routing_and_edgexds_converges_after_410_gone() {
    edgexds_tests::init_test_logs();
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&default_nodes()[..1])).await.unwrap().unwrap();
    let cluster: &'static Cluster = Box::leak(Box::new(cluster));
    let server: &'static KubeServer = &cluster.kube;
    let admin = server.admin_client().await.unwrap();
    server.named_namespace(&admin, "shop").await.unwrap();
    // Pods no Service selects: their slices are this test's.
    let one = run_pod(&admin, "shop", "web-0", "backend").await;
    let two = run_pod(&admin, "shop", "web-1", "backend").await;
    apply(&admin, &service("shop", "web", 80, json!({}))).await.unwrap();
    apply(&admin, &service("shop", "api", 81, json!({}))).await.unwrap();
    apply(&admin, &endpoint_slice("shop", "web-1", "web", (one, UPSTREAM_PORT).into(), "web-0")).await.unwrap();
    apply(&admin, &endpoint_slice("shop", "web-2", "web", (two, UPSTREAM_PORT).into(), "web-1")).await.unwrap();
    apply(&admin, &web_probe("shop", "web", "web", 5000, 500)).await.unwrap();

    // 1. The API server is down when edgexds starts: not ready, and nothing served, until it is back.
    tokio::task::spawn_blocking(|| server.stop_apiserver()).await.unwrap();
    // Only shop: a real server also holds default/kubernetes.
    let cp = ControlPlane::kubernetes(admin.clone(), &["shop"], None).await.unwrap();
    let mut client = DeltaClient::connect(cp.xds_addr).await.watched_by(cp.proxies.clone());
    client.subscribe(CDS, &[]).await;
    eventually(Duration::from_secs(10), "a failed list", || async {
        (metric(&cp, "edgexds_kube_watch_failures_total") > 0.0).then_some(())
    })
    .await;
    assert_eq!(readyz(&cp).await, 503, "not ready before the initial lists");
    assert_eq!(metric(&cp, "edgexds_source_synced"), 0.0, "not in sync before the initial lists");
    client.assert_quiet().await;
    tokio::task::spawn_blocking(|| server.restart_apiserver()).await.unwrap().unwrap();
    let cds = client.next_within(Duration::from_secs(30)).await.unwrap();
    assert_eq!(names(&cds), ["api.shop:81", "web.shop:80"]);
    client.ack(&cds).await;
    eventually(Duration::from_secs(10), "ready", || async { (readyz(&cp).await == 200).then_some(()) }).await;

    let envoy = Envoy::start("k8s-sidecar", cp.xds_addr).await.unwrap();
    let both: BTreeSet<String> = ["web-0".into(), "web-1".into()].into();
    eventually(Duration::from_secs(30), "both upstreams", || async {
        (upstreams_answering(&envoy).await == both).then_some(())
    })
    .await;

    // 2. A 30 s outage of the API server edgexds watches, with changes made through another one.
    let replica = tokio::task::spawn_blocking(|| server.start_replica()).await.unwrap().unwrap();
    let other = client_from(&replica).await.unwrap();
    let lists_before = metric(&cp, "edgexds_kube_lists_total");
    tokio::task::spawn_blocking(|| server.stop_apiserver()).await.unwrap();
    let outage = Instant::now();
    delete(&other, "Service", "shop", "api").await.unwrap();
    delete(&other, "EndpointSlice", "shop", "web-2").await.unwrap();
    // Past every resourceVersion edgexds has seen: its watches cannot resume, only re-list.
    let compacted = server.compact_etcd().await.unwrap();
    let (mut requests, mut failed) = (0, 0);
    while outage.elapsed() < OUTAGE {
        match envoy.request("/").await {
            Ok(reply) if reply.status == 200 => {}
            _ => failed += 1,
        }
        requests += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, 0, "{failed} of {requests} requests failed while the API server was away");
    assert_eq!(readyz(&cp).await, 200, "still ready: Envoys keep their endpoints during an outage");
    assert!(metric(&cp, "edgexds_kube_watches_failing") > 0.0);
    assert_eq!(metric(&cp, "edgexds_source_synced"), 0.0, "out of sync while a watch fails, though still ready");
    client.assert_quiet().await;

    // 3. Back: the watches get 410 Gone, re-list, and the changes made meanwhile arrive.
    tokio::task::spawn_blocking(|| server.restart_apiserver()).await.unwrap().unwrap();
    let back = Instant::now();
    let response = client.next_within(Duration::from_secs(30)).await.unwrap();
    assert_eq!(removed(&response), ["api.shop:81"]);
    client.ack(&response).await;
    let (_, converged) = eventually(Duration::from_secs(30), "traffic only to web-0", || async {
        (upstreams_answering(&envoy).await == BTreeSet::from(["web-0".to_owned()])).then_some(())
    })
    .await;
    println!(
        "outage of {} s, {requests} requests through Envoy, {failed} failed; etcd compacted at revision {compacted}; \
         Envoy converged {} ms after the API server was ready again ({} ms after its restart began)",
        OUTAGE.as_secs(),
        converged.as_millis(),
        back.elapsed().as_millis()
    );
    assert!(metric(&cp, "edgexds_kube_lists_total") > lists_before, "the watches re-listed");
    assert!(
        metric(&cp, "edgexds_kube_watch_failures_total{kind=\"service\",code=\"410\"}") > 0.0
            || metric(&cp, "edgexds_kube_watch_failures_total{kind=\"endpointslice\",code=\"410\"}") > 0.0,
        "a watch was told 410 Gone:\n{}",
        cp.metrics.encode().lines().filter(|l| l.contains("kube_")).collect::<Vec<_>>().join("\n")
    );
    eventually(Duration::from_secs(10), "watches recovered", || async {
        (metric(&cp, "edgexds_kube_watches_failing") == 0.0 && metric(&cp, "edgexds_source_synced") == 1.0)
            .then_some(())
    })
    .await;
}
