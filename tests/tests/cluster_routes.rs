//! Gateway API routes from the real API server (the CRDs installed, as `tests/gateway/crds`
//! fetches them), on a real cluster's Services:
//! - an HTTPRoute applied with kubectl takes effect in a real sidecar Envoy, one whose parent
//!   is a Gateway changes nothing, and deleting the route brings the Service back to its one
//!   route;
//! - a GRPCRoute sends each gRPC method to its own Service for grpcio's own xDS resolver
//!   (gRFC A28 routing), proxyless.

use edgexds_tests::cluster::{Cluster, run_pod};
use edgexds_tests::kube_objects::selecting_service;
use edgexds_tests::kube_server::apply;
use edgexds_tests::mesh::{PlacedSidecar, SETTLE};
use edgexds_tests::{eventually, http};
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
