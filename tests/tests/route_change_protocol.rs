//! The xDS rules on what a Gateway API route changes, through the whole pipeline (manifests
//! in, a tonic client out), delta and SotW alike: an HTTPRoute or GRPCRoute change sends the
//! RouteConfigurations it changes and nothing else (no Listener, Cluster or endpoints, and
//! no other client's route); a NACKed route is not resent, and the next change is; deleting
//! the route sends the Service's own route back.

use edgexds::translate::TranslateOptions;
use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::sotw::SotwClient;
use edgexds_tests::xds::{CDS, DeltaClient, EDS, LDS, RDS, names};
use envoy_types::pb::envoy::config::core::v3::Node;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { ports: [{ name: http, port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: web-v2, namespace: shop }
spec: { ports: [{ name: http, port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: greeter, namespace: shop }
spec: { ports: [{ name: grpc, port: 9090, appProtocol: grpc }] }
"#;

fn http_route(weight: u32) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: web, namespace: shop }}
spec:
  parentRefs: [{{ group: "", kind: Service, name: web, port: 80 }}]
  rules:
  - backendRefs: [{{ name: web, port: 80, weight: {weight} }}, {{ name: web-v2, port: 80, weight: 10 }}]
"#
    )
}

const GRPC_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: greeter, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: greeter, port: 9090 }]
  rules:
  - matches: [{ method: { service: test.Greeter, method: Where } }]
    backendRefs: [{ name: greeter, port: 9090 }]
"#;

/// The proxyless client's listener (the xds:/// target) and its per-port route.
const GRPC_LISTENER: &str = "greeter.shop:9090";

async fn started() -> ControlPlane {
    let cp = ControlPlane::start(TranslateOptions::default()).await.expect("control plane starts");
    cp.write("services.yaml", SERVICES);
    cp
}

fn grpc_route_name(cp: &ControlPlane) -> String {
    let snapshot = cp.running.cache.current().expect("a snapshot");
    let routes = snapshot.resources(edgexds::cache::ResourceType::RouteConfiguration);
    routes.keys().map(|name| name.to_string()).find(|name| name != "outbound").expect("the gRPC port's route")
}

/// A delta client holding every type as a sidecar Envoy does, each acknowledged.
async fn delta_sidecar(cp: &ControlPlane) -> DeltaClient {
    let mut client = DeltaClient::connect(cp.running.xds_addr).await.watched_by(cp.running.proxies.clone());
    client.subscribe(CDS, &[]).await;
    let clusters = client.next().await;
    assert_eq!(clusters.resources.len(), 3, "every Service's cluster");
    client.ack(&clusters).await;
    let cluster_names: Vec<&str> = names(&clusters);
    client.subscribe(EDS, &cluster_names).await;
    let endpoints = client.next().await;
    client.ack(&endpoints).await;
    for (type_url, wanted) in [(LDS, &[][..]), (RDS, &["outbound"][..])] {
        client.subscribe(type_url, wanted).await;
        let response = client.next().await;
        client.ack(&response).await;
    }
    client
}

async fn delta_proxyless(cp: &ControlPlane, route: &str) -> DeltaClient {
    let node = Node { id: "proxyless".into(), user_agent_name: "gRPC Python".into(), ..Default::default() };
    let mut client =
        DeltaClient::connect(cp.running.xds_addr).await.announcing(node).watched_by(cp.running.proxies.clone());
    for (type_url, wanted) in [(LDS, GRPC_LISTENER), (RDS, route)] {
        client.subscribe(type_url, &[wanted]).await;
        let response = client.next().await;
        assert_eq!(names(&response), [wanted]);
        client.ack(&response).await;
    }
    client
}

/// The next response: only `type_url`, exactly `expected` by name, and nothing after it.
async fn only(
    client: &mut DeltaClient,
    expected: &[&str],
) -> envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse {
    let response = client.next().await;
    assert_eq!((response.type_url.as_str(), names(&response)), (RDS, expected.to_vec()), "only the changed routes");
    client.assert_quiet().await;
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_a_route_change_sends_only_the_routes_it_changes_and_a_nacked_one_is_not_resent() {
    let cp = started().await;
    let mut sidecar = delta_sidecar(&cp).await;
    let grpc_route = grpc_route_name(&cp);
    let mut proxyless = delta_proxyless(&cp, &grpc_route).await;

    cp.write("route.yaml", &http_route(90));
    let changed = only(&mut sidecar, &["outbound"]).await;
    proxyless.assert_quiet().await;
    sidecar.nack(&changed, "rejected by the test").await;
    sidecar.assert_quiet().await;

    cp.write("route.yaml", &http_route(80));
    let fixed = only(&mut sidecar, &["outbound"]).await;
    sidecar.ack(&fixed).await;

    cp.write("grpc.yaml", GRPC_ROUTE);
    let outbound = only(&mut sidecar, &["outbound"]).await;
    sidecar.ack(&outbound).await;
    let routed = only(&mut proxyless, &[&grpc_route]).await;
    proxyless.ack(&routed).await;

    std::fs::remove_file(cp.path("route.yaml")).unwrap();
    std::fs::remove_file(cp.path("grpc.yaml")).unwrap();
    let restored = sidecar.next().await;
    assert_eq!(names(&restored), ["outbound"]);
    sidecar.ack(&restored).await;
    let restored = proxyless.next().await;
    assert_eq!(names(&restored), [grpc_route.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_a_route_change_sends_only_the_routes_it_changes_and_no_listener() {
    let cp = started().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.running.xds_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SotwClient::ads(channel).await.watched_by(cp.running.proxies.clone());
    client.subscribe(CDS, &[]).await;
    let clusters = client.next().await;
    client.ack(&clusters, &[]).await;
    client.subscribe(LDS, &[]).await;
    let listeners = client.next().await;
    client.ack(&listeners, &[]).await;
    client.subscribe(RDS, &["outbound"]).await;
    let routes = client.next().await;
    client.ack(&routes, &["outbound"]).await;

    cp.write("route.yaml", &http_route(90));
    let changed = client.next().await;
    assert_eq!(changed.type_url, RDS, "a route change is no listener or cluster change");
    assert_eq!(changed.resources.len(), 1);
    assert_ne!(changed.version_info, routes.version_info);
    client.assert_quiet().await;
    client.nack(&changed, &["outbound"], &routes.version_info).await;
    client.assert_quiet().await;

    cp.write("route.yaml", &http_route(80));
    let fixed = client.next().await;
    assert_eq!((fixed.type_url.as_str(), fixed.resources.len()), (RDS, 1));
    client.ack(&fixed, &["outbound"]).await;
    client.assert_quiet().await;
}
