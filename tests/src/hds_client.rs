//! A gRPC HDS client that behaves like a checker Envoy: announces itself, takes schedules,
//! and reports whatever health the test says.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Node};
use envoy_types::pb::envoy::service::health::v3::health_check_request_or_endpoint_health_response::RequestType;
use envoy_types::pb::envoy::service::health::v3::health_discovery_service_client::HealthDiscoveryServiceClient;
use envoy_types::pb::envoy::service::health::v3::{
    Capability, ClusterEndpointsHealth, EndpointHealth, EndpointHealthResponse, HealthCheckRequest,
    HealthCheckRequestOrEndpointHealthResponse, HealthCheckSpecifier, LocalityEndpointsHealth, capability::Protocol,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

pub struct HdsClient {
    requests: mpsc::Sender<HealthCheckRequestOrEndpointHealthResponse>,
    responses: Streaming<HealthCheckSpecifier>,
}

impl HdsClient {
    pub async fn connect(xds: SocketAddr, node_id: &str) -> Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds}"))?.connect().await?;
        Self::open(channel, Node { id: node_id.to_owned(), ..Default::default() }, None).await
    }

    /// A checker announcing `node` on `channel`, with `token` as its bearer token when given.
    pub async fn open(channel: tonic::transport::Channel, node: Node, token: Option<&str>) -> Result<Self> {
        let authorization: Option<tonic::metadata::MetadataValue<_>> =
            token.map(|t| format!("Bearer {t}").parse()).transpose()?;
        let mut client =
            HealthDiscoveryServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
                if let Some(value) = &authorization {
                    request.metadata_mut().insert("authorization", value.clone());
                }
                Ok(request)
            });
        let (requests, outbound) = mpsc::channel(4);
        let announce = HealthCheckRequest {
            node: Some(node),
            capability: Some(Capability { health_check_protocols: vec![Protocol::Http as i32, Protocol::Tcp as i32] }),
        };
        requests
            .send(HealthCheckRequestOrEndpointHealthResponse {
                request_type: Some(RequestType::HealthCheckRequest(announce)),
            })
            .await?;
        let responses = client.stream_health_check(ReceiverStream::new(outbound)).await?.into_inner();
        Ok(Self { requests, responses })
    }

    /// The next schedule, within 10 seconds.
    pub async fn schedule(&mut self) -> Result<HealthCheckSpecifier> {
        tokio::time::timeout(Duration::from_secs(10), self.responses.message())
            .await
            .context("no schedule within 10s")??
            .context("stream closed")
    }

    /// Reports every endpoint of `schedule`: the addresses listed in `unhealthy` as UNHEALTHY, the rest HEALTHY.
    pub async fn report(&self, schedule: &HealthCheckSpecifier, unhealthy: &[&str]) -> Result<()> {
        let cluster_endpoints_health = schedule
            .cluster_health_checks
            .iter()
            .map(|cluster| ClusterEndpointsHealth {
                cluster_name: cluster.cluster_name.clone(),
                locality_endpoints_health: cluster
                    .locality_endpoints
                    .iter()
                    .map(|locality| LocalityEndpointsHealth {
                        locality: locality.locality.clone(),
                        endpoints_health: locality
                            .endpoints
                            .iter()
                            .map(|endpoint| {
                                let ip = match endpoint.address.as_ref().and_then(|a| a.address.as_ref()) {
                                    Some(AddressKind::SocketAddress(socket)) => socket.address.as_str(),
                                    _ => "",
                                };
                                let status = if unhealthy.contains(&ip) {
                                    HealthStatus::Unhealthy
                                } else {
                                    HealthStatus::Healthy
                                };
                                EndpointHealth {
                                    endpoint: Some(endpoint.clone()),
                                    health_status: status as i32,
                                    ..Default::default()
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        let report = EndpointHealthResponse { cluster_endpoints_health, ..Default::default() };
        self.requests
            .send(HealthCheckRequestOrEndpointHealthResponse {
                request_type: Some(RequestType::EndpointHealthResponse(report)),
            })
            .await?;
        Ok(())
    }
}
