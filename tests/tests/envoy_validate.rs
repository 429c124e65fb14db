//! Everything edgexds translates passes Envoy's own validation: the resources of a snapshot
//! built from many shapes of input (HTTP, TCP and gRPC probes with overrides, hosts and
//! paths, gRPC and h2c ports, UDP, not-ready endpoints, typed metadata, HTTPRoutes and
//! GRPCRoutes with every filter and regular expressions as large as edgexds lets through)
//! are put into a static bootstrap and checked by `envoy --mode validate`, which applies
//! every rule Envoy applies to a resource before taking it (the proto validation rules and
//! RE2's program-size limit among them).

use std::process::Stdio;

use edgexds::cache::ResourceType;
use edgexds::translate::TranslateOptions;
use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::eventually;
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::StaticResources;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  ports:
  - { name: http, port: 80, targetPort: 8080 }
  - { name: grpc, port: 9090, appProtocol: grpc }
  - { name: h2c, port: 8081, appProtocol: kubernetes.io/h2c }
  - { name: dns, port: 53, protocol: UDP }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: shop, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080 }, { name: grpc, port: 9090 }, { name: h2c, port: 8081 }, { name: dns, port: 53, protocol: UDP }]
endpoints:
- { addresses: ["10.0.0.1"], conditions: { ready: true }, zone: zone-a, nodeName: node-1, hostname: web-0 }
- { addresses: ["10.0.0.2"], conditions: { ready: false }, zone: zone-b }
- { addresses: ["10.0.0.3"], conditions: { ready: false, serving: true, terminating: true }, zone: zone-b }
---
apiVersion: edgexds.io/v1alpha1
kind: HealthProbe
metadata: { name: web, namespace: shop }
spec:
  targetRef: { name: web }
  port: 80
  intervalMs: 2000
  http: { path: "/healthz?full=1", host: "web.shop.svc" }
  overrides: [{ match: { zone: zone-a }, intervalMs: 500, timeoutMs: 250, failureThreshold: 2 }]
---
apiVersion: edgexds.io/v1alpha1
kind: HealthProbe
metadata: { name: web-grpc, namespace: shop }
spec: { targetRef: { name: web }, port: 9090, grpc: { serviceName: shop.Web } }
---
apiVersion: edgexds.io/v1alpha1
kind: HealthProbe
metadata: { name: web-tcp, namespace: shop }
spec: { targetRef: { name: web }, port: 8081, tcp: {} }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: blog }
spec: { ports: [{ port: 80 }] }
---
# Every route feature, with regular expressions as large as edgexds lets through.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web-policy, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: web, port: 80 }]
  rules:
  - matches:
    - path: { type: RegularExpression, value: "/a{91}" }
      headers: [{ type: RegularExpression, name: authorization, value: "(?i)^bearer [a-z0-9]{20}$" }]
      queryParams: [{ type: RegularExpression, name: q, value: ".{45}" }]
    - path: { type: RegularExpression, value: "/[^/]{20}/\\w{13}" }
    - path: { type: Exact, value: /exact }
      method: POST
      headers: [{ name: x-version, value: canary }]
    filters:
    - { type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-a, value: "1" }], remove: [x-b] } }
    - { type: ResponseHeaderModifier, responseHeaderModifier: { add: [{ name: x-c, value: "2" }] } }
    - { type: RequestMirror, requestMirror: { backendRef: { name: web, port: 8081 }, percent: 10 } }
    backendRefs: [{ name: web, port: 80, weight: 9 }, { name: missing, port: 80, weight: 1 }]
    timeouts: { request: 2s, backendRequest: 500ms }
    retry: { codes: [503], attempts: 2, backoff: 100ms }
  - matches: [{ path: { type: PathPrefix, value: /old } }]
    filters: [{ type: URLRewrite, urlRewrite: { hostname: web.blog, path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } } }]
    backendRefs: [{ name: web, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /moved } }]
    filters: [{ type: RequestRedirect, requestRedirect: { scheme: https, statusCode: 301 } }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: web-grpc, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: web, port: 9090 }]
  rules:
  - matches: [{ method: { type: RegularExpression, service: "shop\\.W[a-z]+", method: "Get.*" } }]
    backendRefs: [{ name: web, port: 9090 }]
  - matches: [{ method: { service: shop.Web, method: Put } }]
    backendRefs: [{ name: web, port: 9090 }]
"#;

fn any<M: Name>(message: &M) -> Any {
    Any { type_url: M::type_url(), value: message.encode_to_vec() }
}

fn decoded<M: Message + Default>(body: &[u8]) -> M {
    M::decode(body).expect("edgexds's bytes decode")
}

fn address(port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// Inline routes are checked against the static clusters, routes from RDS are not: a weighted
/// backend that does not resolve is named on purpose (its share is answered 500), as RDS allows.
fn as_from_rds(mut routes: RouteConfiguration) -> RouteConfiguration {
    routes.validate_clusters = Some(envoy_types::pb::google::protobuf::BoolValue { value: false });
    routes
}

/// A listener serving `routes` inline, on its own port: Envoy validates the routes with it.
fn listener_for(routes: RouteConfiguration, port: u32) -> Listener {
    let manager = HttpConnectionManager {
        stat_prefix: routes.name.clone(),
        route_specifier: Some(RouteSpecifier::RouteConfig(routes)),
        http_filters: vec![
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(
                    any(&envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default()),
                )),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    Listener {
        name: format!("validate-{port}"),
        address: Some(address(port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&manager))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_edgexds_translates_passes_envoys_own_validation() {
    let options = TranslateOptions { typed_metadata: true, send_unhealthy_endpoints: true, ..Default::default() };
    let cp = ControlPlane::start(options).await.expect("control plane starts");
    cp.write("shop.yaml", MANIFESTS);
    let (snapshot, _) = eventually(std::time::Duration::from_secs(10), "the manifests are served", || async {
        let snapshot = cp.running.cache.current()?;
        let model = cp.running.models.borrow().clone()?;
        assert!(model.diagnostics.is_empty(), "every object is taken: {:?}", model.diagnostics);
        (snapshot.len(ResourceType::ClusterLoadAssignment) >= 5).then_some(snapshot)
    })
    .await;

    // Clusters as static ones holding their load assignments: validated together, without ADS.
    let assignments = snapshot.resources(ResourceType::ClusterLoadAssignment);
    let clusters: Vec<Cluster> = snapshot
        .resources(ResourceType::Cluster)
        .iter()
        .map(|(name, resource)| {
            let mut cluster: Cluster = decoded(&resource.body);
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
            cluster.eds_cluster_config = None;
            cluster.load_assignment = Some(decoded::<ClusterLoadAssignment>(&assignments[name].body));
            cluster
        })
        .collect();
    // Listeners with their routes inline; gRPC api_listeners' routes on listeners of their own.
    let routes = snapshot.resources(ResourceType::RouteConfiguration);
    let carried =
        |pattern: &str| routes.values().any(|r| r.body.windows(pattern.len()).any(|w| w == pattern.as_bytes()));
    for pattern in ["/a{91}", ".{45}", r"/[^/]{20}/\w{13}", r"/shop\.W[a-z]+/Get.*"] {
        assert!(carried(pattern), "the routes carry {pattern}: the HTTPRoute and GRPCRoute were taken");
    }
    let mut listeners = Vec::new();
    let mut port = 20_000;
    for (name, resource) in snapshot.resources(ResourceType::Listener).iter() {
        let mut listener: Listener = decoded(&resource.body);
        port += 1;
        if listener.api_listener.is_some() {
            listeners.push(listener_for(as_from_rds(decoded(&routes[name].body)), port));
            continue;
        }
        for chain in &mut listener.filter_chains {
            for filter in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(any_config)) = &mut filter.config_type else { continue };
                let mut manager: HttpConnectionManager = decoded(&any_config.value);
                manager.route_specifier = Some(RouteSpecifier::RouteConfig(as_from_rds(decoded(&routes[name].body))));
                *any_config = any(&manager);
            }
        }
        listener.address = Some(address(port));
        listeners.push(listener);
    }
    assert!(clusters.len() >= 5 && listeners.len() >= 3, "{} clusters, {} listeners", clusters.len(), listeners.len());
    let bootstrap = Bootstrap {
        static_resources: Some(StaticResources { clusters, listeners, ..Default::default() }),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, bootstrap.encode_to_vec()).unwrap();
    let output = tokio::process::Command::new(edgexds_tests::envoy::binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("envoy runs");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "Envoy refused what edgexds translated:\n{log}");
    assert!(log.contains("configuration") && log.contains("OK"), "{log}");
}
