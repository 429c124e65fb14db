//! HTTPRoutes on a Service become its virtual host's routes.

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;

use super::routes::virtual_hosts;
use crate::model::fixtures::{service, state};
use crate::model::{
    BackendRef, HttpRoute, ObjectKey, ParentRef, PathMatch, RequestMatch, RouteKind, RouteRule, resolve,
};

fn backend(name: &str, weight: u32) -> BackendRef {
    BackendRef { service: ObjectKey::new("shop", name), port: Some(80), weight }
}

fn route(name: &str, created: &str, rules: Vec<RouteRule>) -> HttpRoute {
    HttpRoute {
        kind: RouteKind::Http,
        key: ObjectKey::new("shop", name),
        created: Some(created.into()),
        generation: Some(1),
        parents: vec![ParentRef { service: ObjectKey::new("shop", "web"), port: None }],
        rules,
        refused: None,
    }
}

fn web_routes(routes: Vec<HttpRoute>) -> Vec<envoy_types::pb::envoy::config::route::v3::Route> {
    let mut input = state(
        vec![service("shop", "web", &[("http", 80)]), service("shop", "web-v2", &[("http", 80)])],
        vec![],
        vec![],
    );
    for r in routes {
        input.routes.insert(r.id(), Arc::new(r));
    }
    let model = resolve(&input);
    let web = &model.services[&ObjectKey::new("shop", "web")];
    virtual_hosts(web, "cluster.local", true).remove(0).routes
}

#[test]
fn without_a_route_a_service_keeps_its_one_route_after_the_tunnel() {
    let routes = web_routes(vec![]);
    assert_eq!(routes.len(), 2);
    assert!(
        matches!(routes[1].r#match.as_ref().unwrap().path_specifier, Some(PathSpecifier::Prefix(ref p)) if p == "/")
    );
}

#[test]
fn rules_follow_gateway_precedence_after_the_tunnel_and_an_unresolved_share_answers_500() {
    let split = RouteRule { backends: vec![backend("web", 90), backend("missing", 10)], ..Default::default() };
    let exact = RouteRule {
        matches: vec![RequestMatch { path: Some(PathMatch::Exact("/login".into())), ..Default::default() }],
        backends: vec![backend("web-v2", 1)],
        ..Default::default()
    };
    let routes = web_routes(vec![route("split", "2024-01-01", vec![split]), route("login", "2024-01-02", vec![exact])]);
    assert_eq!(routes.len(), 3, "the tunnel, then the exact path before the catch-all");
    assert!(
        matches!(routes[1].r#match.as_ref().unwrap().path_specifier, Some(PathSpecifier::Path(ref p)) if p == "/login")
    );
    let Some(Action::Route(action)) = &routes[2].action else { panic!("a route action") };
    let Some(ClusterSpecifier::WeightedClusters(weighted)) = &action.cluster_specifier else { panic!("weighted") };
    let names: Vec<&str> = weighted.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["web.shop:80", "unresolved:missing.shop:80"]);
    assert_eq!(action.cluster_not_found_response_code, 2, "500 for the unresolved share");
}

#[test]
fn a_rule_with_no_backend_that_resolves_answers_500() {
    let routes = web_routes(vec![route(
        "none",
        "2024-01-01",
        vec![RouteRule { backends: vec![backend("gone", 1)], ..Default::default() }],
    )]);
    assert!(matches!(&routes[1].action, Some(Action::DirectResponse(d)) if d.status == 500));
}

#[test]
fn a_route_from_another_namespace_does_not_attach_and_a_backend_there_does_not_resolve() {
    let mut consumer =
        route("consumer", "2024-01-01", vec![RouteRule { backends: vec![backend("web-v2", 1)], ..Default::default() }]);
    consumer.key = ObjectKey::new("other", "consumer");
    assert_eq!(web_routes(vec![consumer]).len(), 2, "the Service keeps its own route");

    let elsewhere = BackendRef { service: ObjectKey::new("other", "web-v2"), port: Some(80), weight: 1 };
    let routes = web_routes(vec![route(
        "away",
        "2024-01-01",
        vec![RouteRule { backends: vec![elsewhere], ..Default::default() }],
    )]);
    assert!(matches!(&routes[1].action, Some(Action::DirectResponse(d)) if d.status == 500));
}
