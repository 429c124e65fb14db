//! The delta xDS routes: ADS, CDS and EDS, delta methods only, framed by [`super::grpc`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::Response;
use axum::routing::post;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::StreamKind;
use super::grpc::{RequestBudget, decode_requests, status_response, streaming_response};
use super::limits::XdsLimits;
use super::metrics::XdsMetrics;
use super::proxies::ProxyRegistry;
use super::stream::{StreamEnv, run_stream};
use crate::cache::{ResourceType, SnapshotSource};

/// Responses waiting to be written per stream; the stream builds the next one only when a slot frees.
const OUTBOUND_SLOTS: usize = 1;

const ADS: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const CDS: &str = "envoy.service.cluster.v3.ClusterDiscoveryService";
const EDS: &str = "envoy.service.endpoint.v3.EndpointDiscoveryService";

/// Serves delta xDS from a snapshot source.
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

    /// The gRPC routes of the three discovery services; other gRPC services can be merged in.
    pub fn router(&self) -> Router {
        Router::new()
            .route(&format!("/{ADS}/{{method}}"), post(aggregated))
            .route(&format!("/{CDS}/{{method}}"), post(clusters))
            .route(&format!("/{EDS}/{{method}}"), post(endpoints))
            .with_state(self.clone())
    }

    fn open(&self, kind: StreamKind, request: Request) -> Response<Body> {
        let (tx, rx) = mpsc::channel(OUTBOUND_SLOTS);
        let env =
            StreamEnv { identity: request.extensions().get::<crate::auth::Identity>().cloned(), ..self.env.clone() };
        let inbound = decode_requests::<DeltaDiscoveryRequest>(request.into_body(), self.pending_requests.clone());
        tokio::spawn(run_stream(kind, inbound, tx, self.cache.subscribe(), self.shutdown.clone(), env));
        streaming_response(rx)
    }

    fn dispatch(&self, method: &str, delta: (&str, StreamKind), others: &[&str], request: Request) -> Response<Body> {
        if method == delta.0 {
            self.open(delta.1, request)
        } else if others.contains(&method) {
            status_response(Status::unimplemented(
                "edgexds serves incremental xDS only: set api_type: DELTA_GRPC in the Envoy bootstrap's ads_config",
            ))
        } else {
            status_response(Status::unimplemented(format!("unknown method {method}")))
        }
    }
}

async fn aggregated(State(xds): State<XdsServer>, Path(method): Path<String>, request: Request) -> Response<Body> {
    xds.dispatch(&method, ("DeltaAggregatedResources", StreamKind::Aggregated), &["StreamAggregatedResources"], request)
}

async fn clusters(State(xds): State<XdsServer>, Path(method): Path<String>, request: Request) -> Response<Body> {
    let kind = StreamKind::Single(ResourceType::Cluster);
    xds.dispatch(&method, ("DeltaClusters", kind), &["StreamClusters", "FetchClusters"], request)
}

async fn endpoints(State(xds): State<XdsServer>, Path(method): Path<String>, request: Request) -> Response<Body> {
    let kind = StreamKind::Single(ResourceType::ClusterLoadAssignment);
    xds.dispatch(&method, ("DeltaEndpoints", kind), &["StreamEndpoints", "FetchEndpoints"], request)
}
