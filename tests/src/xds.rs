//! An in-process xDS server over `tokio::io::duplex`, and a delta client that speaks to it like Envoy
//! (the state-of-the-world client is in [`crate::sotw`]).

use std::sync::Arc;
use std::time::Duration;

use edgexds::cache::{Encoded, ResourceType, Snapshot, SnapshotCache};
use edgexds::port::listener::Serving;
use edgexds::port::{Limits, PortMetrics};
use edgexds::xds::{ProxyRegistry, StreamEnv, XdsMetrics, XdsServer};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;
use envoy_types::pb::google::rpc;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Status, Streaming};

pub const CDS: &str = ResourceType::Cluster.type_url();
pub const EDS: &str = ResourceType::ClusterLoadAssignment.type_url();
pub const LDS: &str = ResourceType::Listener.type_url();
pub const RDS: &str = ResourceType::RouteConfiguration.type_url();

/// How long a test waits for something that must happen.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub struct Harness {
    pub cache: Arc<SnapshotCache>,
    pub metrics: Arc<XdsMetrics>,
    pub proxies: Arc<ProxyRegistry>,
    pub shutdown: watch::Sender<bool>,
    connections: mpsc::Sender<DuplexStream>,
    /// Numbers each client's node, so its stream's view can be found.
    clients: std::sync::atomic::AtomicUsize,
}

impl Harness {
    pub fn start() -> Self {
        let cache = Arc::new(SnapshotCache::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (connections, incoming) = mpsc::channel::<DuplexStream>(16);
        let (metrics, proxies) = (Arc::new(XdsMetrics::default()), Arc::new(ProxyRegistry::default()));
        let (limits, port_metrics) = (Limits::default(), PortMetrics::default());
        let env = StreamEnv::new(limits, metrics.clone(), port_metrics.limit_hits.clone(), proxies.clone());
        let xds = XdsServer::new(cache.clone(), shutdown_rx.clone(), env);
        // The same router, port layers and HTTP/2 settings as the real server, over in-process pipes.
        let incoming = ReceiverStream::new(incoming).map(|io| (io, None));
        let serving = Serving {
            router: xds.router(),
            limits,
            metrics: port_metrics,
            security: edgexds::auth::Security::open(),
            shutdown: shutdown_rx,
        };
        tokio::spawn(serving.serve(incoming));
        Self { cache, shutdown, connections, metrics, proxies, clients: Default::default() }
    }

    pub async fn channel(&self) -> Channel {
        let (client, server) = tokio::io::duplex(1 << 20);
        self.connections.send(server).await.expect("server is running");
        let mut client = Some(client);
        Endpoint::from_static("http://in-process")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let io = client.take().map(TokioIo::new);
                async move { io.ok_or_else(|| std::io::Error::other("one connection per channel")) }
            }))
            .await
            .expect("in-process connection")
    }

    /// A node of its own for the next client, and the registry its stream shows in.
    fn identify(&self, client: DeltaClient) -> DeltaClient {
        let number = self.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let node = Node { id: format!("test-node-{number}"), cluster: "test".into(), ..Default::default() };
        client.announcing(node).watched_by(self.proxies.clone())
    }

    pub async fn ads(&self) -> DeltaClient {
        self.identify(DeltaClient::ads(self.channel().await).await)
    }

    pub async fn cds(&self) -> DeltaClient {
        let mut client = ClusterDiscoveryServiceClient::new(self.channel().await);
        self.identify(DeltaClient::open(|requests| async move { client.delta_clusters(requests).await }).await)
    }

    pub async fn eds(&self) -> DeltaClient {
        let mut client = EndpointDiscoveryServiceClient::new(self.channel().await);
        self.identify(DeltaClient::open(|requests| async move { client.delta_endpoints(requests).await }).await)
    }

    pub async fn lds(&self) -> DeltaClient {
        let mut client = ListenerDiscoveryServiceClient::new(self.channel().await);
        self.identify(DeltaClient::open(|requests| async move { client.delta_listeners(requests).await }).await)
    }

    pub async fn rds(&self) -> DeltaClient {
        let mut client = RouteDiscoveryServiceClient::new(self.channel().await);
        self.identify(DeltaClient::open(|requests| async move { client.delta_routes(requests).await }).await)
    }

    /// Publishes clusters and endpoints given as (name, body) pairs.
    pub fn publish(&self, clusters: &[(&str, &str)], endpoints: &[(&str, &str)]) {
        let current = self.cache.current();
        let items = clusters.iter().map(|(n, b)| (ResourceType::Cluster, n.to_string(), b.as_bytes().to_vec())).chain(
            endpoints.iter().map(|(n, b)| (ResourceType::ClusterLoadAssignment, n.to_string(), b.as_bytes().to_vec())),
        );
        self.cache.publish(Snapshot::new(current.as_deref(), items));
    }

    /// Publishes resources of any type as (type, name, body); `named_only` ones reach only
    /// clients that name them, as gRPC listeners do.
    pub fn publish_all(&self, resources: &[(ResourceType, &str, &str)], named_only: &[&str]) {
        let current = self.cache.current();
        let items = resources.iter().map(|(ty, n, b)| Encoded {
            ty: *ty,
            name: n.to_string(),
            body: b.as_bytes().to_vec(),
            named_only: named_only.contains(n),
        });
        self.cache.publish(Snapshot::new(current.as_deref(), items));
    }

    /// A state-of-the-world ADS stream.
    pub async fn sotw_ads(&self) -> crate::sotw::SotwClient {
        let number = self.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::sotw::SotwClient::ads(self.channel().await)
            .await
            .announcing(&format!("sotw-node-{number}"))
            .watched_by(self.proxies.clone())
    }

    pub fn version(&self, ty: ResourceType, name: &str) -> String {
        self.cache.current().unwrap().resources(ty)[name].version.clone()
    }
}

/// A TLS channel to `addr`, trusting `ca` (PEM) for the name localhost, presenting `client`
/// (certificate and key PEM) when given.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &str,
    client: Option<(&str, &str)>,
) -> Result<Channel, Status> {
    tls_channel_from(None, addr, ca, client).await
}

/// Same, from local address `from` when given (a loopback address standing for one client).
pub async fn tls_channel_from(
    from: Option<std::net::IpAddr>,
    addr: std::net::SocketAddr,
    ca: &str,
    client: Option<(&str, &str)>,
) -> Result<Channel, Status> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .local_address(from);
    endpoint.connect().await.map_err(|e| Status::unavailable(format!("{e:?}")))
}

pub struct DeltaClient {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
    first: bool,
    node: Option<Node>,
    /// What this side has counted, to compare with what its stream shows.
    quiet: Quiet,
}

/// Tells "the server sent nothing" by an event rather than by waiting: the client's stream
/// has handled every request the client sent and is idle, and it sent no more responses
/// than the client received.
#[derive(Default)]
pub struct Quiet {
    pub(crate) node: String,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) proxies: Option<Arc<ProxyRegistry>>,
}

impl Quiet {
    pub(crate) fn for_node(node: &str) -> Self {
        Self { node: node.to_owned(), ..Self::default() }
    }

    /// Asserts that the stream is idle having answered nothing since the client last read.
    pub async fn assert(&self) {
        let proxies = self.proxies.as_ref().expect("a client watched through the server's registry (watched_by)");
        let started = std::time::Instant::now();
        loop {
            let view = proxies.streams().into_iter().map(|s| s.view()).find(|v| v.node_id() == self.node);
            if let Some(view) = view.filter(|v| v.requests == self.sent && !v.busy) {
                assert_eq!(
                    view.responses, self.received,
                    "expected no response: the stream sent {} and the client received {}",
                    view.responses, self.received
                );
                return;
            }
            assert!(started.elapsed() < PATIENCE, "the stream of {} did not go idle", self.node);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl DeltaClient {
    /// A delta ADS stream on `channel`.
    pub async fn ads(channel: Channel) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        Self::open(|requests| async move { client.delta_aggregated_resources(requests).await }).await
    }

    /// A delta ADS stream to a server listening on `addr`.
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        let channel = Endpoint::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        Self::ads(channel).await
    }

    /// A delta ADS stream over TLS to `addr`, trusting `ca` (PEM), presenting `client`
    /// (certificate and key PEM) when given; an error when the handshake or the stream is refused.
    pub async fn connect_tls(
        addr: std::net::SocketAddr,
        ca: &str,
        client: Option<(&str, &str)>,
    ) -> Result<Self, Status> {
        let channel = tls_channel(addr, ca, client).await?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let (requests, rx) = mpsc::channel(16);
        let responses = client.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self::started(requests, responses))
    }

    /// A delta ADS stream on `channel` carrying `token` as its bearer token; an error when
    /// the stream is refused.
    pub async fn ads_with_token(channel: Channel, token: &str) -> Result<Self, Status> {
        let authorization: tonic::metadata::MetadataValue<_> =
            format!("Bearer {token}").parse().map_err(|_| Status::invalid_argument("not a header value"))?;
        let mut client =
            AggregatedDiscoveryServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
                request.metadata_mut().insert("authorization", authorization.clone());
                Ok(request)
            });
        let (requests, rx) = mpsc::channel(16);
        let responses = client.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self::started(requests, responses))
    }

    async fn open<F, Fut>(call: F) -> Self
    where
        F: FnOnce(ReceiverStream<DeltaDiscoveryRequest>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Streaming<DeltaDiscoveryResponse>>, Status>>,
    {
        let (requests, rx) = mpsc::channel(16);
        let responses = call(ReceiverStream::new(rx)).await.expect("stream opens").into_inner();
        Self::started(requests, responses)
    }

    fn started(requests: mpsc::Sender<DeltaDiscoveryRequest>, responses: Streaming<DeltaDiscoveryResponse>) -> Self {
        Self { requests, responses, first: true, node: None, quiet: Quiet::for_node("test-node") }
    }

    /// Announces `node` in the first request instead of the default test node.
    pub fn announcing(mut self, node: Node) -> Self {
        self.quiet.node = node.id.clone();
        self.node = Some(node);
        self
    }

    /// Lets [`DeltaClient::assert_quiet`] find this client's stream in `proxies`.
    pub fn watched_by(mut self, proxies: Arc<ProxyRegistry>) -> Self {
        self.quiet.proxies = Some(proxies);
        self
    }

    pub async fn send(&mut self, mut request: DeltaDiscoveryRequest) {
        if self.first {
            let node = self.node.take();
            request.node =
                Some(node.unwrap_or(Node { id: "test-node".into(), cluster: "test".into(), ..Default::default() }));
            self.first = false;
        }
        self.requests.send(request).await.expect("stream is open");
        self.quiet.sent += 1;
    }

    pub async fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        self.send(request(type_url, names, &[])).await;
    }

    pub async fn ack(&mut self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    pub async fn nack(&mut self, response: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(rpc::Status { code: 3, message: message.into(), details: vec![] }),
            ..Default::default()
        })
        .await;
    }

    pub async fn next(&mut self) -> DeltaDiscoveryResponse {
        match self.next_result().await {
            Ok(response) => response,
            Err(status) => panic!("stream failed: {status}"),
        }
    }

    pub async fn next_result(&mut self) -> Result<DeltaDiscoveryResponse, Status> {
        self.next_within(PATIENCE).await
    }

    pub async fn next_within(&mut self, limit: Duration) -> Result<DeltaDiscoveryResponse, Status> {
        let next = next_message(&mut self.responses, limit).await;
        self.quiet.received += u64::from(next.is_ok());
        next
    }

    /// Asserts that the server sent nothing since this client last read.
    pub async fn assert_quiet(&mut self) {
        self.quiet.assert().await;
    }
}

/// The next message of `responses` within `limit` (a panic past it); the stream's end is
/// an error with code OK.
pub async fn next_message<T>(responses: &mut Streaming<T>, limit: Duration) -> Result<T, Status> {
    match tokio::time::timeout(limit, responses.message()).await {
        Err(_) => panic!("no response within {limit:?}"),
        Ok(Ok(Some(response))) => Ok(response),
        Ok(Ok(None)) => Err(Status::ok("stream ended")),
        Ok(Err(status)) => Err(status),
    }
}

pub fn request(type_url: &str, subscribe: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|r| r.name.as_str()).collect()
}

pub fn removed(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.removed_resources.iter().map(String::as_str).collect()
}
