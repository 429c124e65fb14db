//! What operators see: metrics after a scripted session, proxy status, CSDS, with a real Envoy.

use std::collections::BTreeMap;
use std::time::Duration;

use edgexds::translate::TranslateOptions;
use edgexds::xds::{ProxyReport, SyncState};
use edgexds_tests::control_plane::{ControlPlane, web_probe, web_service, web_slice};
use edgexds_tests::envoy::Envoy;
use edgexds_tests::eventually;
use edgexds_tests::http;
use edgexds_tests::upstream::Upstream;
use edgexds_tests::xds::{CDS, DeltaClient, EDS};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{ClientConfigStatus, ClientStatusRequest};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};

async fn control_plane() -> (ControlPlane, Upstream, Upstream) {
    let (one, two) = Upstream::pair("one", "two").await;
    let cp = ControlPlane::start(TranslateOptions::default()).await.unwrap();
    cp.write("web.yaml", &web_service());
    cp.write("web-slice.yaml", &web_slice(&[&one, &two]));
    cp.write("web-probe.yaml", &web_probe(5000, 500));
    eventually(Duration::from_secs(10), "first snapshot", || async { cp.running.cache.current().map(|_| ()) }).await;
    (cp, one, two)
}

/// Metric samples by full series name, e.g. `edgexds_xds_acks_total{type="cds"}`.
async fn scrape(cp: &ControlPlane) -> BTreeMap<String, f64> {
    let reply = http::get(&format!("http://{}/metrics", cp.running.admin_addr)).await.unwrap();
    assert_eq!(reply.status, 200);
    reply
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| v.parse().ok().map(|v| (k.to_owned(), v))))
        .collect()
}

async fn proxies(cp: &ControlPlane) -> Vec<ProxyReport> {
    let reply = http::get(&format!("http://{}/debug/proxies", cp.running.debug_addr)).await.unwrap();
    serde_json::from_str(&reply.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_session_exactly() {
    let (cp, one, _two) = control_plane().await;
    let before = scrape(&cp).await;
    assert_eq!(before["edgexds_snapshot_clusters"], 1.0);
    assert_eq!(before["edgexds_snapshot_endpoints"], 2.0);
    assert_eq!(before[&format!("edgexds_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))], 1.0);

    let mut client = DeltaClient::connect(cp.running.xds_addr).await;
    client.subscribe(CDS, &[]).await;
    let cds = client.next().await;
    client.ack(&cds).await;
    client.subscribe(EDS, &["web.shop:80"]).await;
    let eds = client.next().await;
    client.nack(&eds, "endpoint rejected for the test").await;
    cp.write("web-slice.yaml", &web_slice(&[&one]));
    let eds2 = client.next().await;
    client.ack(&eds2).await;
    // Wait for the last ACK to be counted, not for a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut after = scrape(&cp).await;
    while after.get("edgexds_xds_acks_total{type=\"eds\"}").copied().unwrap_or(0.0) < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the ACK was never counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = scrape(&cp).await;
    }
    let series = |name: &str| after.get(name).copied().unwrap_or(0.0);
    assert_eq!(series("edgexds_xds_streams{method=\"ads\",flavour=\"delta\"}"), 1.0);
    assert_eq!(series("edgexds_xds_responses_total{type=\"cds\"}"), 1.0);
    assert_eq!(series("edgexds_xds_responses_total{type=\"eds\"}"), 2.0);
    assert_eq!(series("edgexds_xds_resources_sent_total{type=\"cds\"}"), 1.0);
    assert_eq!(series("edgexds_xds_resources_sent_total{type=\"eds\"}"), 2.0);
    assert_eq!(series("edgexds_xds_acks_total{type=\"cds\"}"), 1.0);
    assert_eq!(series("edgexds_xds_acks_total{type=\"eds\"}"), 1.0);
    assert_eq!(series("edgexds_xds_nacks_total{type=\"eds\"}"), 1.0);
    assert_eq!(series("edgexds_convergence_seconds_count{type=\"eds\"}"), 1.0);
    assert_eq!(series("edgexds_push_latency_seconds_count"), 1.0, "one response carried a source change");
    assert!(series("edgexds_xds_sent_bytes_total{type=\"eds\"}") > 0.0);
    assert_eq!(
        series("edgexds_source_events_total{kind=\"manifests\"}")
            - before.get("edgexds_source_events_total{kind=\"manifests\"}").copied().unwrap_or(0.0),
        1.0
    );
    assert_eq!(series("edgexds_snapshot_endpoints"), 1.0);
    assert!(series("edgexds_translation_duration_seconds_count") >= 2.0);

    drop(client);
    eventually(Duration::from_secs(5), "stream gauge back to zero", || async {
        (scrape(&cp).await.get("edgexds_xds_streams{method=\"ads\",flavour=\"delta\"}") == Some(&0.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacking_client_shows_as_nacked_with_its_message_in_proxies_and_csds() {
    let (cp, _one, _two) = control_plane().await;
    let mut client = DeltaClient::connect(cp.running.xds_addr).await;
    client.subscribe(CDS, &[]).await;
    let cds = client.next().await;
    client.nack(&cds, "cluster web.shop:80: unsupported health checker").await;
    let (report, _) = eventually(Duration::from_secs(5), "NACKED in /debug/proxies", || async {
        proxies(&cp).await.into_iter().find(|p| p.state == SyncState::Nacked)
    })
    .await;
    assert_eq!(report.node_id, "test-node");
    let nack = report.types["cds"].last_nack.as_ref().unwrap();
    assert_eq!(nack.message, "cluster web.shop:80: unsupported health checker");
    let table = edgexds::ops::proxy_status::render(&[report]);
    assert!(table.contains("NACKED") && table.contains("unsupported health checker"), "{table}");

    let mut csds =
        ClientStatusDiscoveryServiceClient::connect(format!("http://{}", cp.running.xds_addr)).await.unwrap();
    let status = csds.fetch_client_status(ClientStatusRequest::default()).await.unwrap().into_inner();
    let config = &status.config[0];
    assert_eq!(config.node.as_ref().unwrap().id, "test-node");
    let cluster = &config.generic_xds_configs[0];
    assert_eq!((cluster.type_url.as_str(), cluster.name.as_str()), (CDS, "web.shop:80"));
    assert_eq!(cluster.client_status, ClientConfigStatus::ClientNacked as i32);
    assert_eq!(cluster.error_state.as_ref().unwrap().details, "cluster web.shop:80: unsupported health checker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_envoy_is_synced_in_proxies_proxy_status_and_csds() {
    let (cp, _one, _two) = control_plane().await;
    let envoy = Envoy::start("ops-sidecar", cp.running.xds_addr).await.unwrap();
    let (report, _) = eventually(Duration::from_secs(30), "Envoy SYNCED with clusters and endpoints", || async {
        proxies(&cp).await.into_iter().find(|p| {
            p.state == SyncState::Synced
                && p.types.get("eds").is_some_and(|t| t.resources == 1 && t.version_acked.is_some())
                && p.types.get("cds").is_some_and(|t| t.resources == 1)
        })
    })
    .await;
    assert_eq!(
        (report.node_id.as_str(), report.cluster.as_str(), report.locality.as_str()),
        ("ops-sidecar", "e2e", "zone-a")
    );
    assert!(report.user_agent.starts_with("envoy 1.40"), "{}", report.user_agent);
    assert_eq!(
        report.types["cds"].version_acked.as_deref(),
        Some(cp.running.cache.current().unwrap().version(edgexds::cache::ResourceType::Cluster))
    );

    let debug = format!("http://{}", cp.running.debug_addr);
    let table = edgexds::ops::proxy_status::render(&edgexds::ops::proxy_status::fetch(&debug).await.unwrap());
    println!("{table}");
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("ops-sidecar") && l.contains("SYNCED")), "{table}");

    let mut csds =
        ClientStatusDiscoveryServiceClient::connect(format!("http://{}", cp.running.xds_addr)).await.unwrap();
    let only_envoy = ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact("ops-sidecar".into())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let status = csds.fetch_client_status(only_envoy).await.unwrap().into_inner();
    assert_eq!(status.config.len(), 1);
    let configs = &status.config[0].generic_xds_configs;
    let summary: Vec<_> = configs.iter().map(|c| (c.type_url.as_str(), c.name.as_str(), c.client_status)).collect();
    let acked = ClientConfigStatus::ClientAcked as i32;
    assert_eq!(summary, [(CDS, "web.shop:80", acked), (EDS, "web.shop:80", acked)]);
    assert!(configs.iter().all(|c| c.xds_config.is_some()), "resource contents are included");
    drop(envoy);
}
