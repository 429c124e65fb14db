//! The two HTTP servers beside xDS: the admin port (health, readiness, metrics), which
//! kubelet and Prometheus must reach, and the debug port (every proxy's state, the model,
//! HDS, the log level), which only an operator should, so it listens on loopback unless
//! told otherwise.

mod debug;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, put};

use crate::cache::SnapshotCache;
use crate::error::Error;
use crate::hds::HdsHub;
use crate::ops::metrics::MetricsRegistry;
use crate::shutdown::{Shutdown, Task};
use crate::xds::ProxyRegistry;

#[derive(Clone)]
pub struct AdminState {
    pub cache: Arc<SnapshotCache>,
    pub metrics: Arc<MetricsRegistry>,
    pub proxies: Arc<ProxyRegistry>,
    pub models: crate::pipeline::ModelReceiver,
    pub hds: Option<Arc<HdsHub>>,
}

/// Serves `router` on `listener` until shutdown; `what` names it in errors.
pub fn spawn(what: &'static str, listener: tokio::net::TcpListener, router: Router, mut shutdown: Shutdown) -> Task {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { crate::shutdown::requested(&mut shutdown).await })
            .await
            .map_err(|source| Error::Serve { what, source })
    })
}

/// The admin port: nothing on it reveals or changes more than health and metrics.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The debug port.
pub fn debug_router(state: AdminState) -> Router {
    Router::new()
        .route("/debug/proxies", get(debug::proxies))
        .route("/debug/resources", get(debug::resources))
        .route("/debug/model", get(debug::model))
        .route("/debug/hds", get(debug::hds))
        .route("/debug/log-level", put(log_level).get(current_log_level))
        .with_state(state)
}

/// Ready once the first full state is translated; stays ready afterwards, even if the source goes quiet.
async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.cache.current().is_some() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first full state of the source\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

/// Body: a `tracing` filter such as `debug` or `info,edgexds::xds=debug`.
async fn log_level(body: String) -> (StatusCode, String) {
    match crate::ops::telemetry::set_filter(body.trim()) {
        Ok(filter) => (StatusCode::OK, format!("log level set to {filter}\n")),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn current_log_level() -> (StatusCode, String) {
    match crate::ops::telemetry::current_filter() {
        Some(filter) => (StatusCode::OK, format!("{filter}\n")),
        None => (StatusCode::NOT_FOUND, "logging is not managed by edgexds in this process\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::cache::Snapshot;

    fn state() -> AdminState {
        AdminState {
            cache: Arc::new(SnapshotCache::default()),
            metrics: Arc::default(),
            proxies: Arc::default(),
            models: tokio::sync::watch::channel(None).1,
            hds: None,
        }
    }

    async fn status(state: &AdminState, path: &str) -> StatusCode {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let router = if path.starts_with("/debug/") { debug_router(state.clone()) } else { router(state.clone()) };
        router.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_admin_port_serves_no_debug_view_and_the_debug_port_no_health() {
        let state = state();
        for path in ["/debug/proxies", "/debug/model", "/debug/resources?type=cds", "/debug/hds", "/debug/log-level"] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            assert_eq!(router(state.clone()).oneshot(request).await.unwrap().status(), StatusCode::NOT_FOUND, "{path}");
        }
        let request = Request::put("/debug/log-level").body(Body::from("debug")).unwrap();
        assert_eq!(router(state.clone()).oneshot(request).await.unwrap().status(), StatusCode::NOT_FOUND);
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        assert_eq!(debug_router(state).oneshot(request).await.unwrap().status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn readyz_turns_ready_with_the_first_snapshot_and_healthz_is_always_ok() {
        let state = state();
        assert_eq!(status(&state, "/healthz").await, StatusCode::OK);
        assert_eq!(status(&state, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        state.cache.publish(Snapshot::default());
        assert_eq!(status(&state, "/readyz").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn debug_hds_says_when_hds_is_off_and_shows_the_hub_when_on() {
        let mut state = state();
        assert_eq!(status(&state, "/debug/hds").await, StatusCode::NOT_FOUND);
        state.hds = Some(HdsHub::new(crate::hds::HdsConfig::default(), Default::default()));
        assert_eq!(status(&state, "/debug/hds").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn debug_resources_rejects_unknown_types_and_names() {
        let state = state();
        state.cache.publish(Snapshot::default());
        assert_eq!(status(&state, "/debug/resources?type=sds").await, StatusCode::BAD_REQUEST);
        assert_eq!(status(&state, "/debug/resources?type=cds&name=nope").await, StatusCode::NOT_FOUND);
        assert_eq!(status(&state, "/debug/resources?type=eds").await, StatusCode::OK);
    }
}
