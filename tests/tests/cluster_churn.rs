//! Churn on a real cluster, where the EndpointSlice controller writes every slice from pods
//! the test kubelet runs: readiness flaps, a pod IP reused by a new pod, and a Service of 250
//! pods that the controller splits over several slices. After each step, what edgexds serves
//! over delta EDS is exactly the controller's view: every endpoint the controller lists ready
//! is HEALTHY, every one serving while terminating is DRAINING, no other is there, each in
//! its Node's zone and with the probe policy its pod's name selects.

use std::collections::BTreeMap;
use std::time::Duration;

use edgexds_tests::cluster::{Cluster, pod_ready, wait_pod, wait_slices};
use edgexds_tests::http;
use edgexds_tests::kube_objects::{UPSTREAM_PORT, Upstream, selecting_service, web_probe};
use edgexds_tests::kube_server::apply;
use edgexds_tests::mesh::{SETTLE, edgexds};
use edgexds_tests::xds::{DeltaClient, EDS};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use envoy_types::pb::google::protobuf::value::Kind;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use prost::Message;
use serde_json::json;

/// One endpoint as served or as the controller implies it: health, zone, probe interval.
type View = BTreeMap<String, (String, String, u32)>;

const BASE_MS: u32 = 5000;
const CANARY_MS: u32 = 500;

/// What edgexds should serve, from the controller's slices: ready endpoints HEALTHY, serving
/// terminating ones DRAINING, others left out; a canary pod's probe interval is the override's.
fn expected(slices: &[EndpointSlice]) -> View {
    let mut view = View::new();
    for endpoint in slices.iter().flat_map(|s| s.endpoints.iter()) {
        let conditions = endpoint.conditions.clone().unwrap_or_default();
        let health = match (conditions.ready, conditions.serving, conditions.terminating) {
            (Some(true), _, _) => "HEALTHY",
            (_, Some(true), Some(true)) => "DRAINING",
            _ => continue,
        };
        let pod = endpoint.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
        let interval = if pod.starts_with("web-canary-") { CANARY_MS } else { BASE_MS };
        let zone = endpoint.zone.clone().unwrap_or_default();
        for address in &endpoint.addresses {
            view.insert(format!("{address}:{UPSTREAM_PORT}"), (health.to_owned(), zone.clone(), interval));
        }
    }
    view
}

/// What a delta EDS response serves of the one assignment.
fn served(response: &DeltaDiscoveryResponse) -> Option<View> {
    let resource = response.resources.first()?.resource.as_ref()?;
    let assignment = ClusterLoadAssignment::decode(&*resource.value).ok()?;
    let mut view = View::new();
    for locality in &assignment.endpoints {
        let zone = locality.locality.as_ref().map(|l| l.zone.clone()).unwrap_or_default();
        for lb in &locality.lb_endpoints {
            let Some(HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else { continue };
            let Some(address::Address::SocketAddress(socket)) =
                endpoint.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let health = HealthStatus::try_from(lb.health_status).map_or("?", |h| h.as_str_name()).to_owned();
            let interval = lb
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("edgexds"))
                .and_then(|s| s.fields.get("probe_interval_ms"))
                .and_then(|v| match v.kind {
                    Some(Kind::NumberValue(n)) => Some(n as u32),
                    _ => None,
                })
                .unwrap_or_default();
            let port = match socket.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(port)) => port,
                _ => 0,
            };
            view.insert(format!("{}:{port}", socket.address), (health, zone.clone(), interval));
        }
    }
    Some(view)
}

/// The delta EDS client of one cluster, holding what was last served.
struct Eds {
    client: DeltaClient,
    view: View,
}

impl Eds {
    async fn subscribe(xds: std::net::SocketAddr, cluster: &str) -> Self {
        let mut client = DeltaClient::connect(xds).await;
        client.subscribe(EDS, &[cluster]).await;
        Self { client, view: View::new() }
    }

    /// Waits until the controller's slices of web satisfy `step`, and then until edgexds
    /// serves exactly what they say.
    async fn follows(&mut self, admin: &kube::Client, ns: &str, what: &str, step: impl Fn(&[EndpointSlice]) -> bool) {
        let slices = wait_slices(admin, ns, "web", SETTLE, what, step).await;
        let want = expected(&slices);
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.view != want {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let next = tokio::time::timeout(left, self.client.next_within(Duration::from_secs(3600))).await;
            let response = match next {
                Ok(Ok(response)) => response,
                Ok(Err(status)) => panic!("{what}: the stream ended: {status}"),
                Err(_) => panic!("{what}: edgexds serves {:#?}\nthe controller says {want:#?}", self.view),
            };
            self.client.ack(&response).await;
            if let Some(view) = served(&response) {
                self.view = view;
            }
        }
    }
}

async fn set_ready(pod_ip: &str, ready: bool) {
    http::post(&format!("http://{pod_ip}:{UPSTREAM_PORT}/admin/ready?to={ready}"), "").await.unwrap();
}

fn ip_of(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP")
}

fn conditions_of(slices: &[EndpointSlice], ip: &str) -> Option<(bool, bool, bool)> {
    edgexds_tests::cluster::endpoint_conditions(slices).get(ip).copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaps_a_reused_pod_ip_and_250_pods_over_several_slices_are_served_exactly_as_the_controller_lists_them() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    apply(&admin, &selecting_service(&ns, "web", 80, None)).await.unwrap();
    apply(&admin, &web_probe(&ns, "web", "web", BASE_MS, CANARY_MS)).await.unwrap();
    apply(&admin, &Upstream::default().deployment(&ns, "web", 3)).await.unwrap();
    let server = edgexds(cluster, &ns).await;
    let mut eds = Eds::subscribe(server.xds, &format!("web.{ns}:80")).await;
    eds.follows(&admin, &ns, "3 pods ready", |slices| {
        let view = expected(slices);
        view.len() == 3 && view.values().all(|(health, ..)| health == "HEALTHY")
    })
    .await;

    // Readiness flaps: out, in, out, in; then out and in again at once.
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
    let first = pods.list(&Default::default()).await.unwrap().items.remove(0);
    let ip = ip_of(&first);
    for round in 0..2 {
        set_ready(&ip, false).await;
        eds.follows(&admin, &ns, &format!("flap {round}: not ready"), |s| {
            conditions_of(s, &ip) == Some((false, false, false))
        })
        .await;
        set_ready(&ip, true).await;
        eds.follows(&admin, &ns, &format!("flap {round}: ready"), |s| {
            conditions_of(s, &ip) == Some((true, true, false))
        })
        .await;
    }
    set_ready(&ip, false).await;
    set_ready(&ip, true).await;
    eds.follows(&admin, &ns, "a flap too quick to see: ready", |s| conditions_of(s, &ip) == Some((true, true, false)))
        .await;

    // A pod IP reused: a canary on the one Node of zone c, gone at once, and a plain pod
    // there taking its address.
    let pinned = |name: &str| {
        let mut pod = Upstream::default().pod(&ns, name, "web");
        pod["spec"]["nodeName"] = json!("node-c1");
        pod
    };
    apply(&admin, &pinned("web-canary-1")).await.unwrap();
    let canary = wait_pod(&admin, &ns, "web-canary-1", SETTLE, "the canary is ready", pod_ready).await.unwrap();
    let reused = ip_of(&canary);
    eds.follows(&admin, &ns, "the canary is served", |s| conditions_of(s, &reused) == Some((true, true, false))).await;
    assert_eq!(eds.view[&format!("{reused}:{UPSTREAM_PORT}")], ("HEALTHY".into(), "zone-c".into(), CANARY_MS));
    pods.delete("web-canary-1", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    eds.follows(&admin, &ns, "the canary is gone", |s| conditions_of(s, &reused).is_none()).await;
    apply(&admin, &pinned("web-late")).await.unwrap();
    let late = wait_pod(&admin, &ns, "web-late", SETTLE, "the new pod is ready", pod_ready).await.unwrap();
    assert_eq!(ip_of(&late), reused, "the new pod took the canary's address");
    eds.follows(&admin, &ns, "the new pod is served at the old address", |s| {
        s.iter().flat_map(|s| s.endpoints.iter()).any(|e| {
            e.addresses == [reused.clone()] && e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some("web-late")
        }) && conditions_of(s, &reused) == Some((true, true, false))
    })
    .await;
    assert_eq!(eds.view[&format!("{reused}:{UPSTREAM_PORT}")], ("HEALTHY".into(), "zone-c".into(), BASE_MS));
    pods.delete("web-late", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();

    // 250 pods: the controller splits them over slices of at most 100; one cluster holds all.
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(admin.clone(), &ns);
    let scale = |replicas: u32| Patch::Merge(json!({"spec": {"replicas": replicas}}));
    deployments.patch("web", &PatchParams::default(), &scale(250)).await.unwrap();
    let slices = wait_slices(&admin, &ns, "web", Duration::from_secs(300), "250 pods ready", |slices| {
        let view = expected(slices);
        view.len() == 250 && view.values().all(|(health, ..)| health == "HEALTHY")
    })
    .await;
    assert!(slices.len() >= 3 && slices.iter().all(|s| s.endpoints.len() <= 100), "split: {} slices", slices.len());
    eds.follows(&admin, &ns, "250 pods in one cluster", |s| expected(s).len() == 250).await;
    deployments.patch("web", &PatchParams::default(), &scale(3)).await.unwrap();
    eds.follows(&admin, &ns, "back to 3 pods", |s| {
        let view = expected(s);
        view.len() == 3 && view.values().all(|(health, ..)| health == "HEALTHY")
    })
    .await;
    eprintln!(
        "served exactly as the controller listed: flaps, a reused address, 250 pods over {} slices",
        slices.len()
    );
}
