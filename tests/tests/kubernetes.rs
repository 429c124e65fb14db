//! The Kubernetes source against a real kube-apiserver and etcd: our CRD as the server
//! takes it, status by server-side apply, and watch → model → delta xDS.
//!
//! One server serves every test of this binary; each test works in a namespace of its own
//! and runs edgexds limited to that namespace.
//!
//! Its EndpointSlices are written by hand, on purpose: these tests check the exact slice
//! shapes edgexds reads (a create, an update adding one address, a delete, per kind), which
//! the controller cannot be made to write one at a time, and no traffic flows to their
//! addresses. Slices from the real controller, with pods behind them, are the subject of
//! `cluster_rollout.rs`, `cluster_churn.rs` and `envoy_kubernetes.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgexds::hds::HdsConfig;
use edgexds::serve::Running;
use edgexds::translate::{ActiveHealthChecks, TranslateOptions};
use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::hds_client::HdsClient;
use edgexds_tests::kube_objects::{probe, service, slice, web_probe};
use edgexds_tests::kube_server::{KubeServer, apply, delete, get};
use edgexds_tests::kube_session::{PATIENCE, ips, subscribe, until};
use edgexds_tests::metric;
use edgexds_tests::xds::{CDS, DeltaClient, EDS, names, removed};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use serde_json::{Value, json};

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

/// The shared server, an admin client and a fresh namespace.
async fn session() -> (&'static KubeServer, kube::Client, String) {
    let server = tokio::task::spawn_blocking(KubeServer::shared).await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let namespace = server.namespace(&admin).await.unwrap();
    (server, admin, namespace)
}

async fn seed(admin: &kube::Client, ns: &str) {
    apply(admin, &service(ns, "web", 80, json!({}))).await.unwrap();
    apply(admin, &slice(ns, "web-1", "web", 8080, &ips(&["10.0.0.1", "10.0.0.2"]))).await.unwrap();
    apply(admin, &web_probe(ns, "web", "web", 5000, 500)).await.unwrap();
}

fn condition<'a>(object: &'a Value, type_: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

async fn wait_status(admin: &kube::Client, ns: &str, name: &str, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let object = get(admin, "HealthProbe", ns, name).await.unwrap();
        if let Some(object) = &object
            && what(object)
        {
            return object.clone();
        }
        assert!(Instant::now() < deadline, "status of {ns}/{name} not as expected: {object:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The API server's answer to a create: the message of a rejection, or `None`.
async fn rejection(admin: &kube::Client, object: Value) -> Option<String> {
    match apply(admin, &object).await {
        Ok(_) => None,
        Err(e) => Some(format!("{e:#}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_rules_reject_each_invalid_spec_with_its_message() {
    let (_, admin, ns) = session().await;
    let target = json!({"name": "web"});
    let cases = [
        (json!({"targetRef": target, "http": {}, "tcp": {}}), "exactly one of http, tcp, grpc may be set"),
        (json!({"targetRef": target, "intervalMs": 500, "timeoutMs": 900}), "timeoutMs must not exceed intervalMs"),
        (
            json!({"targetRef": target, "intervalMs": 2000, "timeoutMs": 500,
                   "overrides": [{"match": {"podName": "a-*"}, "intervalMs": 300}]}),
            "in every override, the effective timeoutMs must not exceed the effective intervalMs",
        ),
        (json!({"targetRef": {"kind": "Pod", "name": "web"}}), "spec.targetRef.kind"),
        (json!({"targetRef": target, "intervalMs": 10}), "spec.intervalMs"),
        // A line break in a header would make every sidecar reject the cluster.
        (json!({"targetRef": target, "http": {"host": "web\r\nX-Evil: 1"}}), "spec.http.host"),
        (json!({"targetRef": target, "http": {"path": "/ok\nGET /evil"}}), "spec.http.path"),
    ];
    for (index, (spec, message)) in cases.into_iter().enumerate() {
        let refused = rejection(&admin, probe(&ns, &format!("bad-{index}"), spec.clone())).await;
        let refused = refused.unwrap_or_else(|| panic!("the API server accepted {spec}"));
        assert!(refused.contains(message), "{spec}: expected {message:?} in {refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_applies_defaults_and_prunes_unknown_fields() {
    let (server, admin, ns) = session().await;
    let spec = json!({"targetRef": {"name": "web"}, "http": {}, "surprise": true, "intervalMs": 3000});
    // A create, as `kubectl create` or a client-side apply sends it: server-side apply refuses
    // unknown fields outright ("field not declared in schema") rather than pruning them.
    let resource = edgexds_tests::kube_server::resource_of(&probe(&ns, "web", json!({})));
    let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(admin.clone(), &ns, &resource);
    let object = serde_json::from_value(probe(&ns, "web", spec)).unwrap();
    api.create(&Default::default(), &object).await.unwrap();
    let stored = get(&admin, "HealthProbe", &ns, "web").await.unwrap().unwrap();
    assert_eq!(stored["spec"]["targetRef"]["kind"], "Service");
    assert_eq!(stored["spec"]["http"]["path"], "/healthz");
    assert!(stored["spec"].get("surprise").is_none(), "unknown fields are pruned: {}", stored["spec"]);

    // What an operator sees: the printer columns.
    let table = server.kubectl(&["get", "hp", "-n", &ns]).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "TARGET", "INTERVAL", "FAILURES", "ACCEPTED", "HEALTHY", "UNHEALTHY", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["web", "web", "3000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_update_and_delete_of_each_kind_reach_a_delta_client() {
    let (_, admin, ns) = session().await;
    let cp = ControlPlane::kubernetes(admin.clone(), &[&ns], None).await.unwrap();
    let cluster = format!("web.{ns}:80");
    let mut client = DeltaClient::connect(cp.xds_addr).await;
    let (cds, eds) = subscribe(&mut client, &[&cluster]).await;
    assert!(cds.resources.is_empty());
    assert_eq!(removed(&eds), [cluster.as_str()]);

    apply(&admin, &service(&ns, "web", 80, json!({}))).await.unwrap();
    until(&mut client, "service created", |r| r.type_url == CDS && names(r) == [cluster.as_str()]).await;
    apply(&admin, &slice(&ns, "web-1", "web", 8080, &ips(&["10.0.0.1"]))).await.unwrap();
    until(&mut client, "slice created", |r| r.type_url == EDS && endpoint_count(r) == 1).await;
    apply(&admin, &slice(&ns, "web-1", "web", 8080, &ips(&["10.0.0.1", "10.0.0.2"]))).await.unwrap();
    until(&mut client, "slice updated", |r| r.type_url == EDS && endpoint_count(r) == 2).await;
    apply(&admin, &web_probe(&ns, "web", "web", 5000, 500)).await.unwrap();
    until(&mut client, "probe created", |r| r.type_url == CDS && names(r) == [cluster.as_str()]).await;
    apply(&admin, &web_probe(&ns, "web", "web", 3000, 500)).await.unwrap();
    until(&mut client, "probe updated", |r| r.type_url == CDS && names(r) == [cluster.as_str()]).await;
    delete(&admin, "HealthProbe", &ns, "web").await.unwrap();
    until(&mut client, "probe deleted", |r| r.type_url == CDS && names(r) == [cluster.as_str()]).await;
    delete(&admin, "EndpointSlice", &ns, "web-1").await.unwrap();
    until(&mut client, "slice deleted", |r| r.type_url == EDS && r.resources.len() == 1 && endpoint_count(r) == 0)
        .await;
    delete(&admin, "Service", &ns, "web").await.unwrap();
    until(&mut client, "service deleted", |r| r.type_url == CDS && removed(r) == [cluster.as_str()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_conditions_say_valid_invalid_unresolved_and_conflicting() {
    let (_, admin, ns) = session().await;
    seed(&admin, &ns).await;
    // The only invalid specs that reach us are the ones the CRD's schema cannot express.
    let invalid = json!({"targetRef": {"name": "web"}, "port": 81, "overrides": [{"match": {"podName": "web-["}}]});
    apply(&admin, &probe(&ns, "invalid", invalid)).await.unwrap();
    apply(&admin, &probe(&ns, "unresolved", json!({"targetRef": {"name": "nope"}}))).await.unwrap();
    // Created in the same second as web (creationTimestamp has whole seconds): the tie goes by name.
    apply(&admin, &probe(&ns, "web-too", json!({"targetRef": {"name": "web"}, "port": 80}))).await.unwrap();
    let cp = ControlPlane::kubernetes(admin.clone(), &[&ns], None).await.unwrap();

    let valid = wait_status(&admin, &ns, "web", |o| condition(o, "Accepted")["status"] == "True").await;
    assert_eq!(condition(&valid, "ResolvedRefs")["status"], "True");
    assert_eq!(condition(&valid, "Conflicted")["status"], "False");
    assert_eq!(valid["status"]["matchedEndpoints"], 2);
    assert_eq!(valid["status"]["observedGeneration"], valid["metadata"]["generation"]);

    let invalid = wait_status(&admin, &ns, "invalid", |o| condition(o, "Accepted")["status"] == "False").await;
    assert_eq!(condition(&invalid, "Accepted")["reason"], "Invalid");
    let message = condition(&invalid, "Accepted")["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("spec.overrides[0].match.podName: invalid glob \"web-[\""), "{message}");

    let unresolved =
        wait_status(&admin, &ns, "unresolved", |o| condition(o, "ResolvedRefs")["status"] == "False").await;
    assert_eq!(condition(&unresolved, "ResolvedRefs")["reason"], "ServiceNotFound");
    assert_eq!(condition(&unresolved, "ResolvedRefs")["message"], format!("Service {ns}/nope not found"));

    let conflicting = wait_status(&admin, &ns, "web-too", |o| condition(o, "Conflicted")["status"] == "True").await;
    assert_eq!(
        condition(&conflicting, "Conflicted")["message"],
        format!("HealthProbe {ns}/web already covers Service port web:80")
    );

    // Real managedFields: edgexds owns status, by apply, on the status subresource, and nothing else.
    let managers = valid["metadata"]["managedFields"].as_array().unwrap();
    let ours: Vec<&Value> = managers.iter().filter(|m| m["manager"] == "edgexds").collect();
    assert_eq!(ours.len(), 1, "{managers:?}");
    assert_eq!((ours[0]["operation"].as_str(), ours[0]["subresource"].as_str()), (Some("Apply"), Some("status")));
    assert!(ours[0]["fieldsV1"].get("f:spec").is_none());

    // A fix flips the condition, and observedGeneration follows the spec edit.
    let fixed = json!({"targetRef": {"name": "web"}, "port": 81, "http": {"path": "/ready"}});
    apply(&admin, &probe(&ns, "invalid", fixed)).await.unwrap();
    let fixed = wait_status(&admin, &ns, "invalid", |o| condition(o, "Accepted")["status"] == "True").await;
    assert_eq!(condition(&fixed, "ResolvedRefs")["reason"], "PortNotFound");
    assert_eq!(fixed["metadata"]["generation"], 2);
    assert_eq!(fixed["status"]["observedGeneration"], 2);
    assert!(metric(&cp, "edgexds_kube_status_writes_total{result=\"failed\"}") == 0.0);
}

/// The resourceVersions of every probe in `ns`: they move only when something is written.
async fn probe_versions(admin: &kube::Client, ns: &str, names: &[&str]) -> Vec<String> {
    let mut versions = Vec::new();
    for name in names {
        let object = get(admin, "HealthProbe", ns, name).await.unwrap().unwrap();
        versions.push(object["metadata"]["resourceVersion"].as_str().unwrap().to_owned());
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_identical_versions_and_settle_on_one_status_without_ping_pong() {
    let (_, admin, ns) = session().await;
    seed(&admin, &ns).await;
    apply(&admin, &service(&ns, "db", 5432, json!({}))).await.unwrap();
    apply(&admin, &slice(&ns, "db-1", "db", 5432, &ips(&["10.1.0.1"]))).await.unwrap();
    apply(&admin, &probe(&ns, "db", json!({"targetRef": {"name": "db"}, "tcp": {}}))).await.unwrap();
    let one = ControlPlane::kubernetes(admin.clone(), &[&ns], None).await.unwrap();
    let two = ControlPlane::kubernetes(admin.clone(), &[&ns], None).await.unwrap();
    let clusters = [format!("web.{ns}:80"), format!("db.{ns}:5432")];
    let clusters: Vec<&str> = clusters.iter().map(String::as_str).collect();
    async fn versions(cp: &Running, clusters: &[&str]) -> BTreeMap<(String, String), String> {
        let mut client = DeltaClient::connect(cp.xds_addr).await;
        let (cds, eds) = subscribe(&mut client, clusters).await;
        let tagged = |r: &DeltaDiscoveryResponse| {
            r.resources.iter().map(|x| ((r.type_url.clone(), x.name.clone()), x.version.clone())).collect::<Vec<_>>()
        };
        tagged(&cds).into_iter().chain(tagged(&eds)).collect()
    }
    let (a, b) = (versions(&one, &clusters).await, versions(&two, &clusters).await);
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(a, b);

    for name in ["web", "db"] {
        wait_status(&admin, &ns, name, |o| condition(o, "Accepted")["status"] == "True").await;
    }
    // Settled: a window of two status-retry periods writes nothing, though both replicas
    // watch every status change the other makes.
    let settled = probe_versions(&admin, &ns, &["web", "db"]).await;
    let written = "edgexds_kube_status_writes_total{result=\"written\"}";
    let writes = metric(&one, written) + metric(&two, written);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(probe_versions(&admin, &ns, &["web", "db"]).await, settled, "no status ping-pong");
    // Each replica writes each status at most once or twice (its first sight may race the other's write).
    assert!(writes <= 4.0, "{writes} status writes for 2 probes by 2 replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespace_list_and_the_service_selector_limit_what_is_served() {
    let (server, admin, ns) = session().await;
    let other = server.namespace(&admin).await.unwrap();
    apply(&admin, &service(&ns, "web", 80, json!({"expose": "true"}))).await.unwrap();
    apply(&admin, &service(&ns, "hidden", 80, json!({}))).await.unwrap();
    apply(&admin, &service(&other, "web", 80, json!({"expose": "true"}))).await.unwrap();
    let cp = ControlPlane::kubernetes(admin.clone(), &[&ns], Some("expose=true")).await.unwrap();
    let mut client = DeltaClient::connect(cp.xds_addr).await;
    client.subscribe(CDS, &[]).await;
    assert_eq!(names(&client.next().await), [format!("web.{ns}:80")]);
    // A label change moves a Service into the selection.
    apply(&admin, &service(&ns, "hidden", 80, json!({"expose": "true"}))).await.unwrap();
    until(&mut client, "hidden selected", |r| names(r) == [format!("hidden.{ns}:80")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hds_verdicts_show_in_probe_status_as_healthy_and_unhealthy_endpoints() {
    let (_, admin, ns) = session().await;
    seed(&admin, &ns).await;
    let translate = TranslateOptions { active_health_checks: ActiveHealthChecks::Hds, ..Default::default() };
    let cp = ControlPlane::kubernetes_with(admin.clone(), &[&ns], None, translate, HdsConfig::default()).await.unwrap();
    let settled = wait_status(&admin, &ns, "web", |o| o["status"]["healthyEndpoints"] == 2).await;
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
        let object = get(&admin, "HealthProbe", &ns, "web").await.unwrap().unwrap_or_default();
        if object["status"]["unhealthyEndpoints"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the failing report never counted: {object}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let judged = wait_status(&admin, &ns, "web", |o| o["status"]["unhealthyEndpoints"] == 1).await;
    assert_eq!(judged["status"]["healthyEndpoints"], 1);
    assert_eq!(judged["status"]["matchedEndpoints"], 2);

    checker.report(&schedule, &[]).await.unwrap();
    wait_status(&admin, &ns, "web", |o| o["status"]["healthyEndpoints"] == 2).await;
}

/// Waits for the first bookmark of a watch that asks for them as edgexds's watches do (kube-rs's
/// default) and has seen nothing since `listed`; returns the bookmark's resourceVersion.
async fn first_bookmark(services: &kube::Api<k8s_openapi::api::core::v1::Service>, listed: &str) -> u64 {
    use futures_util::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let params = WatchParams::default();
    assert!(params.bookmarks, "kube-rs asks for bookmarks by default");
    let mut events = services.watch(&params, listed).await.unwrap().boxed();
    // kube-apiserver sends one about a minute into a watch.
    let event = tokio::time::timeout(Duration::from_secs(120), events.next()).await.unwrap().unwrap().unwrap();
    let WatchEvent::Bookmark(bookmark) = event else { panic!("expected a bookmark, got {event:?}") };
    bookmark.metadata.resource_version.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_reach_the_watches_and_move_nothing_but_their_resource_version() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::ListParams;
    let (server, admin, ns) = session().await;
    seed(&admin, &ns).await;
    let cp = ControlPlane::kubernetes(admin.clone(), &[&ns], None).await.unwrap();
    let cluster = format!("web.{ns}:80");
    let mut client = DeltaClient::connect(cp.xds_addr).await.watched_by(cp.proxies.clone());
    subscribe(&mut client, &[&cluster]).await;
    // Every object seen once, and edgexds's own status write seen back: count from there.
    wait_status(&admin, &ns, "web", |o| condition(o, "Accepted")["status"] == "True").await;
    let written = "edgexds_kube_status_writes_total{result=\"written\"}";
    // The namespace's kinds: Nodes are cluster-wide, and other tests on this server add some.
    let of_namespace = |series: &str| -> f64 {
        ["service", "endpointslice", "healthprobe", "httproute", "grpcroute"]
            .iter()
            .map(|kind| metric(&cp, &format!("{series}{{kind=\"{kind}\"}}")))
            .sum()
    };
    edgexds_tests::eventually(PATIENCE, "the status write's echo", || async {
        (of_namespace("edgexds_source_events_total") == 3.0 + metric(&cp, written)).then_some(())
    })
    .await;
    let (events, lists) = (of_namespace("edgexds_source_events_total"), metric(&cp, "edgexds_kube_lists_total"));
    assert_eq!(lists, 6.0, "one list per kind: Services, EndpointSlices, HealthProbes, both routes and Nodes");

    // A watch started after edgexds's, on the same namespace: when its first bookmark comes,
    // edgexds's watches (started earlier, scheduled alike) have had theirs.
    let services = kube::Api::<Service>::namespaced(admin.clone(), &ns);
    let listed = services.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    // Changes elsewhere move the global resourceVersion; these watches see none of them.
    let other = server.namespace(&admin).await.unwrap();
    apply(&admin, &service(&other, "elsewhere", 80, json!({}))).await.unwrap();
    let moved = first_bookmark(&services, &listed).await;
    assert!(moved > listed.parse().unwrap(), "a bookmark carries a newer resourceVersion: {moved} after {listed}");

    // Taken in as a resourceVersion only: no change seen, no re-list, nothing pushed.
    client.assert_quiet().await;
    assert_eq!(of_namespace("edgexds_source_events_total"), events);
    assert_eq!(metric(&cp, "edgexds_kube_lists_total"), lists);
    assert_eq!(metric(&cp, "edgexds_kube_watch_failures_total"), 0.0);
    // And the watches still carry changes.
    apply(&admin, &slice(&ns, "web-1", "web", 8080, &ips(&["10.0.0.9"]))).await.unwrap();
    until(&mut client, "a change after the bookmarks", |r| r.type_url == EDS && endpoint_count(r) == 1).await;
}
