//! Past 10,000 clusters (the default `--max-subscription-names`) a real Envoy still gets every
//! cluster: a limit meant for hostile clients never refuses what the snapshot itself asks a
//! client to subscribe to. A fresh Envoy routes to the last of 12,000 clusters, follows a
//! Service added after, and a client naming 10,000 names beyond what exists is refused.

use std::net::SocketAddr;
use std::time::Duration;

use edgexds::translate::TranslateOptions;
use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::envoy::{Envoy, sidecar_bootstrap};
use edgexds_tests::eventually;
use edgexds_tests::http::through_proxy;
use edgexds_tests::upstream::Upstream;
use edgexds_tests::xds::{DeltaClient, EDS};

/// Services with two ports each: 12,000 clusters.
const SERVICES: usize = 6_000;
/// Envoy takes its time over 12,000 clusters on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(180);

fn service(index: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: svc-{index}, namespace: big }}\n\
         spec: {{ ports: [{{ name: http, port: 80 }}, {{ name: metrics, port: 9090 }}] }}\n"
    )
}

fn slice(index: usize, upstream: &Upstream) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{ name: svc-{index}-1, namespace: big, labels: {{ kubernetes.io/service-name: svc-{index} }} }}\n\
         addressType: IPv4\nports: [{{ name: http, port: {} }}]\n\
         endpoints: [{{ addresses: [\"{}\"], conditions: {{ ready: true }} }}]\n",
        upstream.addr.port(),
        upstream.addr.ip()
    )
}

async fn answers(proxy: SocketAddr, url: &str) -> String {
    let (body, _) = eventually(SETTLE, &format!("{url} answers"), || async {
        through_proxy(proxy, url).await.filter(|(status, _)| *status == 200).map(|(_, body)| body)
    })
    .await;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_gets_twelve_thousand_clusters_routes_to_the_last_and_follows_one_added_after() {
    let outbound: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let options = TranslateOptions { outbound_listener: outbound, ..Default::default() };
    let cp = ControlPlane::start(options).await.expect("control plane starts");
    let last = Upstream::start("last", [127, 0, 0, 1].into(), 0).await.unwrap();
    for chunk in 0..SERVICES / 1_000 {
        let docs: Vec<String> = (chunk * 1_000..(chunk + 1) * 1_000).map(service).collect();
        cp.write(&format!("services-{chunk}.yaml"), &docs.join("---\n"));
    }
    cp.write("last-slice.yaml", &slice(SERVICES - 1, &last));
    eventually(SETTLE, "12,000 clusters served", || async {
        let snapshot = cp.running.cache.current()?;
        (snapshot.len(edgexds::cache::ResourceType::Cluster) >= 2 * SERVICES).then_some(())
    })
    .await;

    let envoy = Envoy::start_with(sidecar_bootstrap(cp.xds_addr(), "DELTA_GRPC")).await.expect("envoy starts");
    assert_eq!(answers(outbound, &format!("http://svc-{}.big/", SERVICES - 1)).await, "last");
    let clusters = envoy.stat("cluster_manager.active_clusters").await.unwrap().unwrap_or_default();
    assert!(clusters >= 2 * SERVICES as u64, "{clusters} clusters in Envoy");

    // A synced Envoy follows a Service added past all of them.
    let added = Upstream::start("added", [127, 0, 0, 1].into(), 0).await.unwrap();
    cp.write("added.yaml", &format!("{}---\n{}", service(SERVICES), slice(SERVICES, &added)));
    assert_eq!(answers(outbound, &format!("http://svc-{SERVICES}.big/")).await, "added");

    // A client naming 10,000 names beyond what the snapshot serves is refused.
    let mut hostile = DeltaClient::connect(cp.xds_addr()).await;
    let names: Vec<String> = (0..2 * SERVICES + 10_010).map(|i| format!("nowhere-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    hostile.subscribe(EDS, &names).await;
    let refused = hostile.next_result().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("--max-subscription-names"), "{refused}");
    drop(envoy);
}
