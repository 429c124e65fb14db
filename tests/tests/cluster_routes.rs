//! Gateway API routes from the real API server (the CRDs installed, as `tests/gateway/crds`
//! fetches them), on a real cluster's Services:
//! - an HTTPRoute applied with kubectl takes effect in a real sidecar Envoy, one whose parent
//!   is a Gateway changes nothing, and deleting the route brings the Service back to its one
//!   route;
//! - the README's canary route with a rule per feature (`edgexds_tests::traffic_policy`, the
//!   same scenario as from a manifests file, less the Experimental retry which the Standard
//!   CRDs refuse) acts as it says on the cluster's pods, through a delta and a SotW sidecar;
//! - a GRPCRoute sends each gRPC method to its own Service for grpcio's own xDS resolver
//!   (gRFC A28 routing), proxyless;
//! - each route's `status.parents` entry for its Service says whether it attached and whether
//!   its backends resolve, follows the route's generation and the Services as they come, never
//!   appears for a Gateway's route, and leaves another controller's entry in place, with two
//!   replicas writing.

use edgexds_tests::cluster::{Cluster, run_pod};
use edgexds_tests::kube_objects::UPSTREAM_PORT;
use edgexds_tests::kube_objects::selecting_service;
use edgexds_tests::kube_server::apply;
use edgexds_tests::mesh::{Mesh, PlacedSidecar, SETTLE};
use edgexds_tests::{eventually, http, traffic_policy};
use serde_json::json;

fn route(ns: &str, name: &str, parent: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [parent],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/beta"}}],
                 "backendRefs": [{"name": "canary", "port": 80}]},
                {"backendRefs": [{"name": "web", "port": 80}]}
            ]
        }
    })
}

/// The pod answering `path` on Service web through the sidecar, once it is `expected`.
async fn answers(sidecar: &PlacedSidecar, ns: &str, path: &str, expected: &str) {
    let url = format!("http://web.{ns}{path}");
    eventually(SETTLE, &format!("{url} answered by {expected}"), || async {
        http::through_proxy(sidecar.proxy, &url).await.filter(|(status, pod)| *status == 200 && pod == expected)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_httproute_applied_with_kubectl_routes_by_path_and_a_gateways_route_or_a_deleted_one_does_not() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    run_pod(&admin, &ns, "web-1", "web").await;
    run_pod(&admin, &ns, "canary-1", "canary").await;
    apply(&admin, &selecting_service(&ns, "web", 80, None)).await.unwrap();
    apply(&admin, &selecting_service(&ns, "canary", 80, None)).await.unwrap();
    let sidecar = PlacedSidecar::start(cluster, &ns, "zone-a", None).await.unwrap();
    answers(&sidecar, &ns, "/beta", "web-1").await;

    // A route for a Gateway is not ours: nothing changes.
    let gateway = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"});
    apply(&admin, &route(&ns, "for-a-gateway", gateway)).await.unwrap();
    // The Service's own route, applied after it, is the one that takes effect.
    apply(&admin, &route(&ns, "beta", json!({"group": "", "kind": "Service", "name": "web", "port": 80})))
        .await
        .unwrap();
    answers(&sidecar, &ns, "/beta", "canary-1").await;
    answers(&sidecar, &ns, "/", "web-1").await;

    cluster.kube.kubectl(&["delete", "httproute", "beta", "-n", &ns]).unwrap();
    answers(&sidecar, &ns, "/beta", "web-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcroute_sends_each_method_to_its_service_for_a_proxyless_grpc_client() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    run_pod(&admin, &ns, "greeter-1", "greeter").await;
    run_pod(&admin, &ns, "locator-1", "locator").await;
    apply(&admin, &selecting_service(&ns, "greeter", 80, Some("grpc"))).await.unwrap();
    apply(&admin, &selecting_service(&ns, "locator", 80, Some("grpc"))).await.unwrap();
    apply(
        &admin,
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "greeter", "namespace": ns},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "greeter", "port": 80}],
                "rules": [
                    {"matches": [{"method": {"service": "test.Greeter", "method": "Where"}}],
                     "backendRefs": [{"name": "locator", "port": 80}]},
                    {"backendRefs": [{"name": "greeter", "port": 80}]}
                ]
            }
        }),
    )
    .await
    .unwrap();
    let replica = edgexds_tests::mesh::edgexds(cluster, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let bootstrap =
        edgexds_tests::traffic::grpc_bootstrap(dir.path(), &[replica.xds], "proxyless-routes", "zone-a").unwrap();
    let env = vec![("GRPC_XDS_BOOTSTRAP".to_owned(), bootstrap.display().to_string())];
    let target = format!("xds:///greeter.{ns}:80");
    for (method, pod) in [("/test.Greeter/Where", "locator-1"), ("/test.Greeter/Who", "greeter-1")] {
        let answered = eventually(SETTLE, &format!("{method} answered by {pod}"), || async {
            let answer = edgexds_tests::proxied::grpcio_call(&target, method, &env).await.ok()?;
            (answer == pod).then_some(answer)
        })
        .await;
        eprintln!("proxyless {method} -> {answered:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_canary_route_applied_with_kubectl_splits_matches_rewrites_times_out_edits_and_mirrors() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    for (pod, app) in [("web-v1", "web"), ("web-v2", "web-v2"), ("shadow-1", "shadow")] {
        run_pod(&admin, &ns, pod, app).await;
        apply(&admin, &selecting_service(&ns, app, 80, None)).await.unwrap();
    }
    let shadow =
        cluster.kube.kubectl(&["get", "pod", "shadow-1", "-n", &ns, "-o", "jsonpath={.status.podIP}"]).unwrap();
    let route: serde_json::Value = serde_norway::from_str(&traffic_policy::route(&ns, false)).unwrap();
    apply(&admin, &route).await.unwrap();
    let host = format!("web.{ns}");
    let served = format!("http://{shadow}:{UPSTREAM_PORT}/admin/served");
    let mirrored = || async {
        let reply = http::get(&served).await.expect("the shadow pod answers");
        reply.body.trim().parse::<u64>().expect("a count")
    };
    for api_type in ["DELTA_GRPC", "GRPC"] {
        let mesh = Mesh::start_with(cluster, &ns, 1, api_type).await.unwrap();
        eprintln!("sidecar over {api_type}");
        traffic_policy::in_force(mesh.proxy, &host).await;
        if api_type == "DELTA_GRPC" {
            traffic_policy::weighted_split(mesh.proxy, &host).await;
        }
        traffic_policy::acts_as_the_route_says(mesh.proxy, &host, false, mirrored).await;
    }
}

/// edgexds's entry for Service `parent` in the route's status: (Accepted, ResolvedRefs), each
/// as (status, reason), with the observedGeneration.
type Entry = ((String, String), (String, String), i64);

async fn entry(admin: &kube::Client, ns: &str, route: &str) -> Option<Entry> {
    let object = edgexds_tests::kube_server::get(admin, "HTTPRoute", ns, route).await.ok()??;
    let parents = object.pointer("/status/parents")?.as_array()?.clone();
    let ours = parents.iter().find(|p| p["controllerName"] == "edgexds.io/mesh")?;
    let condition = |type_: &str| {
        let c = ours["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
        Some((c["status"].as_str()?.to_owned(), c["reason"].as_str()?.to_owned(), c["observedGeneration"].as_i64()?))
    };
    let (accepted, resolved) = (condition("Accepted")?, condition("ResolvedRefs")?);
    Some(((accepted.0, accepted.1), (resolved.0, resolved.1), accepted.2))
}

async fn becomes(
    admin: &kube::Client,
    ns: &str,
    route: &str,
    accepted: (&str, &str),
    resolved: (&str, &str),
    generation: i64,
) {
    let wanted = ((accepted.0.into(), accepted.1.into()), (resolved.0.into(), resolved.1.into()), generation);
    eventually(SETTLE, &format!("{route}'s status {wanted:?}"), || async {
        entry(admin, ns, route).await.filter(|e| *e == wanted)
    })
    .await;
}

fn service_route(ns: &str, name: &str, parent: &str, backend: &str) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": parent, "port": 80}],
            "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_status_says_for_each_service_parent_whether_it_attached_and_its_backends_resolve() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    apply(&admin, &selecting_service(&ns, "web", 80, None)).await.unwrap();
    let gateway = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"});
    apply(&admin, &route(&ns, "for-a-gateway", gateway)).await.unwrap();
    apply(&admin, &service_route(&ns, "good", "web", "web")).await.unwrap();
    apply(&admin, &service_route(&ns, "missing-backend", "web", "nope")).await.unwrap();
    apply(&admin, &service_route(&ns, "missing-parent", "later", "web")).await.unwrap();
    // Another controller's entry, written before edgexds starts, as a Gateway controller would.
    let theirs = json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    });
    let status = json!({"status": {"parents": [theirs]}}).to_string();
    let patch = ["patch", "httproute", "good", "-n", &ns, "--subresource=status", "--type=merge", "-p", &status];
    cluster.kube.kubectl(&patch).unwrap();

    let replicas = [edgexds_tests::mesh::edgexds(cluster, &ns).await, edgexds_tests::mesh::edgexds(cluster, &ns).await];
    becomes(&admin, &ns, "good", ("True", "Accepted"), ("True", "ResolvedRefs"), 1).await;
    becomes(&admin, &ns, "missing-backend", ("True", "Accepted"), ("False", "BackendNotFound"), 1).await;
    becomes(&admin, &ns, "missing-parent", ("False", "NoMatchingParent"), ("True", "ResolvedRefs"), 1).await;

    // The parent Service appears: the route attaches. The route changes: the entry follows
    // its generation, and the other controller's entry is still there, as it wrote it.
    apply(&admin, &selecting_service(&ns, "later", 80, None)).await.unwrap();
    becomes(&admin, &ns, "missing-parent", ("True", "Accepted"), ("True", "ResolvedRefs"), 1).await;
    apply(&admin, &service_route(&ns, "good", "web", "gone")).await.unwrap();
    becomes(&admin, &ns, "good", ("True", "Accepted"), ("False", "BackendNotFound"), 2).await;
    let good = edgexds_tests::kube_server::get(&admin, "HTTPRoute", &ns, "good").await.unwrap().unwrap();
    let parents = good["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{parents:?}");
    assert_eq!(parents[0], theirs, "the other controller's entry is kept as it wrote it");

    let gateway_route =
        edgexds_tests::kube_server::get(&admin, "HTTPRoute", &ns, "for-a-gateway").await.unwrap().unwrap();
    assert!(gateway_route.pointer("/status/parents").is_none(), "a Gateway's route is not ours: {gateway_route}");
    let written: f64 =
        replicas.iter().map(|r| r.metric("edgexds_kube_route_status_writes_total{result=\"written\"}")).sum();
    let failed: f64 =
        replicas.iter().map(|r| r.metric("edgexds_kube_route_status_writes_total{result=\"failed\"}")).sum();
    // Five changes of status, each written once between the two: a replica that built the
    // same status later finds it held, or is refused by the resourceVersion it built from.
    assert_eq!((written, failed), (5.0, 0.0), "route status writes by both replicas (written, failed)");
}
