//! ServiceAccount tokens on the xDS port, through the real binary and a real kube-apiserver:
//! - a flood of bad tokens reaches the API server at no more than the per-address review
//!   rate, newcomers get in on their first try during it, and tokens verified before it stay
//!   cached;
//! - connections without credentials are reaped after the grace period and cannot take an
//!   authenticated proxy's place while they are held;
//! - a deleted pod's token stops working within the recheck bound, and its open stream ends;
//! - a token bound to a pod on a Node places its client in that Node's zone, whatever the
//!   client's bootstrap claims.
//!
//! Every client address here is a loopback address standing for one client (127.0.0.0/8).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgexds_tests::binary::Server;
use edgexds_tests::control_plane::web_service;
use edgexds_tests::kube_server::KubeServer;
use edgexds_tests::pki::TestCa;
use edgexds_tests::xds::{CDS, DeltaClient, tls_channel_from};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

/// edgexds with TLS and token authentication, its reviews going to `kube`.
struct Secured {
    server: Server,
    ca: TestCa,
    _dirs: [tempfile::TempDir; 2],
}

impl Secured {
    /// Limits and settings go in as their environment variables.
    fn start(kube: &KubeServer, env: &[(&str, &str)]) -> Self {
        Self::serving(kube, env, &web_service())
    }

    /// The same, serving the manifests `objects`.
    fn serving(kube: &KubeServer, env: &[(&str, &str)], objects: &str) -> Self {
        let manifests = tempfile::tempdir().unwrap();
        std::fs::write(manifests.path().join("web.yaml"), objects).unwrap();
        let pki = tempfile::tempdir().unwrap();
        let ca = TestCa::new("xds").unwrap();
        let issued = ca.server(pki.path(), "xds").unwrap();
        let (cert, key) = (issued.cert.display().to_string(), issued.key.display().to_string());
        let kubeconfig = kube.admin_kubeconfig.display().to_string();
        let env = [&[("KUBECONFIG", kubeconfig.as_str())][..], env].concat();
        let flags = ["--xds-tls-cert", &cert, "--xds-tls-key", &key, "--xds-auth", "token"];
        let server = Server::start_with_env(manifests.path(), &flags, &env, Stdio::null());
        Self { server, ca, _dirs: [manifests, pki] }
    }

    /// A delta ADS stream from `from` with `token`, subscribed to clusters; its first response
    /// proves it was let in.
    async fn proxy(&self, from: IpAddr, token: &str) -> Result<DeltaClient, tonic::Status> {
        let channel = tls_channel_from(Some(from), self.server.xds, self.ca.pem(), None).await?;
        let mut client = DeltaClient::ads_with_token(channel, token).await?;
        client.subscribe(CDS, &[]).await;
        client.next_within(Duration::from_secs(10)).await?;
        Ok(client)
    }
}

fn loopback(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

/// TokenReviews the API server has answered so far, from its own metrics.
fn api_token_reviews(kube: &KubeServer) -> f64 {
    let text = kube.kubectl(&["get", "--raw", "/metrics"]).unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("resource=\"tokenreviews\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The `index`th bad token of a flood: garbage, an expired token signed by the cluster, or
/// an unexpired one signed by the cluster for a ServiceAccount that does not exist (the
/// API server refuses it, but only a review can tell).
fn bad_token(kube: &KubeServer, index: u64) -> String {
    let claims = |exp: u64| {
        json!({
            "aud": ["edgexds"], "iss": "https://kubernetes.default.svc", "iat": now() - 60, "nbf": now() - 60,
            "exp": exp, "sub": format!("system:serviceaccount:flood:attacker-{index}"),
            "kubernetes.io": {"namespace": "flood", "serviceaccount": {"name": format!("attacker-{index}"), "uid": format!("00000000-0000-0000-0000-{index:012}")}}
        })
    };
    match index % 3 {
        0 => format!("garbage-{index}-{}", "x".repeat(40)),
        1 => kube.forge_token(&claims(now() - 30)).unwrap(),
        _ => kube.forge_token(&claims(now() + 3600)).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_tokens_reaches_the_api_server_at_the_per_address_rate_and_newcomers_get_in_first_try() {
    // A server of its own: its review count is this test's alone.
    let kube = Arc::new(tokio::task::spawn_blocking(KubeServer::start).await.unwrap().unwrap());
    let admin = kube.admin_client().await.unwrap();
    let ns = kube.namespace(&admin).await.unwrap();
    const RATE: f64 = 5.0;
    let edgexds = Arc::new(Secured::start(&kube, &[("EDGEXDS_MAX_TOKEN_REVIEWS_PER_PEER", "5")]));

    // A proxy verified before the flood, and newcomers' tokens, issued before it starts.
    let resident_token = kube.token(&admin, &ns, "resident", &["edgexds"], None).await.unwrap();
    let _resident = edgexds.proxy(loopback(0, 3), &resident_token).await.expect("the resident proxy is let in");
    let mut newcomers = Vec::new();
    for i in 0..10 {
        newcomers.push(kube.token(&admin, &ns, &format!("newcomer-{i}"), &["edgexds"], None).await.unwrap());
    }
    // Enough bad tokens to have filled the old shared cache of 10,000 verdicts.
    let tokens: Arc<Vec<String>> = Arc::new((0..12_000).map(|i| bad_token(&kube, i)).collect());

    let reviews_before = api_token_reviews(&kube);
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    // 16 connections from one address with 16 calls in flight each: 256 at once.
    let mut attackers = Vec::new();
    for _ in 0..16 {
        let channel = tls_channel_from(Some(loopback(0, 2)), edgexds.server.xds, edgexds.ca.pem(), None).await.unwrap();
        for _ in 0..16 {
            let (channel, tokens, sent) = (channel.clone(), tokens.clone(), sent.clone());
            attackers.push(tokio::spawn(async move {
                loop {
                    let index = sent.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(index as usize) else { return };
                    // Refused, by a check, the rate, or a connection closed under it.
                    let let_in = DeltaClient::ads_with_token(channel.clone(), token).await.is_ok();
                    assert!(!let_in, "a bad token is never let in");
                }
            }));
        }
    }
    // Newcomers, each from its own address, one every 300 ms while the flood lasts.
    let mut first_try = 0;
    for (i, token) in newcomers.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match edgexds.proxy(loopback(1, i as u8 + 1), token).await {
            Ok(_) => first_try += 1,
            Err(status) => eprintln!("newcomer {i} refused on its first try: {status}"),
        }
    }
    for attacker in attackers {
        attacker.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let reviews = api_token_reviews(&kube) - reviews_before;
    let flood = tokens.len() as f64;
    eprintln!(
        "flood: {flood:.0} bad tokens in {elapsed:.1} s ({:.0}/s); the API server answered {reviews:.0} TokenReviews ({:.1}/s); {first_try} of {} newcomers let in on their first try",
        flood / elapsed,
        reviews / elapsed,
        newcomers.len()
    );
    assert_eq!(first_try, newcomers.len(), "every newcomer is let in on its first try during the flood");
    // The attacker's budget (a burst, then the rate) and one review per newcomer.
    let allowed = RATE + RATE * elapsed + newcomers.len() as f64;
    assert!(reviews <= allowed, "{reviews} TokenReviews reached the API server; at most {allowed:.0} may");

    // Verified before the flood, still answered from the cache after it.
    let cached = |server: &Server| server.metric("edgexds_auth_token_reviews_total{result=\"cached\"}");
    let before = cached(&edgexds.server);
    let reviews_before = api_token_reviews(&kube);
    edgexds.proxy(loopback(0, 3), &resident_token).await.expect("the resident token still works");
    assert_eq!(cached(&edgexds.server), before + 1.0, "answered from the cache");
    assert_eq!(api_token_reviews(&kube), reviews_before, "no review for a token verified before the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_credentials_are_reaped_and_a_proxy_gets_in_while_they_are_held() {
    let kube = tokio::task::spawn_blocking(KubeServer::shared).await.unwrap();
    let admin = kube.admin_client().await.unwrap();
    let ns = kube.namespace(&admin).await.unwrap();
    let token = kube.token(&admin, &ns, "proxy", &["edgexds"], None).await.unwrap();
    let edgexds = Secured::start(kube, &[("EDGEXDS_UNAUTHENTICATED_GRACE", "3s")]);
    let baseline = edgexds.server.rss_kib();

    // 16 addresses × 128 connections (every slot of the old shared pool), each making one
    // call that is refused for want of credentials, then holding on.
    let mut held = Vec::new();
    for address in 0..16u8 {
        let opened = futures_util::future::join_all((0..128).map(|_| async {
            let channel = tls_channel_from(Some(loopback(2, address + 1)), edgexds.server.xds, edgexds.ca.pem(), None)
                .await
                .ok()?;
            let refused = DeltaClient::ads_with_token(channel.clone(), "not-a-token").await.err()?;
            assert!(
                matches!(refused.code(), tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted),
                "{refused}"
            );
            Some(channel)
        }))
        .await;
        held.extend(opened.into_iter().flatten());
    }
    let while_held = edgexds.server.rss_kib();
    let unauthenticated = edgexds.server.metric("edgexds_xds_unauthenticated_connections");
    assert!(unauthenticated <= 256.0, "{unauthenticated} connections without credentials held");

    eprintln!(
        "RSS: {baseline} KiB before, {while_held} KiB with {unauthenticated} of 2048 connections without credentials held"
    );
    let proxy =
        edgexds.proxy(loopback(0, 3), &token).await.expect("a proxy gets in on its first try while they are held");

    edgexds.server.wait_until("every connection without credentials is reaped", || {
        edgexds.server.metric("edgexds_xds_unauthenticated_connections") == 0.0
    });
    assert_eq!(edgexds.server.metric("edgexds_xds_connections"), 1.0, "only the proxy's connection is left");
    eprintln!("RSS: {} KiB after they were reaped", edgexds.server.rss_kib());
    drop((proxy, held));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pods_token_stops_working_within_the_recheck_bound_and_its_stream_ends() {
    let kube = tokio::task::spawn_blocking(KubeServer::shared).await.unwrap();
    let admin = kube.admin_client().await.unwrap();
    let ns = kube.namespace(&admin).await.unwrap();
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sidecar-0"},
        "spec": {"serviceAccountName": "sidecar", "containers": [{"name": "envoy", "image": "envoy"}]}
    }))
    .unwrap();
    let _ = kube.token(&admin, &ns, "sidecar", &["edgexds"], None).await.unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let token = kube.token(&admin, &ns, "sidecar", &["edgexds"], Some(&pod)).await.unwrap();
    let recheck = Duration::from_secs(2);
    let edgexds = Secured::start(kube, &[("EDGEXDS_TOKEN_RECHECK_INTERVAL", "2s")]);
    let mut stream = edgexds.proxy(loopback(0, 3), &token).await.expect("let in while its pod exists");

    pods.delete("sidecar-0", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    let deleted = Instant::now();
    // The recheck interval, a quarter of it for the background tick, and the API server's own
    // 10 s cache of review answers, with slack for a loaded machine.
    let bound = recheck + recheck / 4 + Duration::from_secs(10) + Duration::from_secs(5);
    let ended = loop {
        match stream.next_within(bound.saturating_sub(deleted.elapsed())).await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    let took = deleted.elapsed();
    eprintln!("the stream of a deleted pod's token ended {took:.1?} after the deletion: {ended}");
    assert_eq!(ended.code(), tonic::Code::Unauthenticated, "{ended}");
    assert!(ended.message().contains("no longer valid"), "{ended}");
    assert!(took < bound, "ended after {took:?}; the bound is {bound:?}");
    let refused = edgexds.proxy(loopback(0, 4), &token).await.err().expect("the token no longer lets anyone in");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_a_node_places_its_client_in_that_nodes_zone_whatever_its_bootstrap_says() {
    use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::Message;
    let kube = tokio::task::spawn_blocking(KubeServer::shared).await.unwrap();
    let admin = kube.admin_client().await.unwrap();
    let ns = kube.namespace(&admin).await.unwrap();
    // The Node the API server binds the token to; its zone comes from the manifests' Node.
    let node_name = format!("{ns}-node");
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone());
    let node = serde_json::from_value(json!({"metadata": {"name": node_name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sidecar-0"},
        "spec": {"serviceAccountName": "sidecar", "nodeName": node_name, "containers": [{"name": "envoy", "image": "envoy"}]}
    }))
    .unwrap();
    let _ = kube.token(&admin, &ns, "sidecar", &["edgexds"], None).await.unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let token = kube.token(&admin, &ns, "sidecar", &["edgexds"], Some(&pod)).await.unwrap();
    let manifests = format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: shop }}
spec:
  trafficDistribution: PreferSameZone
  ports:
  - {{ name: http, port: 80, targetPort: 8080 }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: web-1, namespace: shop, labels: {{ kubernetes.io/service-name: web }} }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints:
- {{ addresses: [10.0.0.1], zone: zone-a }}
- {{ addresses: [10.0.0.2], zone: zone-b }}
---
apiVersion: v1
kind: Node
metadata: {{ name: {node_name}, labels: {{ topology.kubernetes.io/zone: zone-b }} }}
"
    );
    let edgexds = Secured::serving(kube, &[], &manifests);
    let channel = tls_channel_from(Some(loopback(0, 5)), edgexds.server.xds, edgexds.ca.pem(), None).await.unwrap();
    let claims_zone_a = Node {
        id: "sidecar-0".into(),
        locality: Some(Locality { zone: "zone-a".into(), ..Default::default() }),
        ..Default::default()
    };
    let mut client = DeltaClient::ads_with_token(channel, &token).await.unwrap().announcing(claims_zone_a);
    client.subscribe("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", &["web.shop:80"]).await;
    let assignment = loop {
        let response = client.next_within(Duration::from_secs(10)).await.expect("a response");
        if let Some(resource) = response.resources.first().and_then(|r| r.resource.as_ref()) {
            break ClusterLoadAssignment::decode(resource.value.as_slice()).unwrap();
        }
    };
    let first: Vec<String> = assignment
        .endpoints
        .iter()
        .filter(|l| l.priority == 0)
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| format!("{:?}", e.host_identifier))
        .collect();
    assert_eq!(first.len(), 1, "{assignment:?}");
    assert!(first[0].contains("10.0.0.2"), "zone-b's endpoint first, as the token's Node says: {assignment:?}");
    let proxies = edgexds_tests::http::get(&format!("http://{}/debug/proxies", edgexds.server.debug)).await.unwrap();
    let reports: serde_json::Value = serde_json::from_str(&proxies.body).unwrap();
    let place = &reports[0]["place"];
    eprintln!("/debug/proxies shows the client's place as {place}");
    assert_eq!(place["zone"], "zone-b");
    assert_eq!(place["zone_from"], "node-label");
    assert_eq!(place["node"], json!(node_name));
    assert_eq!(place["node_from"], "token");
    nodes.delete(&node_name, &DeleteParams::default()).await.unwrap();
}
