//! The admin HTTP server: liveness and readiness.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::cache::SnapshotCache;

pub fn router(cache: Arc<SnapshotCache>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(readyz)).with_state(cache)
}

/// Ready once the first full state is translated; stays ready afterwards, even if the source goes quiet.
async fn readyz(State(cache): State<Arc<SnapshotCache>>) -> (StatusCode, &'static str) {
    if cache.current().is_some() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first full state of the source\n")
    }
}
