//! Shared by the binary's abuse tests: the binary on free ports, and a delta client.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[path = "../../../tests/src/careless_writer.rs"]
pub mod careless_writer;

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub child: Child,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
    pub debug: SocketAddr,
}

impl Server {
    /// Starts the binary on `dir` with `extra` flags; its log goes to `stderr`.
    pub fn start(dir: &Path, extra: &[&str], stderr: Stdio) -> Self {
        let [xds, admin, debug]: [SocketAddr; 3] =
            std::array::from_fn(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap());
        // EDGEXDS_BIN runs the same tests against another build, e.g. to measure "before".
        let binary = std::env::var("EDGEXDS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_edgexds").to_owned());
        let child = Command::new(binary)
            .args(["serve", "--manifests"])
            .arg(dir)
            .args(["--xds-addr", &xds.to_string(), "--admin-addr", &admin.to_string()])
            .args(["--debug-addr", &debug.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("edgexds runs");
        let server = Self { child, xds, admin, debug };
        server.wait_until("ready", || http_get(admin, "/readyz").is_some_and(|(status, _)| status == 200));
        server
    }

    /// Polls `done` until it holds (an event the test waits for), at most 20 s.
    pub fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = http_get(self.admin, "/metrics").expect("metrics answer");
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    /// User plus system CPU time so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let status = reply.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, reply.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()))
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
