//! Every per-client limit against every service on the xDS port it applies to, through the
//! binary: each refusal carries the limit's status code and names its flag, and counts
//! exactly once in `edgexds_limit_hits_total`. The rows come from `Limit::ALL` through an
//! exhaustive match, so a limit added without a row does not compile.
//!
//! Requests go over raw HTTP/2 (h2), the same bytes for every service, because some rows
//! need what no gRPC client sends: a message started and never finished.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use edgexds::cache::ResourceType;
use edgexds::port::Limit;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::envoy::service::health::v3::health_check_request_or_endpoint_health_response::RequestType;
use envoy_types::pb::envoy::service::health::v3::{HealthCheckRequest, HealthCheckRequestOrEndpointHealthResponse};
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::google::rpc;
use prost::Message;
use support::binary::http_get;
use support::{Server, service, slice};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Service {
    /// ADS, delta (`true`) or state of the world.
    Ads(bool),
    /// A type's own service, delta or state of the world.
    Single(ResourceType, bool),
    Csds,
    Hds,
}

fn services() -> Vec<Service> {
    let mut all = vec![Service::Ads(true), Service::Ads(false)];
    for ty in ResourceType::ALL {
        all.extend([Service::Single(ty, true), Service::Single(ty, false)]);
    }
    all.extend([Service::Csds, Service::Hds]);
    all
}

impl Service {
    fn is_xds(self) -> bool {
        matches!(self, Service::Ads(_) | Service::Single(..))
    }

    fn path(self) -> String {
        let flavour = |delta: bool| if delta { "Delta" } else { "Stream" };
        match self {
            Service::Ads(delta) => {
                format!("/envoy.service.discovery.v3.AggregatedDiscoveryService/{}AggregatedResources", flavour(delta))
            }
            Service::Single(ty, delta) => format!("/{}/{}{}", ty.row().service, flavour(delta), ty.row().methods),
            Service::Csds => "/envoy.service.status.v3.ClientStatusDiscoveryService/StreamClientStatus".into(),
            Service::Hds => "/envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck".into(),
        }
    }

    fn type_url(self) -> &'static str {
        match self {
            Service::Single(ty, _) => ty.type_url(),
            _ => ResourceType::Cluster.type_url(),
        }
    }

    /// A first message naming `names` names, from `node`.
    fn message(self, node: Node, names: usize) -> Vec<u8> {
        self.message_naming(node, (0..names).map(|i| format!("name-{i}")).collect())
    }

    /// A first message naming `names`, from `node`.
    fn message_naming(self, node: Node, names: Vec<String>) -> Vec<u8> {
        match self {
            Service::Ads(true) | Service::Single(_, true) => DeltaDiscoveryRequest {
                type_url: self.type_url().into(),
                node: Some(node),
                resource_names_subscribe: names,
                ..Default::default()
            }
            .encode_to_vec(),
            Service::Ads(false) | Service::Single(_, false) => DiscoveryRequest {
                type_url: self.type_url().into(),
                node: Some(node),
                resource_names: names,
                ..Default::default()
            }
            .encode_to_vec(),
            Service::Csds => ClientStatusRequest { node: Some(node), ..Default::default() }.encode_to_vec(),
            Service::Hds => HealthCheckRequestOrEndpointHealthResponse {
                request_type: Some(RequestType::HealthCheckRequest(HealthCheckRequest {
                    node: Some(node),
                    capability: None,
                })),
            }
            .encode_to_vec(),
        }
    }

    /// A NACK of the response answered by `nonce`.
    fn nack(self, nonce: String, message: String) -> Vec<u8> {
        let error_detail = Some(rpc::Status { code: 3, message, details: vec![] });
        match self {
            Service::Ads(true) | Service::Single(_, true) => DeltaDiscoveryRequest {
                type_url: self.type_url().into(),
                response_nonce: nonce,
                error_detail,
                ..Default::default()
            }
            .encode_to_vec(),
            _ => DiscoveryRequest {
                type_url: self.type_url().into(),
                response_nonce: nonce,
                error_detail,
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }
}

fn node(id: &str) -> Node {
    Node { id: id.into(), ..Default::default() }
}

/// A gRPC message: its prefix and bytes.
fn framed(message: &[u8]) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

/// The prefix of a `len`-byte message, and its first `sent` bytes.
fn started(len: usize, sent: usize) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.resize(5 + sent, 0x0a);
    Bytes::from(frame)
}

/// One HTTP/2 connection to the xDS port.
struct Connection {
    send: h2::client::SendRequest<Bytes>,
    /// Ends when the connection does.
    driver: tokio::task::JoinHandle<()>,
}

/// One gRPC call on a connection: what goes up, and the response as it arrives.
struct Call {
    up: h2::SendStream<Bytes>,
    response: Option<h2::client::ResponseFuture>,
    body: Option<h2::RecvStream>,
}

impl Connection {
    async fn open(xds: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(xds).await.expect("connect");
        let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Self { send, driver }
    }

    async fn call(&mut self, service: Service) -> Call {
        self.call_path(&service.path()).await
    }

    async fn call_path(&mut self, path: &str) -> Call {
        let request = axum::http::Request::post(format!("http://edgexds{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut send = self.send.clone().ready().await.expect("the connection takes streams");
        let (response, up) = send.send_request(request, false).expect("a stream");
        Call { up, response: Some(response), body: None }
    }
}

impl Call {
    fn send(&mut self, bytes: Bytes) {
        self.up.send_data(bytes, false).expect("the stream is open");
    }

    /// The response's body, once its headers arrived; `Err` holds a trailers-only status.
    async fn body(&mut self) -> Result<&mut h2::RecvStream, tonic::Status> {
        if let Some(response) = self.response.take() {
            let response = response.await.expect("a response");
            if let Some(status) = tonic::Status::from_header_map(response.headers()) {
                return Err(status);
            }
            self.body = Some(response.into_body());
        }
        Ok(self.body.as_mut().expect("the body, once the headers came"))
    }

    /// The status the call ends with: from trailers-only headers, or the trailers after the body.
    async fn status(mut self) -> tonic::Status {
        let body = match self.body().await {
            Ok(body) => body,
            Err(status) => return status,
        };
        while let Some(data) = body.data().await {
            let data = data.expect("body");
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await.expect("trailers").expect("a status in trailers");
        tonic::Status::from_header_map(&trailers).expect("grpc-status")
    }

    /// The first message of the response body.
    async fn first_message(&mut self) -> Bytes {
        let body = self.body().await.expect("a streaming response");
        let mut buffered = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.expect("body");
            let _ = body.flow_control().release_capacity(data.len());
            buffered.extend_from_slice(&data);
            if buffered.len() >= 5 {
                let len = u32::from_be_bytes([buffered[1], buffered[2], buffered[3], buffered[4]]) as usize;
                if buffered.len() >= 5 + len {
                    return Bytes::copy_from_slice(&buffered[5..5 + len]);
                }
            }
        }
        panic!("the response ended without a message")
    }
}

fn manifests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), format!("{}---\n{}", service("web", 80), slice("web", "10.0.0.1")))
        .unwrap();
    dir
}

fn hits(server: &Server, limit: Limit) -> f64 {
    server.metric(&format!("edgexds_limit_hits_total{{limit=\"{}\"}}", limit.label()))
}

/// The flags a row's server runs with: this limit set low, HDS on so its service is there.
fn flags(limit: Limit) -> Vec<&'static str> {
    let low: &[&'static str] = match limit {
        Limit::NodeBytes => &["--max-node-bytes", "300"],
        Limit::NackMessageBytes => &["--max-nack-message-bytes", "16"],
        Limit::SubscriptionNames => &["--max-subscription-names", "5"],
        Limit::NameBytes => &["--max-name-bytes", "64"],
        Limit::SubscriptionBytes => &["--max-subscription-bytes", "100"],
        Limit::StreamsPerConnection => &["--max-streams-per-connection", "2"],
        Limit::Connections => &["--max-connections", "2"],
        Limit::ConnectionsPerPeer => &["--max-connections-per-peer", "2"],
        Limit::UnauthenticatedConnections => &["--max-unauthenticated-connections", "2"],
        Limit::UnauthenticatedGrace => &["--unauthenticated-grace", "1s"],
        Limit::HandshakeTimeout => &["--handshake-timeout", "1s"],
        Limit::TokenReviewsPerPeer => &["--max-token-reviews-per-peer", "1"],
        Limit::RequestBytes => &["--max-request-bytes", "1024"],
        Limit::PendingRequestBytes => &["--max-pending-request-bytes", "2048", "--max-request-bytes", "2048"],
        Limit::RequestTimeout => &["--request-timeout", "1s"],
        Limit::ConcurrentCsds => &["--max-concurrent-csds", "1"],
        Limit::CsdsResponseBytes => &["--max-csds-response-bytes", "64"],
    };
    [low, &["--active-health-checks", "hds"]].concat()
}

/// Whether `limit` bounds what a client of `service` sends or holds. Connection-level limits
/// bound every service; the handshake deadline ends a connection before any service.
fn applies(limit: Limit, service: Service) -> bool {
    match limit {
        Limit::NodeBytes => service.is_xds() || service == Service::Hds,
        Limit::NackMessageBytes | Limit::SubscriptionNames | Limit::NameBytes | Limit::SubscriptionBytes => {
            service.is_xds()
        }
        Limit::StreamsPerConnection
        | Limit::Connections
        | Limit::ConnectionsPerPeer
        | Limit::UnauthenticatedConnections
        | Limit::RequestBytes
        | Limit::PendingRequestBytes
        | Limit::RequestTimeout => true,
        // These end connections, before or between services' calls (tested below), and
        // token reviews need a real API server (`tests/tests/xds_tokens.rs`).
        Limit::HandshakeTimeout | Limit::UnauthenticatedGrace | Limit::TokenReviewsPerPeer => false,
        Limit::ConcurrentCsds | Limit::CsdsResponseBytes => service == Service::Csds,
    }
}

/// Makes `limit` refuse one call of `service`; the status that call ended with.
async fn trigger(limit: Limit, service: Service, server: &Server) -> Option<tonic::Status> {
    let xds = server.xds;
    match limit {
        Limit::NodeBytes => {
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            call.send(framed(&service.message(node(&"n".repeat(1000)), 0)));
            Some(call.status().await)
        }
        Limit::SubscriptionNames => {
            // Beyond the limit and beyond what the snapshot serves of any type (3 at most).
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            call.send(framed(&service.message(node("names"), 20)));
            Some(call.status().await)
        }
        Limit::NameBytes => {
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            call.send(framed(&service.message_naming(node("long"), vec!["n".repeat(100)])));
            Some(call.status().await)
        }
        Limit::SubscriptionBytes => {
            // 500 bytes of names, beyond the limit and the names the snapshot serves.
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            let names = (0..50).map(|i| format!("name-{i:04}")).collect();
            call.send(framed(&service.message_naming(node("bytes"), names)));
            Some(call.status().await)
        }
        Limit::NackMessageBytes => {
            // Not a refusal: the message is cut where it is kept, and counted.
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            call.send(framed(&service.message(node(&format!("nacker-{}", service.path())), 0)));
            let first = call.first_message().await;
            let nonce = match service {
                Service::Ads(true) | Service::Single(_, true) => {
                    envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse::decode(first).unwrap().nonce
                }
                _ => envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse::decode(first).unwrap().nonce,
            };
            call.send(framed(&service.nack(nonce, "x".repeat(100_000))));
            server.wait_until("the NACK is kept, cut", || {
                http_get(server.debug, "/debug/proxies")
                    .is_some_and(|(_, body)| body.contains("xxxxxxxxxxxxxxxx... [100000 bytes, cut]"))
            });
            drop(call);
            None
        }
        Limit::StreamsPerConnection => {
            let mut connection = Connection::open(xds).await;
            let _held = [connection.call(service).await, connection.call(service).await];
            let third = connection.call(service).await;
            Some(third.status().await)
        }
        Limit::Connections | Limit::ConnectionsPerPeer => {
            server.wait_until("the last service's connections are closed", || {
                server.metric("edgexds_xds_connections") == 0.0
            });
            let mut held = Vec::new();
            for _ in 0..2 {
                let mut connection = Connection::open(xds).await;
                // A connection counts once it is accepted, and as authenticated once a call was
                // let in; the call's response headers say it was.
                let mut call = connection.call(Service::Ads(true)).await;
                call.body().await.expect("let in");
                held.push((connection, call));
            }
            let mut extra = Connection::open(xds).await;
            let call = extra.call(service).await;
            Some(call.status().await)
        }
        Limit::UnauthenticatedConnections => {
            server.wait_until("the last service's connections are closed", || {
                server.metric("edgexds_xds_connections") == 0.0
            });
            // Connections that opened no stream yet, all from this address: the pool is full,
            // and this address holds the most.
            let mut held = Vec::new();
            for _ in 0..2 {
                held.push(Connection::open(xds).await);
            }
            server.wait_until("both are held", || server.metric("edgexds_xds_unauthenticated_connections") == 2.0);
            let mut extra = Connection::open(xds).await;
            let call = extra.call(service).await;
            Some(call.status().await)
        }
        Limit::RequestBytes => {
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            call.send(started(1025, 10));
            Some(call.status().await)
        }
        Limit::PendingRequestBytes => {
            // The last round's holder may still be counted: had this round's holder come after
            // this round's call, the holder would be the one refused, and the call left hanging.
            server.wait_until("the last holder's bytes are released", || {
                server.metric("edgexds_xds_pending_request_bytes") == 0.0
            });
            let mut holder = Connection::open(xds).await;
            let mut held = holder.call(Service::Ads(true)).await;
            held.send(started(2000, 1500));
            server.wait_until("the holder's bytes are held", || {
                server.metric("edgexds_xds_pending_request_bytes") >= 1505.0
            });
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            call.send(started(2000, 1000));
            let status = call.status().await;
            drop(held);
            Some(status)
        }
        Limit::RequestTimeout => {
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            call.send(started(100, 10));
            Some(call.status().await)
        }
        Limit::CsdsResponseBytes => {
            let _proxy = support::subscriber(xds, node("a-proxy-to-report")).await;
            server.wait_until("the proxy is connected", || {
                http_get(server.debug, "/debug/proxies").is_some_and(|(_, body)| body.contains("a-proxy-to-report"))
            });
            let mut connection = Connection::open(xds).await;
            let mut call = connection.call(service).await;
            call.send(framed(&ClientStatusRequest::default().encode_to_vec()));
            Some(call.status().await)
        }
        // Answers are built in microseconds, so two cannot be made to overlap from outside;
        // `xds::csds` holds a slot by hand to test this refusal.
        Limit::ConcurrentCsds | Limit::HandshakeTimeout | Limit::UnauthenticatedGrace | Limit::TokenReviewsPerPeer => {
            unreachable!("not triggered per service")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_refuses_every_service_it_bounds_with_its_status_and_flag_and_counts_each_refusal() {
    let dir = manifests();
    for limit in Limit::ALL {
        let spec = limit.spec();
        let applied: Vec<Service> = services().into_iter().filter(|s| applies(limit, *s)).collect();
        // ConcurrentCsds bounds CSDS, but cannot be made to refuse from outside (see `trigger`).
        if applied.is_empty() || limit == Limit::ConcurrentCsds {
            continue;
        }
        let server = Server::start(dir.path(), &flags(limit), Stdio::null());
        for service in applied {
            let before = hits(&server, limit);
            eprintln!("{limit:?} on {service:?}");
            let status = tokio::time::timeout(Duration::from_secs(10), trigger(limit, service, &server))
                .await
                .unwrap_or_else(|_| panic!("{limit:?} on {service:?}: no refusal within 10 s"));
            if let Some(status) = status {
                assert_eq!(status.code(), spec.code, "{limit:?} on {service:?}: {status}");
                assert!(status.message().contains(&format!("--{}", spec.flag)), "{limit:?} on {service:?}: {status}");
            }
            server.wait_until(&format!("{limit:?} on {service:?} is counted"), || hits(&server, limit) == before + 1.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout_and_counted() {
    use std::io::Read;
    let dir = manifests();
    let server = Server::start(dir.path(), &flags(Limit::HandshakeTimeout), Stdio::null());
    let mut silent = std::net::TcpStream::connect(server.xds).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    // The server's SETTINGS frame may come first; then the close.
    let read = silent.read_to_end(&mut Vec::new());
    assert!(read.is_ok(), "closed by the server, not timed out: {read:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "after the 1 s handshake timeout");
    server.wait_until("it is counted", || hits(&server, Limit::HandshakeTimeout) == 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_no_stream_holds_is_closed_after_the_grace_and_one_a_stream_holds_is_not() {
    let dir = manifests();
    let server = Server::start(dir.path(), &flags(Limit::UnauthenticatedGrace), Stdio::null());
    // A connection whose only call was answered: nothing holds it. Its grace runs from the
    // server's accept, which comes after this instant and before the handshake ends.
    let started = std::time::Instant::now();
    let mut answered = Connection::open(server.xds).await;
    let mut check = answered.call_path("/grpc.health.v1.Health/Check").await;
    check.up.send_data(framed(&[]), true).expect("the stream is open");
    assert_eq!(check.status().await.code(), tonic::Code::Ok);
    // One with a stream open all along.
    let mut holding = Connection::open(server.xds).await;
    let mut stream = holding.call(Service::Ads(true)).await;
    stream.send(framed(&Service::Ads(true).message(node("held"), 0)));
    stream.first_message().await;

    tokio::time::timeout(Duration::from_secs(10), answered.driver).await.expect("closed").unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the 1 s grace");
    assert!(!holding.driver.is_finished(), "a held connection stays");
    server.wait_until("it is counted", || hits(&server, Limit::UnauthenticatedGrace) == 1.0);
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), holding.driver).await.expect("closed once its stream ended").unwrap();
    server.wait_until("it is counted", || hits(&server, Limit::UnauthenticatedGrace) == 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_valid_protobuf_is_invalid_argument_on_every_service() {
    let dir = manifests();
    let server = Server::start(dir.path(), &["--active-health-checks", "hds"], Stdio::null());
    // A node whose id (field 1) is not UTF-8, in the field each first message carries it in.
    let bad_node: &[u8] = &[0x0a, 0x02, 0xff, 0xfe];
    for service in services() {
        let node_field: u8 = match service {
            Service::Ads(true) | Service::Single(_, true) => 1,
            Service::Ads(false) | Service::Single(_, false) | Service::Csds => 2,
            Service::Hds => 1,
        };
        let mut message = vec![node_field << 3 | 2, bad_node.len() as u8];
        message.extend_from_slice(bad_node);
        if service == Service::Hds {
            // health_check_request (field 1) around the node.
            message = [vec![0x0a, message.len() as u8], message].concat();
        }
        let mut connection = Connection::open(server.xds).await;
        let mut call = connection.call(service).await;
        call.send(framed(&message));
        let status = call.status().await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{service:?}: {status}");
    }
}
