//! The webhook's HTTPS port: AdmissionReviews in, a patch or a refusal out. Only the API
//! server calls it, but anything that reaches the port can: connections, bodies and time
//! are bounded, and a request that is not a Pod review is answered 400, never a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::metrics::{InjectMetrics, Outcome};
use super::mutate::{Decision, decide};
use super::template::SidecarTemplate;
use crate::auth::ServerTls;
use crate::shutdown::{Shutdown, Task};

/// The path the webhook configuration names.
pub const PATH: &str = "/inject";
/// A review at most this large: a pod is at most ~1.5 MiB in etcd.
const MAX_BODY_BYTES: usize = 4 << 20;
/// Connections served at once; the API server keeps a few open.
const MAX_CONNECTIONS: usize = 64;
/// A TLS handshake, and a whole request, must finish within these.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Webhook {
    template: Arc<SidecarTemplate>,
    metrics: InjectMetrics,
}

pub struct WebhookContext {
    pub listener: TcpListener,
    pub tls: ServerTls,
    pub template: SidecarTemplate,
    pub metrics: InjectMetrics,
    pub shutdown: Shutdown,
}

pub fn spawn(context: WebhookContext) -> Task {
    let WebhookContext { listener, tls, template, metrics, mut shutdown } = context;
    info!(hash = %template.hash(), image = %template.image, "sidecar injection webhook serving");
    let router = Router::new()
        .route(PATH, post(review))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Webhook { template: Arc::new(template), metrics: metrics.clone() });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = crate::shutdown::requested(&mut shutdown) => return Ok(()),
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(source) => {
                    warn!(%source, "webhook accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                metrics.connections_refused.inc();
                warn!(%peer, "webhook connection refused: {MAX_CONNECTIONS} open already");
                continue;
            };
            let (acceptor, service) = (tls.https_acceptor(), TowerToHyperService::new(router.clone()));
            let refused = metrics.connections_refused.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                    refused.inc();
                    debug!(%peer, "webhook TLS handshake failed or timed out");
                    return;
                };
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

async fn review(State(webhook): State<Webhook>, body: Bytes) -> Response {
    let started = Instant::now();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async { answer(&webhook, &body) }).await;
    webhook.metrics.observe(started.elapsed());
    match answer {
        Ok(Ok(review)) => axum::Json(review).into_response(),
        Ok(Err(message)) => {
            webhook.metrics.count(Outcome::Invalid);
            (StatusCode::BAD_REQUEST, message).into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out").into_response(),
    }
}

fn answer(webhook: &Webhook, body: &[u8]) -> Result<AdmissionReview<DynamicObject>, String> {
    let review: AdmissionReview<Pod> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview of a Pod: {e}\n"))?;
    let request: AdmissionRequest<Pod> = review.try_into().map_err(|e| format!("no request in the review: {e}\n"))?;
    let response = AdmissionResponse::from(&request);
    let pod = match (&request.operation, &request.object) {
        (Operation::Create, Some(pod)) => pod,
        _ => {
            webhook.metrics.count(Outcome::Left);
            return Ok(response.into_review());
        }
    };
    let response = match decide(pod, &webhook.template) {
        Ok(Decision::Inject(patch)) => match response.clone().with_patch(patch) {
            Ok(patched) => {
                webhook.metrics.count(Outcome::Injected);
                patched
            }
            Err(error) => {
                webhook.metrics.count(Outcome::Refused);
                response.deny(format!("edgexds sidecar injection: the patch does not serialize: {error}"))
            }
        },
        Ok(Decision::Leave(why)) => {
            debug!(namespace = %request.namespace.as_deref().unwrap_or_default(), why, "pod left as it is");
            webhook.metrics.count(Outcome::Left);
            response
        }
        Err(refusal) => {
            webhook.metrics.count(Outcome::Refused);
            response.deny(refusal.message())
        }
    };
    Ok(response.into_review())
}
