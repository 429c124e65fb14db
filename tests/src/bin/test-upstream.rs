//! The process a test pod runs (see `kubelet`): an upstream that says which pod answered.
//!
//! On `--port` (HTTP/1.1 and HTTP/2 without TLS, so gRPC too), on every address of its network
//! namespace:
//! - `GET /healthz`: 200 while ready, 503 when not (what the pod's readiness probe asks);
//! - `POST /admin/ready?to=false` (or `true`): the test flips readiness;
//! - `POST /test.Greeter/Who` (and `/Where`, the same, so routes can tell methods apart): a
//!   gRPC call answered with the pod's name (raw bytes, no proto); `/Flaky` the same, but
//!   every other call is answered UNAVAILABLE (for retries);
//! - `GET /admin/served`: how many requests the fallback below answered;
//! - anything else: the pod's name as the body and in `x-pod`, with what arrived echoed and
//!   slow or flaky answers on request, as every test upstream answers
//!   (`edgexds_tests::upstream::answer_as`).
//!
//! With `--tls-port`, the same over TLS (HTTP/1.1 and HTTP/2 by ALPN), with a certificate
//! made at start for `--tls-name`; with `--echo-port`, a raw TCP echo: the tunnels of a
//! sidecar's CONNECT carry both untouched.
//!
//! The pod's name comes from `POD_NAME`. On SIGTERM it keeps serving for `--drain` (a
//! graceful shutdown, as a well-behaved server does), then exits 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;

struct Pod {
    name: String,
    ready: AtomicBool,
    flaky_calls: AtomicU64,
    /// Requests the fallback answered, and its flaky ones.
    served: AtomicU64,
    flaky: AtomicU64,
}

fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let port: u16 = flag("--port").unwrap_or_else(|| "8080".into()).parse()?;
    let drain = flag("--drain").map(|d| humantime::parse_duration(&d)).transpose()?.unwrap_or(Duration::ZERO);
    let pod = Arc::new(Pod {
        name: std::env::var("POD_NAME").unwrap_or_else(|_| "unnamed".into()),
        ready: AtomicBool::new(true),
        flaky_calls: Default::default(),
        served: Default::default(),
        flaky: Default::default(),
    });
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/admin/ready", post(set_ready))
        .route("/admin/served", get(served))
        .route("/test.Greeter/Who", post(who))
        .route("/test.Greeter/Where", post(who))
        .route("/test.Greeter/Flaky", post(flaky))
        .fallback(hello)
        .with_state(pod.clone());
    if let Some(tls_port) = flag("--tls-port") {
        let acceptor = tls_acceptor(&flag("--tls-name").unwrap_or_else(|| "localhost".into()))?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], tls_port.parse()?))).await?;
        tokio::spawn(serve_tls(listener, acceptor, router.clone()));
    }
    if let Some(echo_port) = flag("--echo-port") {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], echo_port.parse()?))).await?;
        tokio::spawn(echo(listener));
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = serve(&listener, &router) => {}
        _ = term.recv() => {}
    }
    eprintln!("{}: SIGTERM; serving for {drain:?} more", pod.name);
    // A terminating pod still accepts and answers while it drains.
    let _ = tokio::time::timeout(drain, serve(&listener, &router)).await;
    eprintln!("{}: exiting", pod.name);
    Ok(())
}

async fn serve(listener: &tokio::net::TcpListener, router: &Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// A TLS acceptor whose certificate, self-signed, names `name`; it offers h2 and HTTP/1.1.
fn tls_acceptor(name: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tls(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, router: Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(router.clone()));
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else { return };
            let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Sends back every byte it gets, until the client closes.
async fn echo(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let (mut from, mut to) = stream.split();
            let _ = tokio::io::copy(&mut from, &mut to).await;
        });
    }
}

async fn healthz(State(pod): State<Arc<Pod>>) -> StatusCode {
    if pod.ready.load(Ordering::Relaxed) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

#[derive(serde::Deserialize)]
struct Ready {
    to: bool,
}

async fn set_ready(State(pod): State<Arc<Pod>>, Query(ready): Query<Ready>) -> StatusCode {
    pod.ready.store(ready.to, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn hello(
    State(pod): State<Arc<Pod>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> (StatusCode, HeaderMap, String) {
    pod.served.fetch_add(1, Ordering::SeqCst);
    let (status, mut answered, body) = edgexds_tests::upstream::answer_as(&pod.name, &pod.flaky, &uri, &headers).await;
    if let Ok(value) = HeaderValue::from_str(&pod.name) {
        answered.insert("x-pod", value);
    }
    (status, answered, body)
}

async fn served(State(pod): State<Arc<Pod>>) -> String {
    pod.served.load(Ordering::SeqCst).to_string()
}

/// Every other call fails UNAVAILABLE, trailers-only, as a server shedding load answers.
async fn flaky(State(pod): State<Arc<Pod>>) -> Response<Body> {
    if pod.flaky_calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
        return who(State(pod)).await;
    }
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from_static("14"));
    headers.insert("grpc-message", HeaderValue::from_static("flaky"));
    response
}

/// One gRPC message, the pod's name, then `grpc-status: 0`.
async fn who(State(pod): State<Arc<Pod>>) -> Response<Body> {
    let mut message = vec![0u8];
    message.extend_from_slice(&(pod.name.len() as u32).to_be_bytes());
    message.extend_from_slice(pod.name.as_bytes());
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames: [Result<Frame<Bytes>, Infallible>; 2] =
        [Ok(Frame::data(Bytes::from(message))), Ok(Frame::trailers(trailers))];
    let body = Body::new(StreamBody::new(futures_util::stream::iter(frames)));
    let mut response = Response::new(body);
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    response
}
