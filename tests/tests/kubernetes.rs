//! The Kubernetes source through kube-rs, against an API server with real list/watch semantics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgexds::cache::ResourceType;
use edgexds::hds::HdsConfig;
use edgexds::serve::Running;
use edgexds::translate::{ActiveHealthChecks, TranslateOptions};
use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::hds_client::HdsClient;
use edgexds_tests::http;
use edgexds_tests::kube_api::{FakeApiServer, Kind};
use edgexds_tests::kube_objects::{probe, service, slice, web_probe};
use edgexds_tests::kube_session::{PATIENCE, ips, seed, subscribe, until};
use edgexds_tests::xds::{CDS, DeltaClient, EDS, names, removed};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use serde_json::{Value, json};

async fn readyz(cp: &Running) -> u16 {
    http::get(&format!("http://{}/readyz", cp.admin_addr)).await.map_or(0, |r| r.status)
}

fn endpoint_count(response: &DeltaDiscoveryResponse) -> usize {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::Message;
    response
        .resources
        .iter()
        .map(|r| ClusterLoadAssignment::decode(r.resource.as_ref().unwrap().value.as_slice()).unwrap())
        .map(|cla| cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum::<usize>())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_is_served_and_readiness_waits_for_every_list() {
    let api = FakeApiServer::start().await;
    seed(&api);
    api.set_available(false);
    let cp = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();
    let mut client = DeltaClient::connect(cp.xds_addr).await;
    client.subscribe(CDS, &[]).await;
    // The watches have tried to list, and been refused.
    let deadline = Instant::now() + PATIENCE;
    while api.refused_requests() == 0 {
        assert!(Instant::now() < deadline, "the control plane never tried to list");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(readyz(&cp).await, 503, "not ready before the initial lists");
    client.assert_quiet().await;
    api.set_available(true);
    let cds = client.next().await;
    assert_eq!(names(&cds), ["web.shop:80"]);
    client.ack(&cds).await;
    client.subscribe(EDS, &["web.shop:80"]).await;
    let eds = client.next().await;
    assert_eq!(endpoint_count(&eds), 2);
    assert_eq!(readyz(&cp).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_and_delete_of_each_kind_reach_a_delta_client() {
    let api = FakeApiServer::start().await;
    let cp = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();
    let mut client = DeltaClient::connect(cp.xds_addr).await;
    let (cds, eds) = subscribe(&mut client, &["web.shop:80"]).await;
    assert!(cds.resources.is_empty());
    assert_eq!(removed(&eds), ["web.shop:80"]);

    api.apply(service("shop", "web", 80, json!({})));
    until(&mut client, "service created", |r| r.type_url == CDS && names(r) == ["web.shop:80"]).await;
    api.apply(slice("shop", "web-1", "web", 8080, &ips(&["10.0.0.1"])));
    until(&mut client, "slice created", |r| r.type_url == EDS && endpoint_count(r) == 1).await;
    api.apply(slice("shop", "web-1", "web", 8080, &ips(&["10.0.0.1", "10.0.0.2"])));
    until(&mut client, "slice updated", |r| r.type_url == EDS && endpoint_count(r) == 2).await;
    api.apply(web_probe("shop", "web", "web", 5000, 500));
    until(&mut client, "probe created", |r| r.type_url == CDS && names(r) == ["web.shop:80"]).await;
    api.apply(web_probe("shop", "web", "web", 3000, 500));
    until(&mut client, "probe updated", |r| r.type_url == CDS && names(r) == ["web.shop:80"]).await;
    api.delete(Kind::HealthProbe, "shop", "web");
    until(&mut client, "probe deleted", |r| r.type_url == CDS && names(r) == ["web.shop:80"]).await;
    api.delete(Kind::EndpointSlice, "shop", "web-1");
    until(&mut client, "slice deleted", |r| r.type_url == EDS && r.resources.len() == 1 && endpoint_count(r) == 0)
        .await;
    api.delete(Kind::Service, "shop", "web");
    until(&mut client, "service deleted", |r| r.type_url == CDS && removed(r) == ["web.shop:80"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_keeps_serving_then_converges_with_deletions_made_during_it() {
    edgexds_tests::init_test_logs();
    let api = FakeApiServer::start().await;
    seed(&api);
    api.apply(service("shop", "api", 81, json!({})));
    let cp = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();
    let mut client = DeltaClient::connect(cp.xds_addr).await;
    let (cds, _) = subscribe(&mut client, &["web.shop:80"]).await;
    assert_eq!(names(&cds), ["api.shop:81", "web.shop:80"]);

    api.set_available(false);
    // Changes the control plane cannot see, then history is compacted: the watch must re-list (410 Gone).
    api.delete(Kind::Service, "shop", "api");
    api.apply(slice("shop", "web-1", "web", 8080, &ips(&["10.0.0.1"])));
    api.compact();
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.assert_quiet().await;
    assert_eq!(readyz(&cp).await, 200, "still ready: Envoys keep their endpoints during an outage");
    let snapshot = cp.cache.current().unwrap();
    assert_eq!(snapshot.len(ResourceType::Cluster), 2, "the last state is still served unchanged");

    api.set_available(true);
    // The three watches recover independently, so the two changes may arrive in either order.
    let (mut service_removed, mut slice_changed) = (false, false);
    until(&mut client, "both changes made during the outage", |r| {
        service_removed |= r.type_url == CDS && removed(r) == ["api.shop:81"];
        slice_changed |= r.type_url == EDS && endpoint_count(r) == 1;
        service_removed && slice_changed
    })
    .await;
}

fn condition<'a>(object: &'a Value, type_: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

async fn wait_status(api: &FakeApiServer, name: &str, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(object) = api.get(Kind::HealthProbe, "shop", name)
            && what(&object)
        {
            return object;
        }
        assert!(
            Instant::now() < deadline,
            "status of {name} not as expected: {:?}",
            api.get(Kind::HealthProbe, "shop", name)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_conditions_say_valid_invalid_unresolved_and_conflicting() {
    let api = FakeApiServer::start().await;
    seed(&api);
    // The schema would reject this on a real server; edgexds must still say why it ignores it.
    api.apply(probe("shop", "invalid", json!({"targetRef": {"name": "web"}, "intervalMs": 500, "timeoutMs": 900})));
    api.apply(probe("shop", "unresolved", json!({"targetRef": {"name": "nope"}})));
    api.apply(probe("shop", "conflicting", json!({"targetRef": {"name": "web"}, "port": 80})));
    let _cp = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();

    let valid = wait_status(&api, "web", |o| condition(o, "Accepted")["status"] == "True").await;
    assert_eq!(condition(&valid, "ResolvedRefs")["status"], "True");
    assert_eq!(condition(&valid, "Conflicted")["status"], "False");
    assert_eq!(valid["status"]["matchedEndpoints"], 2);
    assert_eq!(valid["status"]["observedGeneration"], valid["metadata"]["generation"]);

    let invalid = wait_status(&api, "invalid", |o| condition(o, "Accepted")["status"] == "False").await;
    assert_eq!(condition(&invalid, "Accepted")["reason"], "Invalid");
    assert_eq!(condition(&invalid, "Accepted")["message"], "spec: timeoutMs (900) must not exceed intervalMs (500)");

    let unresolved = wait_status(&api, "unresolved", |o| condition(o, "ResolvedRefs")["status"] == "False").await;
    assert_eq!(condition(&unresolved, "ResolvedRefs")["reason"], "ServiceNotFound");
    assert_eq!(condition(&unresolved, "ResolvedRefs")["message"], "Service shop/nope not found");

    let conflicting = wait_status(&api, "conflicting", |o| condition(o, "Conflicted")["status"] == "True").await;
    assert_eq!(
        condition(&conflicting, "Conflicted")["message"],
        "HealthProbe shop/web already covers Service port web:80"
    );

    assert!(api.status_applies().iter().all(|(_, manager)| manager == "edgexds"));
    // Settled: no further writes, however long we wait.
    let settled = api.status_applies().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.status_applies().len(), settled, "no write loop");

    // A fix flips the condition, and its transition time moves.
    api.apply(probe(
        "shop",
        "invalid",
        json!({"targetRef": {"name": "web"}, "port": 81, "intervalMs": 500, "timeoutMs": 100}),
    ));
    let fixed = wait_status(&api, "invalid", |o| condition(o, "Accepted")["status"] == "True").await;
    assert_eq!(condition(&fixed, "ResolvedRefs")["reason"], "PortNotFound");
    assert_eq!(fixed["status"]["observedGeneration"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_against_one_api_server_serve_identical_versions_and_agree_on_status() {
    let api = FakeApiServer::start().await;
    seed(&api);
    api.apply(service("other", "db", 5432, json!({})));
    api.apply(slice("other", "db-1", "db", 5432, &ips(&["10.1.0.1"])));
    let one = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();
    let two = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();
    async fn versions(cp: &Running) -> BTreeMap<(String, String), String> {
        let mut client = DeltaClient::connect(cp.xds_addr).await;
        let (cds, eds) = subscribe(&mut client, &["web.shop:80", "db.other:5432"]).await;
        let tagged = |r: &DeltaDiscoveryResponse| {
            r.resources.iter().map(|x| ((r.type_url.clone(), x.name.clone()), x.version.clone())).collect::<Vec<_>>()
        };
        tagged(&cds).into_iter().chain(tagged(&eds)).collect()
    }
    let (a, b) = (versions(&one).await, versions(&two).await);
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a, b);
    wait_status(&api, "web", |o| condition(o, "Accepted")["status"] == "True").await;
    let settled = api.status_applies().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.status_applies().len(), settled, "two replicas do not fight over status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_service_selector_limit_what_is_served() {
    let api = FakeApiServer::start().await;
    api.apply(service("shop", "web", 80, json!({"expose": "true"})));
    api.apply(service("shop", "hidden", 80, json!({})));
    api.apply(service("other", "web", 80, json!({"expose": "true"})));
    let cp = ControlPlane::kubernetes(api.client(), &["shop"], Some("expose=true")).await.unwrap();
    let mut client = DeltaClient::connect(cp.xds_addr).await;
    client.subscribe(CDS, &[]).await;
    assert_eq!(names(&client.next().await), ["web.shop:80"]);
    // A label change moves a Service into the selection.
    api.apply(service("shop", "hidden", 80, json!({"expose": "true"})));
    assert_eq!(names(&client.next().await), ["hidden.shop:80"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_needs_only_list_watch_and_status_patch() {
    let api = FakeApiServer::start().await;
    seed(&api);
    let _cp = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();
    wait_status(&api, "web", |o| condition(o, "Accepted")["status"] == "True").await;
    let mut client = DeltaClient::connect(_cp.xds_addr).await;
    subscribe(&mut client, &["web.shop:80"]).await;
    api.apply(slice("shop", "web-1", "web", 8080, &ips(&["10.0.0.3"])));
    // The change went all the way through the watch before the verbs are read.
    until(&mut client, "slice change", |r| r.type_url == EDS).await;
    let used = api.verbs_used();
    // The same file is what the Helm chart tests check the rendered RBAC rules against.
    let expected: Vec<(String, String)> = serde_json::from_str(include_str!("../rbac-verbs.json")).unwrap();
    assert_eq!(used, expected, "the Helm chart's RBAC grants exactly these");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hds_verdicts_show_in_probe_status_as_healthy_and_unhealthy_endpoints() {
    let api = FakeApiServer::start().await;
    seed(&api);
    let translate = TranslateOptions { active_health_checks: ActiveHealthChecks::Hds, ..Default::default() };
    let cp = ControlPlane::kubernetes_with(api.client(), &[], None, translate, HdsConfig::default()).await.unwrap();
    let settled = wait_status(&api, "web", |o| o["status"]["healthyEndpoints"] == 2).await;
    assert_eq!(settled["status"]["unhealthyEndpoints"], 0);

    let mut checker = HdsClient::connect(cp.xds_addr, "checker-1").await.unwrap();
    let mut schedule = checker.schedule().await.unwrap();
    while schedule.cluster_health_checks.is_empty() {
        schedule = checker.schedule().await.unwrap();
    }
    // Reports inside the warm-up (probe timeout + 200ms) are ignored: report, as a checker
    // does, until one counts.
    let deadline = Instant::now() + PATIENCE;
    loop {
        checker.report(&schedule, &["10.0.0.1"]).await.unwrap();
        let status = api.get(Kind::HealthProbe, "shop", "web").unwrap_or_default();
        if status["status"]["unhealthyEndpoints"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the failing report never counted: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let judged = wait_status(&api, "web", |o| o["status"]["unhealthyEndpoints"] == 1).await;
    assert_eq!(judged["status"]["healthyEndpoints"], 1);
    assert_eq!(judged["status"]["matchedEndpoints"], 2);

    checker.report(&schedule, &[]).await.unwrap();
    wait_status(&api, "web", |o| o["status"]["healthyEndpoints"] == 2).await;
}
