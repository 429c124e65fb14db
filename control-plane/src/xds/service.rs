//! The xDS routes: ADS, and each type's own service from the type table, delta and state of
//! the world, framed by [`super::grpc`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::Response;
use axum::routing::post;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tokio::sync::mpsc;
use tonic::Status;

use super::StreamKind;
use super::delta_request::DeltaRequest;
use super::grpc::{decode_requests, status_response, streaming_response};
use super::stream::{StreamEnv, XdsRequest, run_stream};
use crate::cache::{ResourceType, SnapshotSource};
use crate::shutdown::Shutdown;

/// Responses waiting to be written per stream; the stream builds the next one only when a slot frees.
const OUTBOUND_SLOTS: usize = 1;

const ADS: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// Serves delta and state-of-the-world xDS from a snapshot source.
#[derive(Clone)]
pub struct XdsServer {
    cache: Arc<dyn SnapshotSource>,
    shutdown: Shutdown,
    env: StreamEnv,
}

impl XdsServer {
    /// Every stream shares `env`: where it counts, registers, and what it may cost.
    pub fn new(cache: Arc<dyn SnapshotSource>, shutdown: Shutdown, env: StreamEnv) -> Self {
        let env = StreamEnv { places: Some(cache.places()), ..env };
        Self { cache, shutdown, env }
    }

    /// The gRPC routes of the discovery services; other gRPC services can be merged in.
    pub fn router(&self) -> Router {
        let ads = Router::new().route(
            &format!("/{ADS}/{{method}}"),
            post(|State(xds): State<XdsServer>, Path(method): Path<String>, request: Request| async move {
                xds.dispatch(&method, "AggregatedResources", StreamKind::Aggregated, request)
            }),
        );
        ResourceType::ALL
            .into_iter()
            .fold(ads, |router, ty| {
                let row = ty.row();
                router.route(
                    &format!("/{}/{{method}}", row.service),
                    post(
                        move |State(xds): State<XdsServer>, Path(method): Path<String>, request: Request| async move {
                            xds.dispatch(&method, row.methods, StreamKind::Single(ty), request)
                        },
                    ),
                )
            })
            .with_state(self.clone())
    }

    fn open<R: XdsRequest>(&self, kind: StreamKind, request: Request) -> Response<Body> {
        let (tx, rx) = mpsc::channel(OUTBOUND_SLOTS);
        let env =
            StreamEnv { identity: request.extensions().get::<crate::auth::Identity>().cloned(), ..self.env.clone() };
        let inbound = decode_requests::<R>(request.into_body());
        tokio::spawn(run_stream(kind, inbound, tx, self.cache.subscribe(), self.shutdown.clone(), env));
        streaming_response(rx)
    }

    /// `Delta<name>` and `Stream<name>` open a stream of their flavour; `Fetch<name>` is refused.
    fn dispatch(&self, method: &str, name: &str, kind: StreamKind, request: Request) -> Response<Body> {
        match method.strip_suffix(name) {
            Some("Delta") => self.open::<DeltaRequest>(kind, request),
            Some("Stream") => self.open::<DiscoveryRequest>(kind, request),
            Some("Fetch") => status_response(Status::unimplemented(
                "edgexds serves xDS over streams only (REST-style Fetch is not served): use a Stream or Delta method",
            )),
            _ => status_response(Status::unimplemented(format!("unknown method {method}"))),
        }
    }
}
