//! Gateway API HTTPRoutes on a Service, from a manifests file, through a real sidecar Envoy
//! (delta and state-of-the-world ADS): a weighted canary split, a header match to a second
//! Service, a prefix rewrite, a request timeout, a retry over a flaky backend, request and
//! response header modifiers seen at both ends, and a mirror whose target gets the copies.
//! And for a proxyless client (grpcio's own xDS resolver), the route's retry retries a gRPC
//! method failing UNAVAILABLE (gRFC A44). Retry is Experimental at v1.6.3, so it is tested
//! here, from a file: the test cluster installs the Standard channel's CRDs, which refuse it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgexds::translate::TranslateOptions;
use edgexds_tests::control_plane::{ControlPlane, service_yaml};
use edgexds_tests::envoy::{Envoy, sidecar_bootstrap};
use edgexds_tests::eventually;
use edgexds_tests::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SETTLE: Duration = Duration::from_secs(30);
const SPLIT_REQUESTS: usize = 1000;

/// The canary example of the README, and a rule per feature.
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: shop }
spec:
  parentRefs: [{ group: '', kind: Service, name: web, port: 80 }]
  rules:
  - matches: [{ headers: [{ name: x-canary, value: 'yes' }] }]
    backendRefs: [{ name: web-v2, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /old } }]
    filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } } }]
    backendRefs: [{ name: web, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /slow } }]
    timeouts: { request: 500ms }
    backendRefs: [{ name: web, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /flaky } }]
    retry: { codes: [503], attempts: 2 }
    backendRefs: [{ name: web, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /headers } }]
    filters:
    - { type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-added, value: '1' }], remove: [x-removed] } }
    - { type: ResponseHeaderModifier, responseHeaderModifier: { add: [{ name: x-route, value: web }] } }
    backendRefs: [{ name: web, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /mirror } }]
    filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: shadow, port: 80 } } }]
    backendRefs: [{ name: web, port: 80 }]
  - backendRefs: [{ name: web, port: 80, weight: 90 }, { name: web-v2, port: 80, weight: 10 }]
";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// GET `url` through the sidecar at `proxy`, with `headers`.
async fn get(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    let host = url.strip_prefix("http://")?.split('/').next()?;
    let mut stream = tokio::net::TcpStream::connect(proxy).await.ok()?;
    let extra: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines.filter_map(|l| l.split_once(": ")).map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
    Some(Reply { status, headers, body: body.to_owned() })
}

async fn start(api_type: &str) -> (ControlPlane, SocketAddr, [Upstream; 3], Envoy) {
    let outbound: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let options = TranslateOptions { outbound_listener: outbound, ..Default::default() };
    let web = Upstream::start("web-v1", [127, 0, 0, 1].into(), 0).await.unwrap();
    let canary = Upstream::start("web-v2", [127, 0, 0, 1].into(), 0).await.unwrap();
    let shadow = Upstream::start("shadow", [127, 0, 0, 1].into(), 0).await.unwrap();
    let cp = ControlPlane::start(options).await.expect("control plane starts");
    let services = [("web", &web), ("web-v2", &canary), ("shadow", &shadow)]
        .map(|(name, upstream)| service_yaml(name, 80, upstream))
        .join("---\n");
    cp.write("services.yaml", &services);
    cp.write("route.yaml", ROUTE);
    let envoy = Envoy::start_with(sidecar_bootstrap(cp.xds_addr(), api_type)).await.expect("envoy starts");
    // The route is in force once the header match reaches the canary.
    eventually(SETTLE, "the route is in force", || async {
        get(outbound, "http://web.shop/", &[("x-canary", "yes")]).await.filter(|r| r.body == "web-v2").map(|_| ())
    })
    .await;
    (cp, outbound, [web, canary, shadow], envoy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_sends_its_share_to_the_canary_within_binomial_tolerance() {
    let (_cp, proxy, _upstreams, _envoy) = start("DELTA_GRPC").await;
    let mut canary = 0;
    for _ in 0..SPLIT_REQUESTS {
        let reply = get(proxy, "http://web.shop/", &[]).await.expect("an answer");
        assert_eq!(reply.status, 200);
        canary += usize::from(reply.body == "web-v2");
    }
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; 4.5 of them either way is
    // 57..143, which a correct split leaves about once in 150,000 runs.
    eprintln!("90/10 split: {canary} of {SPLIT_REQUESTS} to the canary (expected 100, tolerance 57..143)");
    assert!((57..=143).contains(&canary), "{canary} of {SPLIT_REQUESTS}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_rewrites_timeouts_retries_header_modifiers_and_mirrors_act_as_the_route_says() {
    for api_type in ["DELTA_GRPC", "GRPC"] {
        let (_cp, proxy, [_web, _canary, shadow], _envoy) = start(api_type).await;
        eprintln!("sidecar over {api_type}");

        let rewritten = get(proxy, "http://web.shop/old/page", &[]).await.expect("an answer");
        assert_eq!(rewritten.header("x-path"), Some("/new/page"), "prefix rewrite");

        let started = Instant::now();
        let slow = get(proxy, "http://web.shop/slow", &[("x-delay-ms", "3000")]).await.expect("an answer");
        let took = started.elapsed();
        eprintln!("  a 3 s backend behind a 500 ms request timeout: {} after {took:.2?}", slow.status);
        assert_eq!(slow.status, 504);
        assert!(took < Duration::from_millis(2500), "timed out at the route's timeout, not the backend's pace");

        for _ in 0..6 {
            let flaky = get(proxy, "http://web.shop/flaky", &[("x-fail-every-other", "1")]).await.expect("an answer");
            assert_eq!((flaky.status, flaky.body.as_str()), (200, "web-v1"), "the retry answers what failed");
        }

        let modified = get(proxy, "http://web.shop/headers", &[("x-removed", "gone")]).await.expect("an answer");
        assert_eq!(modified.header("echo-x-added"), Some("1"), "set on the way in: {:?}", modified.headers);
        assert_eq!(modified.header("echo-x-removed"), None, "removed on the way in");
        assert_eq!(modified.header("x-route"), Some("web"), "added on the way out");

        let before = shadow.served();
        assert_eq!(get(proxy, "http://web.shop/mirror", &[]).await.map(|r| r.body), Some("web-v1".to_owned()));
        eventually(SETTLE, "the mirror target gets the copy", || async { (shadow.served() > before).then_some(()) })
            .await;
    }
}

const FLAKY: &str = "apiVersion: v1
kind: Service
metadata: { name: flaky, namespace: shop }
spec: { ports: [{ name: grpc, port: 80, appProtocol: grpc }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: flaky-1, namespace: shop, labels: { kubernetes.io/service-name: flaky } }
addressType: IPv4
ports: [{ name: grpc, port: PORT, protocol: TCP }]
endpoints: [{ addresses: ['127.0.0.1'], conditions: { ready: true } }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: flaky, namespace: shop }
spec:
  parentRefs: [{ group: '', kind: Service, name: flaky, port: 80 }]
  rules:
  - backendRefs: [{ name: flaky, port: 80 }]
    retry: { codes: [503], attempts: 2, backoff: 10ms }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_retry_makes_a_grpc_method_failing_every_other_call_succeed_for_a_proxyless_client() {
    let port = edgexds_tests::binary::free_port();
    let _upstream = tokio::process::Command::new(edgexds_tests::binary::sibling("test-upstream"))
        .args(["--port", &port.to_string()])
        .env("POD_NAME", "flaky-1")
        .kill_on_drop(true)
        .spawn()
        .expect("test-upstream starts");
    let cp = ControlPlane::start(TranslateOptions::default()).await.expect("control plane starts");
    let dir = tempfile::tempdir().unwrap();
    let bootstrap =
        edgexds_tests::traffic::grpc_bootstrap(dir.path(), &[cp.running.xds_addr], "proxyless-retry", "zone-a")
            .unwrap();
    let env = vec![("GRPC_XDS_BOOTSTRAP".to_owned(), bootstrap.display().to_string())];
    let call = || edgexds_tests::proxied::grpcio_call("xds:///flaky.shop:80", "/test.Greeter/Flaky", &env);
    // Without the route: the pod's first Flaky call fails, as every other one would.
    cp.write(
        "flaky.yaml",
        FLAKY.replace("PORT", &port.to_string()).split("\n---\napiVersion: gateway").next().unwrap(),
    );
    let (first, _) = eventually(SETTLE, "the upstream answers, the first call failing", || async {
        call().await.err().filter(|e| e.to_string().contains("UNAVAILABLE: flaky"))
    })
    .await;
    eprintln!("without a retry: {first}");

    cp.write("flaky.yaml", &FLAKY.replace("PORT", &port.to_string()));
    eventually(SETTLE, "four calls in a row answered, each failure retried", || async {
        for _ in 0..4 {
            if call().await.ok()? != "flaky-1" {
                return None;
            }
        }
        Some(())
    })
    .await;
}
