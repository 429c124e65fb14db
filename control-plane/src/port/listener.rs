//! Serves the gRPC router over HTTP/2 connections: TLS when configured, authentication of
//! every request, the request layer in front of every service, small per-stream send
//! buffers, keepalive pings that find vanished Envoys, a graceful stop, and the per-client
//! connection limits (connections per peer and in total, streams per connection, and a
//! deadline for a new connection's TLS handshake and first request).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::Status;
use tower::ServiceExt;
use tracing::debug;

use super::limits::{Limit, Limits};
use super::metrics::PortMetrics;
use super::request_layer::RequestLimits;
use crate::auth::{Identity, Security, authenticator};
use crate::shutdown::{self, Shutdown};

/// Bytes HTTP/2 may queue per stream beyond what it can write now. hyper's default (400 kB)
/// let 1,000 slow readers pin hundreds of MB; one response frame is enough to keep a stream busy.
const MAX_SEND_BUF_BYTES: usize = 64 * 1024;
/// What a client may send on one stream before we read it; requests are small.
const STREAM_WINDOW_BYTES: u32 = 256 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
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

/// Open connections, in total and by peer address.
#[derive(Default)]
struct Connections {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refusing: std::sync::atomic::AtomicUsize,
}

/// Holds a connection's place in [`Connections`] until the connection ends.
struct Admitted {
    connections: Arc<Connections>,
    peer: Option<IpAddr>,
    metrics: PortMetrics,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = crate::lock::lock(&self.connections.open);
        open.0 -= 1;
        if let Some(peer) = self.peer
            && let Some(count) = open.1.get_mut(&peer)
        {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&peer);
            }
        }
        self.metrics.connections.dec();
    }
}

impl Connections {
    fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        limits: &Limits,
        metrics: &PortMetrics,
    ) -> Result<Admitted, Limit> {
        let mut open = crate::lock::lock(&self.open);
        if open.0 >= limits.usize(Limit::Connections) {
            return Err(Limit::Connections);
        }
        if let Some(peer) = peer {
            let count = open.1.entry(peer).or_default();
            if *count >= limits.usize(Limit::ConnectionsPerPeer) {
                return Err(Limit::ConnectionsPerPeer);
            }
            *count += 1;
        }
        open.0 += 1;
        metrics.connections.inc();
        Ok(Admitted { connections: self.clone(), peer, metrics: metrics.clone() })
    }
}

/// The router behind one connection, counting its streams against the limit.
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
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.spoke.store(true, Ordering::Relaxed);
        if u64::from(self.streams.fetch_add(1, Ordering::AcqRel)) >= self.limits.get(Limit::StreamsPerConnection) {
            self.streams.fetch_sub(1, Ordering::AcqRel);
            self.metrics.limit_hits.hit(Limit::StreamsPerConnection);
            let status = self.limits.refusal(Limit::StreamsPerConnection, "").status;
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let open = StreamCount(self.streams.clone());
        let router = self.router.clone();
        let requests = self.requests.clone();
        let (auth, certificate) = (self.security.auth.clone(), self.certificate.clone());
        Box::pin(async move {
            let mut request = request;
            if !authenticator::exempt(request.uri().path()) {
                match auth.authenticate(certificate.as_ref(), request.headers()).await {
                    // Services read who is calling from the request's extensions.
                    Ok(Some(identity)) => drop(request.extensions_mut().insert(identity)),
                    Ok(None) => {}
                    Err(status) => return Ok(status.into_http()),
                }
            }
            let response = router.oneshot(request.map(|body| Body::new(requests.wrap(body)))).await?;
            // The stream counts until its response body (the whole xDS stream) is dropped.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _held = &open;
                    frame
                }))
            }))
        })
    }
}

struct StreamCount(Arc<AtomicU32>);

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    let connections = Arc::new(Connections::default());
    let requests = Arc::new(RequestLimits::new(limits, metrics.clone()));
    loop {
        tokio::select! {
            connection = incoming.next() => {
                let Some((io, peer)) = connection else { break };
                let (router, admitted) = match connections.admit(peer, &limits, &metrics) {
                    Ok(admitted) => (router.clone(), Some(admitted)),
                    Err(limit) => {
                        let message = limits.refusal(limit, "").status.message().to_owned();
                        metrics.limit_hits.hit(limit);
                        if connections.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
                            connections.refusing.fetch_sub(1, Ordering::AcqRel);
                            continue;
                        }
                        debug!(?peer, "{message}");
                        (refusing_router(message), None)
                    }
                };
                let spoke = Arc::new(AtomicBool::new(false));
                let mut service = ConnectionService {
                    router,
                    streams: Arc::default(),
                    limits,
                    requests: requests.clone(),
                    spoke: spoke.clone(),
                    metrics: metrics.clone(),
                    security: security.clone(),
                    certificate: None,
                };
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                let tls = security.tls.as_ref().map(|tls| tls.acceptor());
                let handshake = limits.duration(Limit::HandshakeTimeout);
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
                let refusals = connections.clone();
                let metrics_for_task = metrics.clone();
                tokio::spawn(async move {
                    let refused = admitted.is_none();
                    let silent = async {
                        tokio::time::sleep(handshake).await;
                        // A refused connection has had its answer by now.
                        if spoke.load(Ordering::Relaxed) && !refused {
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        ended = connection => if let Err(e) = ended {
                            debug!(error = %e, "xDS connection ended with an error");
                        },
                        () = silent => if !refused {
                            metrics_for_task.limit_hits.hit(Limit::HandshakeTimeout);
                            debug!(?peer, after = ?handshake, "closing an xDS connection that sent no request");
                        },
                    }
                    if refused {
                        refusals.refusing.fetch_sub(1, Ordering::AcqRel);
                    }
                    drop(admitted);
                });
            }
            () = shutdown::requested(&mut shutdown) => break,
        }
    }
    graceful.shutdown().await;
}

/// Answers every request on a connection over a limit with `message`.
fn refusing_router(message: String) -> Router {
    Router::new().fallback(move || {
        let message = message.clone();
        async move { Status::resource_exhausted(message).into_http::<Body>() }
    })
}
