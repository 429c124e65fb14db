//! The xDS routes: ADS, CDS, EDS, LDS and RDS, delta and state of the world, framed by [`super::grpc`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::Response;
use axum::routing::post;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::StreamKind;
use super::grpc::{RequestBudget, decode_requests, status_response, streaming_response};
use super::limits::XdsLimits;
use super::metrics::XdsMetrics;
use super::proxies::ProxyRegistry;
use super::stream::{StreamEnv, XdsRequest, run_stream};
use crate::cache::{ResourceType, SnapshotSource};

/// Responses waiting to be written per stream; the stream builds the next one only when a slot frees.
const OUTBOUND_SLOTS: usize = 1;

const ADS: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const CDS: &str = "envoy.service.cluster.v3.ClusterDiscoveryService";
const EDS: &str = "envoy.service.endpoint.v3.EndpointDiscoveryService";
const LDS: &str = "envoy.service.listener.v3.ListenerDiscoveryService";
const RDS: &str = "envoy.service.route.v3.RouteDiscoveryService";

/// Serves delta and state-of-the-world xDS from a snapshot source.
#[derive(Clone)]
pub struct XdsServer {
    cache: Arc<dyn SnapshotSource>,
    shutdown: watch::Receiver<bool>,
    env: StreamEnv,
    /// Bytes of partly received requests, across all streams.
    pending_requests: Arc<RequestBudget>,
}

impl XdsServer {
    /// Streams count into `metrics` and register in `proxies`; each client may cost `limits`.
    pub fn new(
        cache: Arc<dyn SnapshotSource>,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<XdsMetrics>,
        proxies: Arc<ProxyRegistry>,
        limits: XdsLimits,
    ) -> Self {
        let pending_requests = Arc::new(RequestBudget::new(&limits, metrics.clone()));
        let env = StreamEnv { metrics, proxies, budget: Arc::default(), limits: limits.stream(), identity: None };
        Self { cache, shutdown, env, pending_requests }
    }

    /// The gRPC routes of the discovery services; other gRPC services can be merged in.
    pub fn router(&self) -> Router {
        Router::new()
            .route(&format!("/{ADS}/{{method}}"), post(aggregated))
            .route(&format!("/{CDS}/{{method}}"), post(single::<0>))
            .route(&format!("/{EDS}/{{method}}"), post(single::<1>))
            .route(&format!("/{LDS}/{{method}}"), post(single::<2>))
            .route(&format!("/{RDS}/{{method}}"), post(single::<3>))
            .with_state(self.clone())
    }

    fn open<R: XdsRequest>(&self, kind: StreamKind, request: Request) -> Response<Body> {
        let (tx, rx) = mpsc::channel(OUTBOUND_SLOTS);
        let env =
            StreamEnv { identity: request.extensions().get::<crate::auth::Identity>().cloned(), ..self.env.clone() };
        let inbound = decode_requests::<R>(request.into_body(), self.pending_requests.clone());
        tokio::spawn(run_stream(kind, inbound, tx, self.cache.subscribe(), self.shutdown.clone(), env));
        streaming_response(rx)
    }

    /// `Delta<name>` and `Stream<name>` open a stream of their flavour; `Fetch<name>` is refused.
    fn dispatch(&self, method: &str, name: &str, kind: StreamKind, request: Request) -> Response<Body> {
        match method.strip_suffix(name) {
            Some("Delta") => self.open::<DeltaDiscoveryRequest>(kind, request),
            Some("Stream") => self.open::<DiscoveryRequest>(kind, request),
            Some("Fetch") => status_response(Status::unimplemented(
                "edgexds serves xDS over streams only (REST-style Fetch is not served): use a Stream or Delta method",
            )),
            _ => status_response(Status::unimplemented(format!("unknown method {method}"))),
        }
    }
}

async fn aggregated(State(xds): State<XdsServer>, Path(method): Path<String>, request: Request) -> Response<Body> {
    xds.dispatch(&method, "AggregatedResources", StreamKind::Aggregated, request)
}

/// The per-type services, by [`ResourceType::index`].
async fn single<const INDEX: usize>(
    State(xds): State<XdsServer>,
    Path(method): Path<String>,
    request: Request,
) -> Response<Body> {
    let ty = ResourceType::ALL[INDEX];
    let name = match ty {
        ResourceType::Cluster => "Clusters",
        ResourceType::ClusterLoadAssignment => "Endpoints",
        ResourceType::Listener => "Listeners",
        ResourceType::RouteConfiguration => "Routes",
    };
    xds.dispatch(&method, name, StreamKind::Single(ty), request)
}
