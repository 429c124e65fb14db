//! Traffic kept close, on a real cluster: zones come from the test kubelet's Node labels and
//! hints from the real EndpointSlice controller; real sidecar Envoys in zone-a and zone-b,
//! and grpcio's own xDS resolver, route by what edgexds sends each of them.
//! - `PreferSameZone`: each sidecar sends every request to its own zone; with one of its
//!   zone's two pods unready it spills over as Envoy documents (priority 0 at 50 % health
//!   times the overprovisioning factor 1.4 keeps 70 %, priority 1 takes the rest); with none
//!   it fails over; and it comes back when they recover.
//! - The same pods behind a Service without a preference: both zones get traffic.
//! - `PreferSameNode`: each sidecar sends to the pod on its own node.
//! - A proxyless grpcio client in zone-a calls zone-a only, then fails over.

use std::collections::BTreeMap;

use edgexds_tests::cluster::{Cluster, endpoint_conditions, pod_ready, wait_pod, wait_slices};
use edgexds_tests::kube_objects::{UPSTREAM_PORT, Upstream, selecting_service};
use edgexds_tests::kube_server::apply;
use edgexds_tests::mesh::{PlacedSidecar, SETTLE};
use edgexds_tests::traffic::{GrpcLoad, grpc_bootstrap};
use edgexds_tests::{eventually, http};
use serde_json::json;

/// Pod name -> (node, zone).
const PODS: [(&str, &str, &str); 4] = [
    ("web-a1", "node-a1", "zone-a"),
    ("web-a2", "node-a2", "zone-a"),
    ("web-b1", "node-b1", "zone-b"),
    ("web-b2", "node-b2", "zone-b"),
];
const REQUESTS: usize = 100;

fn zone_of(pod: &str) -> &'static str {
    PODS.iter().find(|(name, _, _)| *name == pod).map_or("?", |(_, _, zone)| zone)
}

/// A Service over every web pod, with `trafficDistribution` when given.
fn web_service(ns: &str, name: &str, distribution: Option<&str>) -> serde_json::Value {
    let mut service = selecting_service(ns, "web", 80, Some("grpc"));
    service["metadata"]["name"] = json!(name);
    if let Some(distribution) = distribution {
        service["spec"]["trafficDistribution"] = json!(distribution);
    }
    service
}

/// Answers to `REQUESTS` requests through `proxy` to `service`, counted per pod.
async fn spread(proxy: std::net::SocketAddr, ns: &str, service: &str) -> BTreeMap<String, usize> {
    let url = format!("http://{service}.{ns}/");
    let mut answers = BTreeMap::new();
    for _ in 0..REQUESTS {
        if let Some((200, pod)) = http::through_proxy(proxy, &url).await {
            *answers.entry(pod).or_default() += 1;
        }
    }
    answers
}

/// The share of `answers` from `zone`.
fn share(answers: &BTreeMap<String, usize>, zone: &str) -> f64 {
    let total: usize = answers.values().sum();
    let from: usize = answers.iter().filter(|(pod, _)| zone_of(pod) == zone).map(|(_, n)| n).sum();
    from as f64 / total.max(1) as f64
}

/// Waits until requests through `proxy` to `service` are split as `judge` wants; returns the split.
async fn until_split(
    proxy: std::net::SocketAddr,
    ns: &str,
    service: &str,
    what: &str,
    judge: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    eventually(SETTLE, what, || async {
        let answers = spread(proxy, ns, service).await;
        judge(&answers).then_some(answers)
    })
    .await
    .0
}

/// Flips `pod`'s readiness and waits until the controller's slice of `service` says so.
async fn set_ready(admin: &kube::Client, ns: &str, addresses: &BTreeMap<String, String>, pod: &str, ready: bool) {
    let address = &addresses[pod];
    let url = format!("http://{address}:{UPSTREAM_PORT}/admin/ready?to={ready}");
    assert_eq!(http::post(&url, "").await.map(|r| r.status).ok(), Some(204), "flipping {pod}");
    wait_slices(admin, ns, "web", SETTLE, &format!("{pod} ready={ready}"), |slices| {
        endpoint_conditions(slices).get(address).is_some_and(|c| c.0 == ready)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sidecars_and_grpc_clients_keep_traffic_in_their_zone_or_node_spill_over_fail_over_and_come_back() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    let upstream = Upstream::default();
    let mut addresses = BTreeMap::new();
    for (name, node, _) in PODS {
        let mut pod = upstream.pod(&ns, name, "web");
        pod["spec"]["nodeName"] = json!(node);
        apply(&admin, &pod).await.unwrap();
    }
    for (name, _, _) in PODS {
        let pod = wait_pod(&admin, &ns, name, SETTLE, "the pod is ready", pod_ready).await;
        let ip = pod.and_then(|p| p.status?.pod_ip).expect("an address");
        addresses.insert(name.to_owned(), ip);
    }
    apply(&admin, &web_service(&ns, "web", Some("PreferSameZone"))).await.unwrap();
    apply(&admin, &web_service(&ns, "any", None)).await.unwrap();
    apply(&admin, &web_service(&ns, "near", Some("PreferSameNode"))).await.unwrap();
    let hinted = wait_slices(&admin, &ns, "web", SETTLE, "the controller hints every endpoint's zone", |slices| {
        let endpoints: Vec<_> = slices.iter().flat_map(|s| &s.endpoints).collect();
        endpoints.len() == PODS.len()
            && endpoints
                .iter()
                .all(|e| e.hints.as_ref().and_then(|h| h.for_zones.as_ref()).is_some_and(|z| !z.is_empty()))
    })
    .await;
    eprintln!(
        "zone hints from the controller: {:?}",
        hinted
            .iter()
            .flat_map(|s| &s.endpoints)
            .map(|e| (
                &e.addresses[0],
                e.zone.as_deref(),
                e.hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect::<Vec<_>>())
            ))
            .collect::<Vec<_>>()
    );

    let a = PlacedSidecar::start(cluster, &ns, "zone-a", Some("node-a1")).await.unwrap();
    let b = PlacedSidecar::start(cluster, &ns, "zone-b", Some("node-b1")).await.unwrap();

    // PreferSameZone: all local.
    let in_a = until_split(a.proxy, &ns, "web", "zone-a's sidecar stays in zone-a", |s| {
        share(s, "zone-a") == 1.0 && s.len() == 2
    })
    .await;
    let in_b = until_split(b.proxy, &ns, "web", "zone-b's sidecar stays in zone-b", |s| {
        share(s, "zone-b") == 1.0 && s.len() == 2
    })
    .await;
    eprintln!("PreferSameZone: zone-a sidecar {in_a:?}; zone-b sidecar {in_b:?}");

    // Without a preference: both zones.
    let any = until_split(a.proxy, &ns, "any", "both zones serve the Service without a preference", |s| {
        share(s, "zone-b") > 0.2 && share(s, "zone-a") > 0.2
    })
    .await;
    eprintln!("no preference, from zone-a: {any:?} (zone-b share {:.0} %)", share(&any, "zone-b") * 100.0);

    // PreferSameNode: the pod on the sidecar's own node.
    let near_a =
        until_split(a.proxy, &ns, "near", "node-a1's sidecar stays on node-a1", |s| s.keys().eq(["web-a1"])).await;
    let near_b =
        until_split(b.proxy, &ns, "near", "node-b1's sidecar stays on node-b1", |s| s.keys().eq(["web-b1"])).await;
    eprintln!("PreferSameNode: node-a1 sidecar {near_a:?}; node-b1 sidecar {near_b:?}");

    // One of zone-a's two pods unready: 50 % healthy x 1.4 = 70 % stays, 30 % spills to zone-b.
    set_ready(&admin, &ns, &addresses, "web-a1", false).await;
    let spilled = until_split(a.proxy, &ns, "web", "zone-a spills over to zone-b", |s| {
        !s.contains_key("web-a1") && (0.15..=0.45).contains(&share(s, "zone-b"))
    })
    .await;
    eprintln!(
        "spill-over with web-a1 unready: {spilled:?} (zone-b share {:.0} %; Envoy's rule: 30 %)",
        share(&spilled, "zone-b") * 100.0
    );

    // The proxyless client, in zone-a, before zone-a fails.
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = grpc_bootstrap(dir.path(), &[a.replica.xds], "proxyless-zone-a", "zone-a").unwrap();
    let target = format!("xds:///web.{ns}:80");
    let mut load = GrpcLoad::start(&bootstrap, &target, 20).await.unwrap();
    load.until(SETTLE, "grpcio calls zone-a", |s| s.pod.as_deref().is_ok_and(|p| zone_of(p) == "zone-a"))
        .await
        .unwrap();
    set_ready(&admin, &ns, &addresses, "web-a2", false).await;
    let failed_over =
        until_split(a.proxy, &ns, "web", "zone-a fails over to zone-b", |s| share(s, "zone-b") == 1.0).await;
    eprintln!("zone-a all unready: {failed_over:?}");
    for _ in 0..5 {
        load.until(SETTLE, "grpcio fails over to zone-b", |s| s.pod.as_deref().is_ok_and(|p| zone_of(p) == "zone-b"))
            .await
            .unwrap();
    }
    let samples = load.stop().await.unwrap();
    let failures = samples.iter().filter(|s| s.pod.is_err()).count();
    let pods: Vec<&str> = samples.iter().filter_map(|s| s.pod.as_deref().ok()).collect();
    let first_b = pods.iter().position(|p| zone_of(p) == "zone-b");
    eprintln!(
        "grpcio in zone-a: {} calls, {failures} failed; zone-a only until call {first_b:?}, then {:?}",
        pods.len(),
        pods.iter().rev().take(5).collect::<Vec<_>>()
    );
    assert_eq!(failures, 0, "no call fails while zone-a's pods are unready but serving");
    let first_b = first_b.expect("grpcio failed over to zone-b");
    assert!(first_b > 0 && pods[..first_b].iter().all(|p| zone_of(p) == "zone-a"), "local only before: {pods:?}");
    let last = &pods[pods.len().saturating_sub(5)..];
    assert!(last.iter().all(|p| zone_of(p) == "zone-b"), "zone-b once zone-a failed: {pods:?}");

    // Recovery.
    set_ready(&admin, &ns, &addresses, "web-a1", true).await;
    set_ready(&admin, &ns, &addresses, "web-a2", true).await;
    let back =
        until_split(a.proxy, &ns, "web", "zone-a's traffic comes back", |s| share(s, "zone-a") == 1.0 && s.len() == 2)
            .await;
    eprintln!("recovered: {back:?}");
}
