//! RouteConfigurations: the sidecar's outbound routes (one virtual host per Service port,
//! under every name Kubernetes DNS gives it, taking plain requests and CONNECT tunnels), and
//! one per gRPC listener name.

use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_action::upgrade_config::ConnectConfig;
use envoy_types::pb::envoy::config::route::v3::route_action::{MaxStreamDuration, UpgradeConfig};
use envoy_types::pb::envoy::config::route::v3::route_match::{ConnectMatcher, PathSpecifier};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost};
use envoy_types::pb::google::protobuf::Duration;

use super::listeners::OUTBOUND;
use crate::model::{ObjectKey, PortProtocol, ResolvedPort, ResolvedService};

/// The names a port answers to, for the outbound route's domains: `svc`, `svc.ns`,
/// `svc.ns.svc` and `svc.ns.svc.<domain>`, each with `:port`, and bare for port 80 only, so
/// two ports of a Service never claim one domain. `svc` alone is ambiguous across
/// namespaces: it is given only to a Service whose name no other namespace uses.
fn domains(service: &ObjectKey, port: u16, cluster_domain: &str, unique_name: bool) -> Vec<String> {
    let (name, ns) = (&service.name, &service.namespace);
    let mut hosts =
        vec![format!("{name}.{ns}"), format!("{name}.{ns}.svc"), format!("{name}.{ns}.svc.{cluster_domain}")];
    if unique_name {
        hosts.insert(0, name.to_string());
    }
    let mut domains: Vec<String> = hosts.iter().map(|h| format!("{h}:{port}")).collect();
    if port == 80 {
        domains.extend(hosts);
    }
    domains
}

/// The HTTP ports of one Service. UDP and SCTP carry no HTTP.
pub fn http_ports_of(service: &ResolvedService) -> impl Iterator<Item = &ResolvedPort> {
    service.ports.iter().filter(|p| p.port.protocol == PortProtocol::Tcp)
}

/// The sidecar's outbound RouteConfiguration, [`OUTBOUND`], from every Service's virtual hosts.
pub fn outbound_routes(virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration { name: OUTBOUND.to_owned(), virtual_hosts, ..Default::default() }
}

/// The outbound route's virtual hosts for one Service, one per HTTP port. `unique_name`:
/// no other namespace has a Service of this name, so `svc` alone may name it.
pub fn virtual_hosts(service: &ResolvedService, cluster_domain: &str, unique_name: bool) -> Vec<VirtualHost> {
    // Sources refuse a Service with a port twice, as the API server does; should one get
    // through, its second port is left out, because a domain claimed twice makes Envoy
    // reject the whole outbound route, every other Service's hosts with it.
    let mut seen = std::collections::BTreeSet::new();
    http_ports_of(service)
        .filter(|port| seen.insert(port.port.port))
        .map(|port| VirtualHost {
            name: port.cluster_name.clone(),
            domains: domains(&service.key, port.port.port, cluster_domain, unique_name),
            routes: std::iter::once(tunnel_to(&port.cluster_name))
                .chain(
                    super::http_routes::port_routes(&service.key, &service.routes, port.port.port)
                        .unwrap_or_else(|| vec![route_to(&port.cluster_name, "/")]),
                )
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// The names a gRPC client dials a port by, `svc.ns:port` and `svc.ns.svc.<domain>:port`:
/// each is a Listener and a RouteConfiguration of that name.
pub fn grpc_names(service: &ObjectKey, port: u16, cluster_domain: &str) -> [String; 2] {
    let (name, ns) = (&service.name, &service.namespace);
    [format!("{name}.{ns}:{port}"), format!("{name}.{ns}.svc.{cluster_domain}:{port}")]
}

/// The routes of gRPC listener `name` (of `service`'s `port`): one virtual host matching
/// exactly that name, routing as the routes attached to the port say (gRFC A28), or to the
/// port's cluster. gRPC ignores a route's `timeout` and reads `max_stream_duration` (A31)
/// instead, so a route's request timeout is given as both.
pub fn grpc_routes(name: &str, service: &ResolvedService, port: &ResolvedPort) -> RouteConfiguration {
    let mut routes = super::http_routes::port_routes(&service.key, &service.routes, port.port.port)
        .unwrap_or_else(|| vec![route_to(&port.cluster_name, "")]);
    for route in &mut routes {
        if let Some(Action::Route(action)) = &mut route.action
            && let Some(timeout) = action.timeout.filter(|t| t.seconds > 0 || t.nanos > 0)
        {
            action.max_stream_duration =
                Some(MaxStreamDuration { max_stream_duration: Some(timeout), ..Default::default() });
        }
    }
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec![name.to_owned()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A CONNECT to the port's name, terminated here and carried as TCP to its cluster: the
/// client's bytes (TLS, gRPC, any protocol) reach a ready endpoint untouched. CONNECT has no
/// path, so the prefix route never takes it, and this one takes nothing else.
fn tunnel_to(cluster: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::ConnectMatcher(ConnectMatcher {})),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
            timeout: Some(Duration { seconds: 0, nanos: 0 }),
            upgrade_configs: vec![UpgradeConfig {
                upgrade_type: "CONNECT".into(),
                connect_config: Some(ConnectConfig::default()),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn route_to(cluster: &str, prefix: &str) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.to_owned())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
            // A mesh route carries long-lived streams (gRPC, SSE): no route timeout.
            timeout: Some(Duration { seconds: 0, nanos: 0 }),
            ..Default::default()
        })),
        ..Default::default()
    }
}
