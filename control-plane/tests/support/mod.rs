//! Shared by the binary's abuse tests: the binary on free ports (`tests/src/binary.rs`), and a
//! delta client.
#![allow(dead_code)] // each test binary uses its own part

use std::net::SocketAddr;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[path = "../../../tests/src/binary.rs"]
pub mod binary;
#[path = "../../../tests/src/careless_writer.rs"]
pub mod careless_writer;

pub use binary::Server;

use edgexds::cache::ResourceType;

pub const CDS: &str = ResourceType::Cluster.type_url();
pub const EDS: &str = ResourceType::ClusterLoadAssignment.type_url();

pub fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: {name}, namespace: shop }}\nspec: {{ ports: [{{ port: {port} }}] }}\n"
    )
}

pub fn slice(name: &str, address: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: shop\n  labels: {{ kubernetes.io/service-name: {name} }}\naddressType: IPv4\nports: [{{ port: 8080 }}]\nendpoints:\n- addresses: [\"{address}\"]\n  conditions: {{ ready: true }}\n"
    )
}

/// A delta ADS client subscribed to everything, ACKing each response; responses arrive
/// on the returned channel with the instant they were received.
pub async fn subscriber(xds: SocketAddr, node: Node) -> mpsc::Receiver<(Instant, DeltaDiscoveryResponse)> {
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(DeltaDiscoveryRequest { type_url: CDS.into(), node: Some(node), ..Default::default() }).await.unwrap();
    tx.send(DeltaDiscoveryRequest { type_url: EDS.into(), ..Default::default() }).await.unwrap();
    let mut responses = ads.delta_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let (out, received) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(Some(response)) = responses.message().await {
            let ack = DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                ..Default::default()
            };
            if tx.send(ack).await.is_err() || out.send((Instant::now(), response)).await.is_err() {
                return;
            }
        }
    });
    received
}

pub fn node(id: &str) -> Node {
    Node { id: id.into(), ..Default::default() }
}
