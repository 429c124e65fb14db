//! A local HTTP upstream that answers with its name and whose /healthz can be flipped to 503.
//!
//! For routing tests, every answer also says what arrived: the path in `x-path`, and each
//! request header whose name starts with `x-` again as `echo-<name>`. A request may ask for
//! a slow answer (`x-delay-ms`, at most 10 s) or a flaky one (`x-fail-every-other`: every
//! other such request is answered 503). It counts the requests it answered ([`Upstream::served`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

pub struct Upstream {
    pub addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    probes: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    name: String,
    healthy: Arc<AtomicBool>,
    probes: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    flaky: Arc<AtomicU64>,
}

impl Upstream {
    /// Binds `ip:port` (port 0 picks one) and serves `name` on every path but /healthz.
    pub async fn start(name: &str, ip: IpAddr, port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind((ip, port)).await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            name: name.to_owned(),
            healthy: Arc::new(AtomicBool::new(true)),
            probes: Arc::new(AtomicU64::new(0)),
            served: Arc::new(AtomicU64::new(0)),
            flaky: Arc::new(AtomicU64::new(0)),
        };
        let (healthy, probes, served) = (shared.healthy.clone(), shared.probes.clone(), shared.served.clone());
        let app = Router::new().route("/healthz", get(healthz)).fallback(answer).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, healthy, probes, served, task })
    }

    /// Two upstreams on `ip`, on ports of their own.
    pub async fn pair_on(ip: IpAddr, first: &str, second: &str) -> (Self, Self) {
        let one = Self::start(first, ip, 0).await.unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let two = Self::start(second, ip, 0).await.unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        (one, two)
    }

    /// Two upstreams on the same port of 127.0.0.1 and 127.0.0.2, as two pods of one Service.
    pub async fn pair(first: &str, second: &str) -> (Self, Self) {
        for _ in 0..50 {
            let one = Self::start(first, [127, 0, 0, 1].into(), 0).await.expect("bind 127.0.0.1");
            if let Ok(two) = Self::start(second, [127, 0, 0, 2].into(), one.addr.port()).await {
                return (one, two);
            }
        }
        panic!("no port free on both 127.0.0.1 and 127.0.0.2");
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::SeqCst)
    }

    /// Requests answered, /healthz aside.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn healthz(State(s): State<Shared>) -> StatusCode {
    s.probes.fetch_add(1, Ordering::SeqCst);
    if s.healthy.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn answer(
    State(s): State<Shared>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> (StatusCode, axum::http::HeaderMap, String) {
    s.served.fetch_add(1, Ordering::SeqCst);
    answer_as(&s.name, &s.flaky, &uri, &headers).await
}

/// `name`, with what arrived echoed in headers (the path in `x-path`, each `x-` header as
/// `echo-<name>`); slow (`x-delay-ms`) or flaky (`x-fail-every-other`, counted in `flaky`)
/// when the request asks. The answer of every test upstream, in-process or in a test pod.
pub async fn answer_as(
    name: &str,
    flaky: &AtomicU64,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut echoed = axum::http::HeaderMap::new();
    if let Ok(path) = axum::http::HeaderValue::from_str(uri.path()) {
        echoed.insert("x-path", path);
    }
    for (header, value) in headers {
        if header.as_str().starts_with("x-")
            && let Ok(echo) = axum::http::HeaderName::from_bytes(format!("echo-{header}").as_bytes())
        {
            echoed.append(echo, value.clone());
        }
    }
    let header = |wanted: &str| headers.get(wanted).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(delay) = header("x-delay-ms").and_then(|d| d.parse::<u64>().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(delay.min(10_000))).await;
    }
    if header("x-fail-every-other").is_some() && flaky.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
        return (StatusCode::SERVICE_UNAVAILABLE, echoed, "flaky".into());
    }
    (StatusCode::OK, echoed, name.to_owned())
}
