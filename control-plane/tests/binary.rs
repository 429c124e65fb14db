//! The `edgexds` binary as operators run it: flags from the environment, readiness, logs, SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

const WEB: &str =
    "apiVersion: v1\nkind: Service\nmetadata: { name: web, namespace: shop }\nspec: { ports: [{ port: 80 }] }\n";

struct Server {
    child: Child,
    logs: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Server {
    /// Starts the binary configured only through EDGEXDS_* variables, with JSON logs.
    fn start(manifests: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgexds"))
            .arg("serve")
            .env("EDGEXDS_MANIFESTS", manifests)
            .env("EDGEXDS_XDS_ADDR", "127.0.0.1:0")
            .env("EDGEXDS_ADMIN_ADDR", "127.0.0.1:0")
            .env("EDGEXDS_DEBUG_ADDR", "127.0.0.1:0")
            .env("EDGEXDS_DEBOUNCE", "20ms")
            .env("EDGEXDS_LOG_FORMAT", "json")
            .env("EDGEXDS_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgexds runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        Self { child, logs, seen: Vec::new() }
    }

    /// Waits for a log line whose message contains `text`.
    fn wait_log(&mut self, text: &str) -> Value {
        if let Some(found) = self.seen.iter().find(|l| l["message"].as_str().is_some_and(|m| m.contains(text))) {
            return found.clone();
        }
        loop {
            let line = self.logs.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no log {text:?}"));
            self.seen.push(line.clone());
            if line["message"].as_str().is_some_and(|m| m.contains(text)) {
                return line;
            }
        }
    }

    fn addr(&mut self, field: &str) -> SocketAddr {
        self.wait_log("edgexds started")[field].as_str().unwrap().parse().unwrap()
    }

    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("edgexds did not exit within 10s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, "")
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, reply.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

#[test]
fn serve_takes_every_setting_from_the_environment_and_turns_ready() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), WEB).unwrap();
    let mut server = Server::start(dir.path());
    let admin = server.addr("admin_addr");
    server.wait_log("snapshot published");
    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(http_get(admin, "/readyz").0, 200);
}

#[test]
fn malformed_manifest_is_logged_with_file_and_line_and_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), WEB).unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: v1\nkind: Service\nmetadata:\n  name: x: y\n").unwrap();
    let mut server = Server::start(dir.path());
    let line = server.wait_log("malformed manifest");
    let expected = format!("{}:4:", dir.path().join("bad.yaml").display());
    assert!(line["message"].as_str().unwrap().contains(&expected), "{line}");
    let admin = server.addr("admin_addr");
    server.wait_log("snapshot published");
    assert_eq!(http_get(admin, "/readyz").0, 200, "the good files are served");
}

#[test]
fn sigterm_closes_streams_with_a_status_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), WEB).unwrap();
    let mut server = Server::start(dir.path());
    let xds = server.addr("xds_addr");
    server.wait_log("snapshot published");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let cds = edgexds::cache::ResourceType::Cluster.type_url();
        tx.send(DeltaDiscoveryRequest { type_url: cds.into(), ..Default::default() }).await.unwrap();
        let mut responses = client.delta_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let first = responses.message().await.unwrap().unwrap();
        assert_eq!(first.resources[0].name, "web.shop:80");
        server.terminate();
        let status = responses.message().await.unwrap_err();
        drop(tx);
        status
    });
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(status.message().contains("shutting down"));
    assert!(server.wait_exit().success());
    server.wait_log("edgexds stopped");
}

#[test]
fn serve_without_a_source_or_with_a_bad_flag_explains_itself() {
    let run = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_edgexds")).args(args).env_remove("EDGEXDS_MANIFESTS").output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run(&["serve", "--manifests", ".", "--namespaces", "a"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (code, stderr) = run(&["serve", "--manifests", ".", "--debounce", "5s"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("at most 1s"), "{stderr}");
    let (code, stderr) = run(&[
        "serve",
        "--manifests",
        "/nonexistent/dir",
        "--xds-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--debug-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("/nonexistent/dir"), "{stderr}");
}

/// Opens a delta ADS stream, subscribes to clusters and answers the first response.
async fn client(xds: SocketAddr, node: &str, nack: Option<&str>) -> tokio::sync::mpsc::Sender<DeltaDiscoveryRequest> {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::google::rpc;
    let cds = edgexds::cache::ResourceType::Cluster.type_url();
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let node = Some(Node { id: node.into(), ..Default::default() });
    tx.send(DeltaDiscoveryRequest { type_url: cds.into(), node, ..Default::default() }).await.unwrap();
    let mut responses = ads.delta_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let first = responses.message().await.unwrap().unwrap();
    let error_detail = nack.map(|m| rpc::Status { code: 3, message: m.into(), details: vec![] });
    tx.send(DeltaDiscoveryRequest {
        type_url: cds.into(),
        response_nonce: first.nonce,
        error_detail,
        ..Default::default()
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = responses.message().await {} });
    tx
}

fn proxy_status(debug: SocketAddr) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgexds"))
        .args(["proxy-status", "--debug-url", &format!("http://{debug}")])
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs proxy-status until its table shows what the test waits for (the ACK or NACK has
/// reached the server), at most 10 s; returns that run.
fn proxy_status_once(debug: SocketAddr, shows: impl Fn(&str) -> bool) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, table) = proxy_status(debug);
        if shows(&table) || std::time::Instant::now() > deadline {
            return (code, table);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn proxy_status_lists_proxies_and_fails_when_one_nacked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), WEB).unwrap();
    let mut server = Server::start(dir.path());
    let (xds, debug) = (server.addr("xds_addr"), server.addr("debug_addr"));
    server.wait_log("snapshot published");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _good = runtime.block_on(client(xds, "good-sidecar", None));
    let (code, table) = proxy_status_once(debug, |table| table.contains("good-sidecar") && table.contains("SYNCED"));
    assert_eq!(code, Some(0), "{table}");
    assert!(table.contains("good-sidecar") && table.contains("SYNCED"), "{table}");
    let _bad = runtime.block_on(client(xds, "bad-sidecar", Some("bad cluster config")));
    let (code, table) = proxy_status_once(debug, |table| table.contains("NACKED"));
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("NACKED") && table.contains("bad-sidecar rejected cds version"), "{table}");
    assert!(table.contains("bad cluster config"), "{table}");
    server.wait_log("Envoy rejected the update (NACK)");
    // Unreachable debug server: a distinct exit code and a clear message.
    let out = Command::new(env!("CARGO_BIN_EXE_edgexds"))
        .args(["proxy-status", "--debug-url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[test]
fn log_level_changes_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), WEB).unwrap();
    let mut server = Server::start(dir.path());
    let (xds, admin, debug) = (server.addr("xds_addr"), server.addr("admin_addr"), server.addr("debug_addr"));
    server.wait_log("snapshot published");
    assert_eq!(http(admin, "PUT", "/debug/log-level", "debug").0, 404, "not on the admin port");
    assert_eq!(http_get(debug, "/debug/log-level"), (200, "info\n".into()));
    assert_eq!(http(debug, "PUT", "/debug/log-level", "nonsense=[").0, 400);
    assert_eq!(http(debug, "PUT", "/debug/log-level", "debug").0, 200);
    assert_eq!(http_get(debug, "/debug/log-level"), (200, "debug\n".into()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _client = runtime.block_on(client(xds, "sidecar", None));
    let line = server.wait_log("sending");
    assert_eq!(line["level"], "DEBUG");
}
