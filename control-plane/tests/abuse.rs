//! The `edgexds` binary against careless writers and hostile clients: each test is
//! one class of abuse from the hardening review, and fails on the code before it.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::binary::http_get;
use support::{EDS, Server, node, service, slice, subscriber};

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
        tokio::task::spawn_blocking(move || support::careless_writer::rewrite_slowly(&file, &changed))
    };
    let (_, update) = tokio::time::timeout(Duration::from_secs(5), responses.recv()).await.unwrap().unwrap();
    writer.await.unwrap();
    assert!(update.removed_resources.is_empty(), "nothing may be removed while the file is rewritten: {update:?}");
    assert_eq!(update.type_url, EDS, "only the endpoint changed: {update:?}");
    // Exactly one update, for the finished file: the next change's response comes next.
    std::fs::write(file.with_file_name("api.yaml"), service("api", 81)).unwrap();
    let (_, next) = tokio::time::timeout(Duration::from_secs(5), responses.recv()).await.unwrap().unwrap();
    assert_eq!(next.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["api.shop:81"], "{next:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_names_a_stream_holds_are_bounded_in_bytes_and_their_memory_returns_when_it_closes() {
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    const STREAMS: usize = 16;
    /// Requests of 200 names of 500 bytes per type: 900 kB, just under the 1 MiB default.
    const REQUESTS: usize = 9;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), service("web", 80)).unwrap();
    let server = Server::start(dir.path(), &[], Stdio::null());
    let _healthy = subscriber(server.xds, node("healthy")).await;
    let baseline = server.rss_kib();
    let names = |stream: usize, request: usize| -> Vec<String> {
        (0..200).map(|i| format!("{stream:02}-{request:03}-{i:03}-{}", "n".repeat(488))).collect()
    };
    let mut held = Vec::new();
    for stream in 0..STREAMS {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.xds)).unwrap().connect().await.unwrap();
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        // Names that exist nowhere, for two types: each request is answered (they are absent).
        for request in 0..REQUESTS {
            for ty in [EDS, support::CDS] {
                let ask = DeltaDiscoveryRequest {
                    type_url: ty.into(),
                    node: (request == 0 && ty == EDS).then(|| node(&format!("hoarder-{stream}"))),
                    resource_names_subscribe: names(stream, request),
                    ..Default::default()
                };
                tx.send(ask).await.unwrap();
                let answered = tokio::time::timeout(Duration::from_secs(10), responses.message()).await;
                assert!(matches!(answered, Ok(Ok(Some(_)))), "stream {stream} request {request} {ty}: {answered:?}");
            }
        }
        held.push((tx, responses));
    }
    let peak = server.rss_kib();
    // 200 kB more passes the limit: refused, naming the flag.
    let (tx, responses) = held.last_mut().unwrap();
    let subscribe = [names(99, 0), names(99, 1)].concat();
    let more =
        DeltaDiscoveryRequest { type_url: EDS.into(), resource_names_subscribe: subscribe, ..Default::default() };
    tx.send(more).await.unwrap();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), responses.message()).await.unwrap() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("--max-subscription-bytes"), "{status}");
    drop(held);
    server.wait_until("every hoarding stream is closed", || server.metric("edgexds_xds_streams{") <= 1.0);
    // Freed memory goes back to the system after the allocator's decay time (1 s); what stays
    // is the tables' grown capacity and the allocator's own (about 5 MiB, measured).
    const MARGIN_KIB: u64 = 8 * 1024;
    let closed = Instant::now();
    let mut after = server.rss_kib();
    while after >= baseline + MARGIN_KIB && closed.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = server.rss_kib();
    }
    eprintln!(
        "RSS: {baseline} KiB at rest, {peak} KiB with {STREAMS} streams near their name limit, {after} KiB {:?} after they closed",
        closed.elapsed()
    );
    let bound = STREAMS as u64 * 2 * 1024;
    assert!(peak < baseline + 2 * bound, "about 1 MiB of names per type and stream, at most twice that in all");
    assert!(
        after < baseline + MARGIN_KIB,
        "memory returns to within 8 MiB of the baseline: {after} KiB after, {baseline} KiB before"
    );
}
