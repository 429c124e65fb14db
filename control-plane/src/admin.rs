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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::cache::Snapshot;

    async fn status(cache: &Arc<SnapshotCache>, path: &str) -> StatusCode {
        let request = Request::get(path).body(Body::empty()).unwrap();
        router(cache.clone()).oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn readyz_turns_ready_with_the_first_snapshot_and_healthz_is_always_ok() {
        let cache = Arc::new(SnapshotCache::default());
        assert_eq!(status(&cache, "/healthz").await, StatusCode::OK);
        assert_eq!(status(&cache, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        cache.publish(Snapshot::default());
        assert_eq!(status(&cache, "/readyz").await, StatusCode::OK);
    }
}
