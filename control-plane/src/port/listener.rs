//! Serves the gRPC router over HTTP/2 connections: TLS when configured, authentication of
//! every request, the request layer in front of every service, small per-stream send
//! buffers, keepalive pings that find vanished Envoys, a graceful stop, and the per-client
//! connection limits (connections per peer and in total, streams per connection, and a
//! deadline for a new connection's TLS handshake and first request).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::ServiceExt;
use tracing::debug;

use super::connections::{Connections, Slot};
use super::limits::{Limit, Limits};
use super::metrics::PortMetrics;
use super::request_layer::RequestLimits;
use super::stream_body::{Places, StreamBody, StreamCount};
use crate::auth::{AuthFailure, Authenticated, Identity, Security, authenticator};
use crate::shutdown::{self, Shutdown};

/// Bytes HTTP/2 may queue per stream beyond what it can write now. hyper's default (400 kB)
/// let 1,000 slow readers pin hundreds of MB; one response frame is enough to keep a stream busy.
const MAX_SEND_BUF_BYTES: usize = 64 * 1024;
/// What a client may send on one stream, and on one connection, before we read it. What
/// arrives beyond what the streams have read waits in the connection's read buffer, which
/// never shrinks: at 256 KiB / 1 MiB, a reconnect storm left 95 kB of it on each of 100
/// connections, and at these windows a 1,000-client sync still leaves about 75 kB (h2
/// reserves a whole frame ahead; hyper offers no bound on it). Requests are small; a 4 MiB
/// list of versions takes a few window updates.
const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 256 * 1024;
/// Request headers, at most (gRPC's metadata; Envoy sends well under 1 KiB).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Connections refused with a status at once; beyond, refused ones are simply closed.
const MAX_REFUSING: usize = 64;

fn http2(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_send_buf_size(MAX_SEND_BUF_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        // Past our own count (which answers with a status), HTTP/2 refuses streams itself.
        .max_concurrent_streams(
            u32::try_from(limits.get(Limit::StreamsPerConnection)).unwrap_or(u32::MAX).saturating_mul(2),
        )
        // Detects Envoys that vanished without closing their connection.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// The router behind one connection: each request is authenticated, counted against the
/// connection's streams, and (once let in) holds the connection open while it lasts.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    streams: Arc<AtomicU32>,
    limits: Limits,
    /// Every request body is read through it.
    requests: Arc<RequestLimits>,
    /// Set by the first request, so a silent connection can be closed.
    spoke: Arc<AtomicBool>,
    metrics: PortMetrics,
    security: Security,
    /// The identity in the client's verified certificate.
    certificate: Option<Identity>,
    peer: Option<IpAddr>,
    /// The connection's place, or the limit that refused it one (its requests are answered
    /// with that refusal and nothing else).
    admission: Result<Arc<Slot>, Limit>,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.spoke.store(true, Ordering::Relaxed);
        // Counted here, in the order the streams arrive, not in the order their tasks run.
        let count = StreamCount::take(&self.streams, self.limits.get(Limit::StreamsPerConnection));
        let this = self.clone();
        Box::pin(async move { Ok(this.answer(request, count).await) })
    }
}

impl ConnectionService {
    async fn answer(self, mut request: Request<Incoming>, count: Option<StreamCount>) -> Response<Body> {
        let slot = match &self.admission {
            Ok(slot) => slot,
            Err(limit) => return self.limits.refusal(*limit, "").status.into_http(),
        };
        let refuse = |limit: Limit| {
            self.metrics.limit_hits.hit(limit);
            self.limits.refusal(limit, "").status.into_http()
        };
        let Some(count) = count else {
            return refuse(Limit::StreamsPerConnection);
        };
        let auth = &self.security.auth;
        let mut revocation = None;
        let holds = if authenticator::exempt(request.uri().path()) {
            // gRPC health proves nothing, so it holds the connection only when nothing need be proven.
            !auth.enforced()
        } else {
            match auth.authenticate(self.certificate.as_ref(), request.headers(), self.peer).await {
                Ok(Some(Authenticated { identity, revocation: revoked })) => {
                    revocation = revoked.map(|revoked| (revoked, identity.clone()));
                    // Services read who is calling from the request's extensions.
                    request.extensions_mut().insert(identity);
                }
                Ok(None) => {}
                Err(AuthFailure::Refused(status)) => return status.into_http(),
                Err(AuthFailure::RateLimited) => return refuse(Limit::TokenReviewsPerPeer),
            }
            true
        };
        let held = match holds {
            true => match slot.prove() {
                Ok(()) => Some(slot.hold()),
                Err(limit) => return refuse(limit),
            },
            false => None,
        };
        let requests = self.requests.clone();
        let response = match self.router.oneshot(request.map(|body| Body::new(requests.wrap(body)))).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        // The stream keeps its places until its response body (the whole stream) is dropped.
        response.map(|body| Body::new(StreamBody::new(body, Places { count, held }, revocation)))
    }
}

/// What the port serves, under which limits and security.
pub struct Serving {
    /// Every gRPC service on the port.
    pub router: Router,
    pub limits: Limits,
    pub metrics: PortMetrics,
    pub security: Security,
    pub shutdown: Shutdown,
}

impl Serving {
    /// Serves every connection from `incoming` (with its peer address, when it has one)
    /// until shutdown, then lets open streams end.
    pub async fn serve<S, I>(self, incoming: S)
    where
        S: Stream<Item = (I, Option<IpAddr>)> + Unpin,
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self { router, limits, metrics, security, shutdown } = self;
        serve(incoming, router, shutdown, limits, metrics, security).await;
    }
}

async fn serve<S, I>(
    mut incoming: S,
    router: Router,
    mut shutdown: Shutdown,
    limits: Limits,
    metrics: PortMetrics,
    security: Security,
) where
    S: Stream<Item = (I, Option<IpAddr>)> + Unpin,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = http2(&limits);
    let graceful = GracefulShutdown::new();
    let connections = Connections::new(limits, metrics.clone());
    let refusing = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(RequestLimits::new(limits, metrics.clone()));
    loop {
        tokio::select! {
            connection = incoming.next() => {
                let Some((io, peer)) = connection else { break };
                let admission = match connections.admit(peer) {
                    Ok(slot) => Ok(Arc::new(slot)),
                    Err(limit) => {
                        metrics.limit_hits.hit(limit);
                        if refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
                            refusing.fetch_sub(1, Ordering::AcqRel);
                            continue;
                        }
                        debug!(?peer, "{}", limits.refusal(limit, "").status.message());
                        Err(limit)
                    }
                };
                let spoke = Arc::new(AtomicBool::new(false));
                let mut service = ConnectionService {
                    router: router.clone(),
                    streams: Arc::default(),
                    limits,
                    requests: requests.clone(),
                    spoke: spoke.clone(),
                    metrics: metrics.clone(),
                    security: security.clone(),
                    certificate: None,
                    peer,
                    admission: admission.clone(),
                };
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                let tls = security.tls.as_ref().map(|tls| tls.acceptor());
                let metrics_for_tls = metrics.clone();
                // The TLS handshake runs in the connection's task, under the same deadline as
                // the first request, so a client that stalls it holds up nobody else.
                let connection = async move {
                    match tls {
                        None => watcher.watch(builder.serve_connection(TokioIo::new(io), service).into_owned()).await,
                        Some(acceptor) => match acceptor.accept(io).await {
                            Ok(stream) => {
                                service.certificate = crate::auth::tls::peer_identity(stream.get_ref().1);
                                watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await
                            }
                            Err(e) => {
                                metrics_for_tls.tls_handshake_failures.inc();
                                debug!(error = %e, "xDS TLS handshake failed");
                                Ok(())
                            }
                        },
                    }
                };
                let (refusing, metrics, limits) = (refusing.clone(), metrics.clone(), limits);
                tokio::spawn(async move {
                    let closing = closing(&admission, &spoke, &limits);
                    tokio::select! {
                        ended = connection => if let Err(e) = ended {
                            debug!(error = %e, "xDS connection ended with an error");
                        },
                        limit = closing => if let Some(limit) = limit {
                            metrics.limit_hits.hit(limit);
                            debug!(?peer, "closing an xDS connection: {}", limits.refusal(limit, "").status.message());
                        },
                    }
                    if admission.is_err() {
                        refusing.fetch_sub(1, Ordering::AcqRel);
                    }
                });
            }
            () = shutdown::requested(&mut shutdown) => break,
        }
    }
    graceful.shutdown().await;
}

/// Resolves when the connection must close, with the limit that closes it: it sent no
/// request in time, had no stream holding it for the grace period, or gave its place to a
/// newcomer. A refused connection goes once it has had time to read its answer.
async fn closing(admission: &Result<Arc<Slot>, Limit>, spoke: &AtomicBool, limits: &Limits) -> Option<Limit> {
    let handshake = limits.duration(Limit::HandshakeTimeout);
    let Ok(slot) = admission else {
        tokio::time::sleep(handshake).await;
        return None;
    };
    let silent = async {
        tokio::time::sleep(handshake).await;
        if spoke.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = silent => Some(Limit::HandshakeTimeout),
        () = slot.idle(limits.duration(Limit::UnauthenticatedGrace)) => Some(Limit::UnauthenticatedGrace),
        // Counted when the newcomer took the place.
        () = slot.evicted() => None,
    }
}
