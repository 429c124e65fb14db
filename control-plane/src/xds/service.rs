//! The tonic services: ADS, CDS and EDS, delta variants only.

use std::sync::Arc;

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Observer;
use super::stream::{StreamKind, run_stream};
use crate::cache::{ResourceType, SnapshotSource};

/// Responses waiting to be written per stream; the stream builds the next one only when a slot frees.
const OUTBOUND_SLOTS: usize = 1;

type DeltaStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;
type SotwStream = BoxStream<'static, Result<DiscoveryResponse, Status>>;

/// Serves delta xDS from a snapshot source.
#[derive(Clone)]
pub struct XdsServer {
    cache: Arc<dyn SnapshotSource>,
    shutdown: watch::Receiver<bool>,
    observer: Arc<Observer>,
}

impl XdsServer {
    pub fn new(cache: Arc<dyn SnapshotSource>, shutdown: watch::Receiver<bool>, observer: Arc<Observer>) -> Self {
        Self { cache, shutdown, observer }
    }

    pub fn aggregated(&self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self.clone())
    }

    pub fn clusters(&self) -> ClusterDiscoveryServiceServer<Self> {
        ClusterDiscoveryServiceServer::new(self.clone())
    }

    pub fn endpoints(&self) -> EndpointDiscoveryServiceServer<Self> {
        EndpointDiscoveryServiceServer::new(self.clone())
    }

    fn open(&self, kind: StreamKind, inbound: Streaming<DeltaDiscoveryRequest>) -> Response<DeltaStream> {
        let (tx, rx) = mpsc::channel(OUTBOUND_SLOTS);
        tokio::spawn(run_stream(
            kind,
            inbound,
            tx,
            self.cache.subscribe(),
            self.shutdown.clone(),
            self.observer.clone(),
        ));
        Response::new(ReceiverStream::new(rx))
    }
}

fn delta_only() -> Status {
    Status::unimplemented(
        "edgexds serves incremental xDS only: set api_type: DELTA_GRPC in the Envoy bootstrap's ads_config",
    )
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Err(delta_only())
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.open(StreamKind::Aggregated, request.into_inner()))
    }
}

#[tonic::async_trait]
impl ClusterDiscoveryService for XdsServer {
    type StreamClustersStream = SotwStream;
    type DeltaClustersStream = DeltaStream;

    async fn stream_clusters(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Err(delta_only())
    }

    async fn delta_clusters(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.open(StreamKind::Single(ResourceType::Cluster), request.into_inner()))
    }

    async fn fetch_clusters(&self, _request: Request<DiscoveryRequest>) -> Result<Response<DiscoveryResponse>, Status> {
        Err(delta_only())
    }
}

#[tonic::async_trait]
impl EndpointDiscoveryService for XdsServer {
    type StreamEndpointsStream = SotwStream;
    type DeltaEndpointsStream = DeltaStream;

    async fn stream_endpoints(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Err(delta_only())
    }

    async fn delta_endpoints(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.open(StreamKind::Single(ResourceType::ClusterLoadAssignment), request.into_inner()))
    }

    async fn fetch_endpoints(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(delta_only())
    }
}
