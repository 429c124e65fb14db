//! The `edgexds` binary against careless writers and hostile clients: each test is
//! one class of abuse from the hardening review, and fails on the code before it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use support::{CDS, EDS, Server, http_get, node, service, slice, subscriber};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Writes `content` the way `(sleep 0.3; cat src) > file` does: truncate, wait, write in two halves.
fn slow_rewrite(path: &Path, content: &str) {
    let mut file = std::fs::File::create(path).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (first, rest) = content.split_at(content.len() / 2);
    file.write_all(first.as_bytes()).unwrap();
    file.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    file.write_all(rest.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plain_rewrite_never_publishes_the_empty_or_half_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, format!("{}---\n{}", service("web", 80), slice("web", "10.0.0.1"))).unwrap();
    let server = Server::start(dir.path(), &["--debounce", "20ms"], Stdio::null());
    let mut responses = subscriber(server.xds, node("sidecar")).await;
    let (_, first) = responses.recv().await.unwrap();
    assert_eq!(first.resources[0].name, "web.shop:80");
    let _endpoints = responses.recv().await.unwrap();

    let changed = format!("{}---\n{}", service("web", 80), slice("web", "10.0.0.2"));
    let writer = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || slow_rewrite(&file, &changed))
    };
    let (_, update) = tokio::time::timeout(Duration::from_secs(5), responses.recv()).await.unwrap().unwrap();
    writer.await.unwrap();
    assert!(update.removed_resources.is_empty(), "nothing may be removed while the file is rewritten: {update:?}");
    assert_eq!(update.type_url, EDS, "only the endpoint changed: {update:?}");
    let quiet = tokio::time::timeout(Duration::from_millis(500), responses.recv()).await;
    assert!(quiet.is_err(), "exactly one update, for the finished file: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_scans_nothing_and_uses_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), service("web", 80)).unwrap();
    let server = Server::start(dir.path(), &[], Stdio::null());
    // Settle: /readyz answers 200 after the first scan and publication; start-up work may
    // still finish (threads parking, the first log lines), so wait for a quiet half second.
    let mut last = server.cpu_ticks();
    server.wait_until("start-up work is done", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = server.cpu_ticks();
        std::mem::replace(&mut last, now) == now
    });
    let (scans, ticks) = (server.metric("edgexds_manifest_scans_total"), server.cpu_ticks());
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Ticks first: answering the metrics request below costs CPU of its own.
    let used = server.cpu_ticks() - ticks;
    assert_eq!(server.metric("edgexds_manifest_scans_total"), scans, "no rescan while nothing changes");
    eprintln!("idle for 10 s: {used} CPU ticks");
    assert!(used <= 3, "{used} CPU ticks (10 ms each) in 10 s of idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_and_recreated_directory_is_watched_again_at_once() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("web.yaml"), service("web", 80)).unwrap();
    let server = Server::start(&dir, &["--debounce", "20ms"], Stdio::null());
    let mut responses = subscriber(server.xds, node("sidecar")).await;
    let _ = responses.recv().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(dir.join("api.yaml"), service("api", 81)).unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let (_, response) = responses.recv().await.unwrap();
            if response.resources.iter().any(|r| r.name == "api.shop:81") {
                return response;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "the new file is seen through events, not the 60 s rescan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_pipe_nobody_reads_never_stops_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), service("web", 80)).unwrap();
    // stderr is a pipe this test never reads: once its 64 kB fill, every write would block.
    let server = Server::start(dir.path(), &["--log-level", "debug", "--debounce", "1ms"], Stdio::piped());
    for round in 0..300 {
        std::fs::write(dir.path().join("web.yaml"), service("web", 80 + round % 2)).unwrap();
        let mut client = subscriber(server.xds, node(&format!("noisy-{round}"))).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), client.recv()).await;
    }
    let started = Instant::now();
    let healthy = http_get(server.admin, "/healthz");
    assert_eq!(healthy.map(|(status, _)| status), Some(200), "the admin port still answers");
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut responses = subscriber(server.xds, node("late")).await;
    let first = tokio::time::timeout(Duration::from_secs(2), responses.recv()).await;
    assert!(first.is_ok(), "xDS still serves");
    assert!(server.metric("edgexds_log_lines_dropped_total") > 0.0, "dropped lines are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_per_client_limit_answers_with_a_status_and_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), service("web", 80)).unwrap();
    let flags = ["--max-connections-per-peer", "3", "--handshake-timeout", "1s", "--max-subscription-names", "100"];
    let server = Server::start(dir.path(), &flags, Stdio::null());
    let xds = server.xds;

    // A node of megabytes.
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await.unwrap();
    let big = Node { id: "x".repeat(1 << 20), ..Default::default() };
    let request = DeltaDiscoveryRequest { type_url: CDS.into(), node: Some(big), ..Default::default() };
    let status = ads.delta_aggregated_resources(futures::stream::iter([request])).await.unwrap().into_inner();
    let status = first_error(status).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("--max-node-bytes"), "{status}");

    // A subscription to more names than allowed.
    let names = (0..101).map(|i| format!("c{i}")).collect();
    let request = DeltaDiscoveryRequest { type_url: CDS.into(), resource_names_subscribe: names, ..Default::default() };
    let stream = ads.delta_aggregated_resources(futures::stream::iter([request])).await.unwrap().into_inner();
    let status = first_error(stream).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("--max-subscription-names"), "{status}");

    // A connection that never sends the HTTP/2 preface is closed.
    let mut silent = TcpStream::connect(xds).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    // The server's SETTINGS frame may come first; then the close.
    let read = silent.read_to_end(&mut Vec::new());
    assert!(read.is_ok(), "closed by the server, not timed out: {read:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "after the 1 s handshake timeout");

    // Connections past the per-peer limit get a status on their requests.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Endpoint::from_shared(format!("http://{xds}")).unwrap().connect().await.unwrap());
    }
    let extra = Endpoint::from_shared(format!("http://{xds}")).unwrap().connect().await.unwrap();
    let request = DeltaDiscoveryRequest { type_url: CDS.into(), ..Default::default() };
    let refused = AggregatedDiscoveryServiceClient::new(extra)
        .delta_aggregated_resources(futures::stream::iter([request]))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("--max-connections-per-peer"), "{refused}");

    for limit in ["node_bytes", "subscription_names", "handshake_timeout", "connections_per_peer"] {
        let series = format!("edgexds_limit_hits_total{{limit=\"{limit}\"}}");
        assert!(server.metric(&series) >= 1.0, "{series} counted");
    }
    drop(ads);
}

async fn first_error(mut stream: tonic::Streaming<DeltaDiscoveryResponse>) -> tonic::Status {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => return status,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_stream_nack_and_csds_limits_hold_through_the_binary() {
    use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    use envoy_types::pb::google::rpc;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), service("web", 80)).unwrap();
    let flags = [
        "--max-streams-per-connection",
        "2",
        "--max-connections",
        "3",
        "--max-nack-message-bytes",
        "16",
        "--max-csds-response-bytes",
        "64",
    ];
    let server = Server::start(dir.path(), &flags, Stdio::null());
    let xds = server.xds;
    let channel = Endpoint::from_shared(format!("http://{xds}")).unwrap().connect().await.unwrap();
    let mut ads = AggregatedDiscoveryServiceClient::new(channel.clone());

    // Two streams on one connection, each NACKing with a long message; a third is refused.
    let mut open = Vec::new();
    for index in 0..2 {
        let (tx, rx) = mpsc::channel(4);
        let request = DeltaDiscoveryRequest {
            type_url: CDS.into(),
            node: Some(node(&format!("nacker-{index}"))),
            ..Default::default()
        };
        tx.send(request).await.unwrap();
        let mut responses = ads.delta_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
        let first = responses.message().await.unwrap().unwrap();
        let error_detail = Some(rpc::Status { code: 3, message: "x".repeat(100_000), details: vec![] });
        let nack = DeltaDiscoveryRequest {
            type_url: CDS.into(),
            response_nonce: first.nonce,
            error_detail,
            ..Default::default()
        };
        tx.send(nack).await.unwrap();
        open.push((tx, responses));
    }
    let third = ads.delta_aggregated_resources(futures::stream::pending::<DeltaDiscoveryRequest>()).await;
    let status = match third {
        Err(status) => status,
        Ok(response) => first_error(response.into_inner()).await,
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("--max-streams-per-connection"), "{status}");

    server.wait_until("the NACKs are recorded", || {
        http_get(server.debug, "/debug/proxies").is_some_and(|(_, body)| body.matches("NACKED").count() >= 2)
    });
    let (_, proxies) = http_get(server.debug, "/debug/proxies").unwrap();
    assert!(proxies.contains("xxxxxxxxxxxxxxxx... [100000 bytes, cut]"), "{proxies}");
    assert!(proxies.len() < 10_000, "the kept messages are cut: {} bytes", proxies.len());

    // CSDS, on a second connection (the first has no stream left): the answer would be larger than 64 bytes.
    let second = Endpoint::from_shared(format!("http://{xds}")).unwrap().connect().await.unwrap();
    let mut csds = ClientStatusDiscoveryServiceClient::new(second);
    let refused = csds.fetch_client_status(ClientStatusRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("--max-csds-response-bytes"), "{refused}");

    // Connections: a third fits, the fourth is refused.
    let _third = Endpoint::from_shared(format!("http://{xds}")).unwrap().connect().await.unwrap();
    let fourth = Endpoint::from_shared(format!("http://{xds}")).unwrap().connect().await.unwrap();
    let request = DeltaDiscoveryRequest { type_url: CDS.into(), ..Default::default() };
    let refused = AggregatedDiscoveryServiceClient::new(fourth)
        .delta_aggregated_resources(futures::stream::iter([request]))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(refused.message().contains("--max-connections"), "{refused}");

    for limit in ["streams_per_connection", "nack_message_bytes", "csds_response_bytes", "connections"] {
        let series = format!("edgexds_limit_hits_total{{limit=\"{limit}\"}}");
        assert!(server.metric(&series) >= 1.0, "{series} counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_manifests_are_refused_quickly_and_the_good_ones_served() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), service("web", 80)).unwrap();
    // 200 kB of nested flow sequences: minutes of parsing before the depth limit.
    let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(dir.path().join("deep.yaml"), deep).unwrap();
    let overrides: String =
        (0..20_000).map(|i| format!("  - {{ match: {{ zone: z{i} }}, intervalMs: 1000 }}\n")).collect();
    let probe = format!(
        "apiVersion: edgexds.io/v1alpha1\nkind: HealthProbe\nmetadata: {{ name: web, namespace: shop }}\nspec:\n  targetRef: {{ name: web }}\n  overrides:\n{overrides}"
    );
    std::fs::write(dir.path().join("probe.yaml"), probe).unwrap();
    std::fs::write(dir.path().join("long.yaml"), service(&"a".repeat(10_000), 80)).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop")).unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let server = Server::start(dir.path(), &["--log-format", "json"], Stdio::from(log.reopen().unwrap()));
    eprintln!("hostile manifests: ready in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "ready in {:?}", started.elapsed());
    let mut responses = subscriber(server.xds, node("sidecar")).await;
    let (_, first) = responses.recv().await.unwrap();
    let names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["web.shop:80"], "only the good file is served");
    let logged = std::fs::read_to_string(log.path()).unwrap();
    for expected in ["nested deeper than 64", "at most 32 items", "no more than 63 characters"] {
        assert!(logged.contains(expected), "{expected:?} not logged:\n{logged}");
    }
    assert!(logged.len() < 20_000, "hostile names are not logged whole ({} bytes)", logged.len());
}
