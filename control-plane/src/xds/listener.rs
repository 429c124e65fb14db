//! Serves the gRPC router over HTTP/2 connections: small per-stream send buffers,
//! keepalive pings that find vanished Envoys, and a graceful stop.

use std::time::Duration;

use axum::Router;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::shutdown::{self, Shutdown};

/// Bytes HTTP/2 may queue per stream beyond what it can write now. hyper's default (400 kB)
/// let 1,000 slow readers pin hundreds of MB; one response frame is enough to keep a stream busy.
const MAX_SEND_BUF_BYTES: usize = 64 * 1024;

fn http2() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_send_buf_size(MAX_SEND_BUF_BYTES)
        // Detects Envoys that vanished without closing their connection.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Serves every connection from `incoming` until shutdown, then lets open streams end.
pub async fn serve<S, I>(mut incoming: S, router: Router, mut stop: Shutdown)
where
    S: Stream<Item = I> + Unpin,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = http2();
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            connection = incoming.next() => {
                let Some(io) = connection else { break };
                let service = TowerToHyperService::new(router.clone());
                let connection = builder.serve_connection(TokioIo::new(io), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(error = %e, "xDS connection ended with an error");
                    }
                });
            }
            () = shutdown::requested(&mut stop) => break,
        }
    }
    graceful.shutdown().await;
}
