//! A state-of-the-world xDS client, as Envoy with `api_type: GRPC` and gRPC's own xDS
//! clients speak it: each request names the whole subscription, and answers a response by
//! its nonce, with `error_detail` for a NACK.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use std::sync::Arc;

use edgexds::xds::ProxyRegistry;

use crate::xds::{PATIENCE, Quiet, next_message};

pub struct SotwClient {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
    first: bool,
    node: String,
    quiet: Quiet,
}

impl SotwClient {
    pub async fn ads(channel: Channel) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (requests, rx) = mpsc::channel(16);
        let responses =
            client.stream_aggregated_resources(ReceiverStream::new(rx)).await.expect("stream opens").into_inner();
        Self { requests, responses, first: true, node: "sotw-node".into(), quiet: Quiet::for_node("sotw-node") }
    }

    /// A `StreamClusters` stream: clusters only.
    pub async fn cds(channel: Channel) -> Self {
        let mut client = ClusterDiscoveryServiceClient::new(channel);
        let (requests, rx) = mpsc::channel(16);
        let responses = client.stream_clusters(ReceiverStream::new(rx)).await.expect("stream opens").into_inner();
        Self { requests, responses, first: true, node: "sotw-node".into(), quiet: Quiet::for_node("sotw-node") }
    }

    /// Announces `node` as its node id instead of the default.
    pub fn announcing(mut self, node: &str) -> Self {
        self.node = node.to_owned();
        self.quiet = Quiet { proxies: self.quiet.proxies.take(), ..Quiet::for_node(node) };
        self
    }

    /// Lets [`SotwClient::assert_quiet`] find this client's stream in `proxies`.
    pub fn watched_by(mut self, proxies: Arc<ProxyRegistry>) -> Self {
        self.quiet.proxies = Some(proxies);
        self
    }

    pub async fn send(&mut self, mut request: DiscoveryRequest) {
        if self.first {
            request.node = Some(Node { id: self.node.clone(), cluster: "test".into(), ..Default::default() });
            self.first = false;
        }
        self.requests.send(request).await.expect("stream is open");
        self.quiet.sent += 1;
    }

    /// Asks for `names` of `type_url`, as the whole subscription, with no response answered.
    pub async fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        self.send(request(type_url, names, None)).await;
    }

    /// ACKs `response`, keeping `names` as the subscription.
    pub async fn ack(&mut self, response: &DiscoveryResponse, names: &[&str]) {
        self.send(request(&response.type_url, names, Some(response))).await;
    }

    /// NACKs `response`, staying at `kept_version`.
    pub async fn nack(&mut self, response: &DiscoveryResponse, names: &[&str], kept_version: &str) {
        let mut nack = request(&response.type_url, names, Some(response));
        nack.version_info = kept_version.into();
        nack.error_detail = Some(rpc::Status { code: 3, message: "rejected by the test".into(), details: vec![] });
        self.send(nack).await;
    }

    pub async fn next(&mut self) -> DiscoveryResponse {
        match self.next_result().await {
            Ok(response) => response,
            Err(status) => panic!("stream failed: {status}"),
        }
    }

    pub async fn next_result(&mut self) -> Result<DiscoveryResponse, Status> {
        let next = next_message(&mut self.responses, PATIENCE).await;
        self.quiet.received += u64::from(next.is_ok());
        next
    }

    /// Asserts that the server sent nothing since this client last read.
    pub async fn assert_quiet(&mut self) {
        self.quiet.assert().await;
    }
}

/// A request for `names`, answering `response` when given (an ACK, unless an error is added).
pub fn request(type_url: &str, names: &[&str], response: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: response.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: response.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// The bodies a response carries, as text: the tests publish text bodies.
pub fn bodies(response: &DiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|any| String::from_utf8_lossy(&any.value).into_owned()).collect()
}
