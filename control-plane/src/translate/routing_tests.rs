use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3 as envoy_endpoint;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as FilterConfig;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use prost::Message;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use super::*;
use crate::cache::{ResourceType, Snapshot};
use crate::model::fixtures::{endpoint, service, slice, state};
use crate::model::{AppProtocol, PortProtocol, SourceState};

/// What the pipeline serves for `state`: every Service's contribution and the shared resources.
fn snapshot(state: &SourceState, options: &TranslateOptions) -> Snapshot {
    crate::pipeline::build_snapshot(state, options, None, &Default::default()).0
}

fn services(services: Vec<crate::model::Service>) -> SourceState {
    state(services, vec![], vec![])
}

/// Every resource of `ty`, decoded, in name order, with whether only clients naming it get it.
fn decoded<M: Message + Default>(snapshot: &Snapshot, ty: ResourceType) -> Vec<(M, bool)> {
    snapshot.resources(ty).values().map(|r| (M::decode(r.body.as_slice()).unwrap(), r.named_only)).collect()
}

fn outbound_routes_of(state: &SourceState, options: &TranslateOptions) -> RouteConfiguration {
    let snapshot = snapshot(state, options);
    RouteConfiguration::decode(snapshot.resources(ResourceType::RouteConfiguration)[OUTBOUND].body.as_slice()).unwrap()
}

fn manager(any: &envoy_types::pb::google::protobuf::Any) -> HttpConnectionManager {
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    HttpConnectionManager::decode(any.value.as_slice()).unwrap()
}

fn rds_name(manager: &HttpConnectionManager) -> &str {
    match &manager.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => &rds.route_config_name,
        other => panic!("not RDS: {other:?}"),
    }
}

fn cluster_of(route: &envoy_types::pb::envoy::config::route::v3::Route) -> &str {
    match &route.action {
        Some(Action::Route(action)) => match &action.cluster_specifier {
            Some(ClusterSpecifier::Cluster(cluster)) => cluster,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_port_answers_to_its_dns_names_with_the_port_and_bare_only_on_port_80() {
    let options = TranslateOptions { cluster_domain: "edge.local".into(), ..Default::default() };
    let routes =
        outbound_routes_of(&services(vec![service("shop", "web", &[("http", 80), ("admin", 9000)])]), &options);
    assert_eq!(routes.name, "outbound");
    let hosts: Vec<(&str, Vec<&str>, &str)> = routes
        .virtual_hosts
        .iter()
        .map(|h| (h.name.as_str(), h.domains.iter().map(String::as_str).collect(), cluster_of(&h.routes[0])))
        .collect();
    assert_eq!(
        hosts,
        [
            (
                "web.shop:80",
                vec![
                    "web:80",
                    "web.shop:80",
                    "web.shop.svc:80",
                    "web.shop.svc.edge.local:80",
                    "web",
                    "web.shop",
                    "web.shop.svc",
                    "web.shop.svc.edge.local",
                ],
                "web.shop:80"
            ),
            (
                "web.shop:9000",
                vec!["web:9000", "web.shop:9000", "web.shop.svc:9000", "web.shop.svc.edge.local:9000"],
                "web.shop:9000"
            ),
        ]
    );
}

#[test]
fn a_service_name_used_in_two_namespaces_gets_no_bare_name_so_no_domain_is_claimed_twice() {
    let routes = outbound_routes_of(
        &services(vec![service("shop", "web", &[("http", 80)]), service("blog", "web", &[("http", 80)])]),
        &TranslateOptions::default(),
    );
    let mut all: Vec<&str> = routes.virtual_hosts.iter().flat_map(|h| h.domains.iter().map(String::as_str)).collect();
    assert!(!all.contains(&"web") && !all.contains(&"web:80"));
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "Envoy refuses a route whose virtual hosts share a domain");
}

#[test]
fn the_outbound_listener_takes_its_routes_over_rds_and_names_an_unknown_host_in_its_404() {
    let options = TranslateOptions { outbound_listener: "127.0.0.1:15006".parse().unwrap(), ..Default::default() };
    let all: Vec<(Listener, bool)> = decoded(&snapshot(&services(vec![]), &options), ResourceType::Listener);
    assert_eq!(all.len(), 1);
    let (outbound, named_only) = &all[0];
    assert!(!named_only, "a wildcard LDS request gets it");
    assert_eq!(outbound.name, "outbound");
    let address = format!("{:?}", outbound.address);
    assert!(address.contains("127.0.0.1") && address.contains("15006"), "{address}");
    let Some(FilterConfig::TypedConfig(any)) = &outbound.filter_chains[0].filters[0].config_type else {
        panic!("no connection manager")
    };
    let hcm = manager(any);
    assert_eq!(rds_name(&hcm), "outbound");
    let mapper = &hcm.local_reply_config.as_ref().unwrap().mappers[0];
    assert!(format!("{mapper:?}").contains("%REQ(:AUTHORITY)%"));
}

#[test]
fn a_connect_to_a_port_is_tunnelled_to_its_cluster_and_every_other_request_is_routed() {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
    let options = TranslateOptions::default();
    let routes = outbound_routes_of(&services(vec![service("shop", "web", &[("http", 80), ("tls", 443)])]), &options);
    for host in &routes.virtual_hosts {
        let [tunnel, plain] = host.routes.as_slice() else { panic!("two routes: {host:?}") };
        assert!(matches!(
            tunnel.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()),
            Some(PathSpecifier::ConnectMatcher(_))
        ));
        let Some(Action::Route(action)) = &tunnel.action else { panic!("{tunnel:?}") };
        let upgrade = &action.upgrade_configs[0];
        assert_eq!(upgrade.upgrade_type, "CONNECT");
        assert!(upgrade.connect_config.is_some(), "terminated here, carried as TCP");
        assert_eq!((cluster_of(tunnel), cluster_of(plain)), (host.name.as_str(), host.name.as_str()));
    }
    let all: Vec<(Listener, bool)> = decoded(&snapshot(&services(vec![]), &options), ResourceType::Listener);
    let Some(FilterConfig::TypedConfig(any)) = &all[0].0.filter_chains[0].filters[0].config_type else {
        panic!("no connection manager")
    };
    let hcm = manager(any);
    let upgrades: Vec<&str> = hcm.upgrade_configs.iter().map(|u| u.upgrade_type.as_str()).collect();
    assert_eq!(upgrades, ["CONNECT", "websocket"]);
    assert!(hcm.http2_protocol_options.is_some_and(|o| o.allow_connect), "HTTP/2 CONNECT too");
    let grpc: Vec<RouteConfiguration> = decoded::<RouteConfiguration>(
        &snapshot(&services(vec![service("shop", "web", &[("http", 80)])]), &options),
        ResourceType::RouteConfiguration,
    )
    .into_iter()
    .map(|(r, _)| r)
    .filter(|r| r.name != OUTBOUND)
    .collect();
    assert!(grpc.iter().all(|r| r.virtual_hosts[0].routes.len() == 1), "proxyless clients' routes are unchanged");
}

#[test]
fn each_http_port_gets_two_named_only_grpc_listeners_with_rds_and_the_router_last() {
    let options = TranslateOptions::default();
    let mut udp = service("shop", "dns", &[("dns", 53)]);
    udp.ports[0].protocol = PortProtocol::Udp;
    let snapshot = snapshot(&services(vec![service("shop", "web", &[("grpc", 50051)]), udp]), &options);
    let grpc: Vec<Listener> = decoded(&snapshot, ResourceType::Listener)
        .into_iter()
        .filter(|(_, named_only)| *named_only)
        .map(|(l, _)| l)
        .collect();
    let names: Vec<&str> = grpc.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["web.shop.svc.cluster.local:50051", "web.shop:50051"], "none for UDP");
    for listener in &grpc {
        let hcm = manager(listener.api_listener.as_ref().unwrap().api_listener.as_ref().unwrap());
        assert_eq!(rds_name(&hcm), listener.name);
        assert_eq!(hcm.http_filters.last().unwrap().name, "envoy.filters.http.router");
    }
    let routes: Vec<RouteConfiguration> = decoded(&snapshot, ResourceType::RouteConfiguration)
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r: &RouteConfiguration| r.name != "outbound")
        .collect();
    for (routes, name) in routes.iter().zip(names) {
        assert_eq!(routes.name, name);
        assert_eq!(routes.virtual_hosts[0].domains, [name]);
        assert_eq!(cluster_of(&routes.virtual_hosts[0].routes[0]), "web.shop:50051");
    }
}

#[test]
fn grpc_and_h2c_ports_get_an_http2_upstream() {
    let mut web = service("shop", "web", &[("grpc", 50051), ("h2c", 8080), ("http", 80)]);
    web.ports[0].app_protocol = AppProtocol::parse(Some("grpc"));
    web.ports[1].app_protocol = AppProtocol::parse(Some("kubernetes.io/h2c"));
    let snapshot = snapshot(&services(vec![web]), &TranslateOptions::default());
    let http2: Vec<bool> = decoded(&snapshot, ResourceType::Cluster)
        .into_iter()
        .map(|(c, _): (Cluster, bool)| {
            c.typed_extension_protocol_options.contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        })
        .collect();
    // In name order: web.shop:50051, web.shop:80, web.shop:8080.
    assert_eq!(http2, [true, false, true]);
}

#[test]
fn every_locality_has_a_weight_of_its_endpoint_count_for_grpc_clients() {
    let state = state(
        vec![service("shop", "web", &[("http", 80)])],
        vec![slice(
            "shop",
            "web-1",
            "web",
            &[("http", 8080)],
            vec![endpoint("10.0.0.1", true, "a"), endpoint("10.0.0.2", true, "a"), endpoint("10.0.0.3", true, "b")],
        )],
        vec![],
    );
    let snapshot = snapshot(&state, &TranslateOptions::default());
    let (decoded, _): (envoy_endpoint::ClusterLoadAssignment, bool) =
        decoded(&snapshot, ResourceType::ClusterLoadAssignment).remove(0);
    let weights: Vec<(u32, u32)> =
        decoded.endpoints.iter().map(|l| (l.load_balancing_weight.unwrap().value, l.priority)).collect();
    assert_eq!(weights, [(2, 0), (1, 0)], "weighted by endpoints, all at priority 0");
}
