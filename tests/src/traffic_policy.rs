//! The traffic-policy scenario every source must pass, through a real sidecar Envoy: the
//! README's canary route with a rule per feature, and the checks that each acts as the
//! route says. `tests/envoy_traffic_policy.rs` runs it from a manifests file on local
//! upstreams, `tests/cluster_routes.rs` with kubectl on a real cluster's pods.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::eventually;

const SETTLE: Duration = Duration::from_secs(30);
const SPLIT_REQUESTS: usize = 1000;

/// The canary example of the README, and a rule per feature.
const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: NAMESPACE }
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

/// The route in `namespace`; without its retry rule where the Standard channel's CRDs are
/// installed (retry is Experimental at v1.6.3, and the API server refuses it).
pub fn route(namespace: &str, retry: bool) -> String {
    let route = ROUTE.replace("NAMESPACE", namespace);
    if retry {
        return route;
    }
    let retry_rule = "  - matches: [{ path: { type: PathPrefix, value: /flaky } }]\n    retry: { codes: [503], attempts: 2 }\n    backendRefs: [{ name: web, port: 80 }]\n";
    route.replace(retry_rule, "")
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// GET `url` through the sidecar at `proxy`, with `headers`.
pub async fn get(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Option<Reply> {
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

/// Waits until the route is in force at `proxy`: the header match reaches the canary.
pub async fn in_force(proxy: SocketAddr, host: &str) {
    let url = format!("http://{host}/");
    eventually(SETTLE, "the route is in force", || async {
        get(proxy, &url, &[("x-canary", "yes")]).await.filter(|r| r.body == "web-v2").map(|_| ())
    })
    .await;
}

/// The 90/10 split sends the canary its share of 1,000 requests, within a binomial tolerance.
pub async fn weighted_split(proxy: SocketAddr, host: &str) {
    let url = format!("http://{host}/");
    let mut canary = 0;
    for _ in 0..SPLIT_REQUESTS {
        let reply = get(proxy, &url, &[]).await.expect("an answer");
        assert_eq!(reply.status, 200);
        canary += usize::from(reply.body == "web-v2");
    }
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; 4.5 of them either way is
    // 57..143, which a correct split leaves about once in 150,000 runs.
    eprintln!("90/10 split: {canary} of {SPLIT_REQUESTS} to the canary (expected 100, tolerance 57..143)");
    assert!((57..=143).contains(&canary), "{canary} of {SPLIT_REQUESTS}");
}

/// Rewrite, timeout, retry (when the route has it), header modifiers and mirror each act as
/// the route says; `mirrored` counts what the mirror target has answered.
pub async fn acts_as_the_route_says<F, Fut>(proxy: SocketAddr, host: &str, retry: bool, mirrored: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = u64>,
{
    let url = |path: &str| format!("http://{host}{path}");
    let rewritten = get(proxy, &url("/old/page"), &[]).await.expect("an answer");
    assert_eq!(rewritten.header("x-path"), Some("/new/page"), "prefix rewrite");

    let started = Instant::now();
    let slow = get(proxy, &url("/slow"), &[("x-delay-ms", "3000")]).await.expect("an answer");
    let took = started.elapsed();
    eprintln!("  a 3 s backend behind a 500 ms request timeout: {} after {took:.2?}", slow.status);
    assert_eq!(slow.status, 504);
    assert!(took < Duration::from_millis(2500), "timed out at the route's timeout, not the backend's pace");

    if retry {
        for _ in 0..6 {
            let flaky = get(proxy, &url("/flaky"), &[("x-fail-every-other", "1")]).await.expect("an answer");
            assert_eq!((flaky.status, flaky.body.as_str()), (200, "web-v1"), "the retry answers what failed");
        }
    }

    let modified = get(proxy, &url("/headers"), &[("x-removed", "gone")]).await.expect("an answer");
    assert_eq!(modified.header("echo-x-added"), Some("1"), "set on the way in: {:?}", modified.headers);
    assert_eq!(modified.header("echo-x-removed"), None, "removed on the way in");
    assert_eq!(modified.header("x-route"), Some("web"), "added on the way out");

    let before = mirrored().await;
    assert_eq!(get(proxy, &url("/mirror"), &[]).await.map(|r| r.body), Some("web-v1".to_owned()));
    eventually(SETTLE, "the mirror target gets the copy", || async { (mirrored().await > before).then_some(()) }).await;
}
