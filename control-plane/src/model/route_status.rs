//! What a route's status says of each Service parent: whether it is attached (`Accepted`) and
//! whether every backend resolves (`ResolvedRefs`), with Gateway API's reasons. Pure: the
//! same routes and Services give the same status, so replicas agree.

use super::ObjectMap;
use super::object::{PortProtocol, Service, ServicePort};
use super::route::{BackendRef, HttpRoute, ParentRef};

/// One condition: holds or not, with the spec's reason and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteCondition {
    pub holds: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The status of a route for one Service parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentStatus {
    pub parent: ParentRef,
    pub accepted: RouteCondition,
    pub resolved_refs: RouteCondition,
}

/// At most this many problems are named in one message; the rest are counted.
const NAMED_PROBLEMS: usize = 3;

/// The status for each Service parent of `route`, in the order the route names them.
pub fn route_status(route: &HttpRoute, services: &ObjectMap<Service>) -> Vec<ParentStatus> {
    let resolved_refs = resolved_refs(route, services);
    route
        .parents
        .iter()
        .map(|parent| ParentStatus {
            parent: parent.clone(),
            accepted: accepted(route, parent, services),
            resolved_refs: resolved_refs.clone(),
        })
        .collect()
}

fn accepted(route: &HttpRoute, parent: &ParentRef, services: &ObjectMap<Service>) -> RouteCondition {
    let refuse = |reason, message| RouteCondition { holds: false, reason, message };
    if let Some(why) = &route.refused {
        return refuse("UnsupportedValue", why.clone());
    }
    let target = &parent.service;
    if target.namespace != route.key.namespace {
        return refuse(
            "UnsupportedValue",
            format!(
                "a route for Service {target} must be in namespace {}: a route from another namespace (a consumer route) is not supported",
                target.namespace
            ),
        );
    }
    let Some(service) = services.get(target).filter(|s| !s.external_name) else {
        return refuse("NoMatchingParent", format!("Service {target} not found"));
    };
    match parent.port {
        Some(port) if tcp_port(service, port).is_none() => {
            refuse("NoMatchingParent", format!("Service {target} has no TCP port {port}"))
        }
        Some(port) => {
            RouteCondition { holds: true, reason: "Accepted", message: format!("attached to {target}:{port}") }
        }
        None => RouteCondition { holds: true, reason: "Accepted", message: format!("attached to {target}") },
    }
}

fn resolved_refs(route: &HttpRoute, services: &ObjectMap<Service>) -> RouteCondition {
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    for backend in route.backend_refs() {
        if let Err(problem) = resolve_backend(route, backend, services)
            && !problems.contains(&problem)
        {
            problems.push(problem);
        }
    }
    let Some((reason, _)) = problems.first() else {
        return RouteCondition { holds: true, reason: "ResolvedRefs", message: "every backend resolves".into() };
    };
    let mut message = problems.iter().take(NAMED_PROBLEMS).map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ");
    if problems.len() > NAMED_PROBLEMS {
        message.push_str(&format!("; and {} more", problems.len() - NAMED_PROBLEMS));
    }
    message.push_str(": their share is answered 500");
    RouteCondition { holds: false, reason, message }
}

/// The Service port `backend` of `route` sends to, or the reason and message why it resolves
/// to none: the one rule both translation (which answers such a share 500) and status follow.
pub fn resolve_backend<'a>(
    route: &HttpRoute,
    backend: &BackendRef,
    services: &'a ObjectMap<Service>,
) -> Result<(&'a Service, &'a ServicePort), (&'static str, String)> {
    let key = &backend.service;
    if key.name.is_empty() {
        return Err(("InvalidKind", "a backend that is not a Service".into()));
    }
    if !route.may_use(key) {
        return Err((
            "RefNotPermitted",
            format!("backend {key} is in another namespace (ReferenceGrant is not supported)"),
        ));
    }
    let Some(service) = services.get(key).filter(|s| !s.external_name) else {
        return Err(("BackendNotFound", format!("Service {key} not found")));
    };
    let Some(port) = backend.port else {
        return Err(("BackendNotFound", format!("backend {key} names no port")));
    };
    tcp_port(service, port)
        .ok_or_else(|| ("BackendNotFound", format!("Service {key} has no TCP port {port}")))
        .map(|found| (&**service, found))
}

fn tcp_port(service: &Service, port: u16) -> Option<&ServicePort> {
    service.ports.iter().find(|p| p.port == port && p.protocol == PortProtocol::Tcp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{service, state};
    use crate::model::{ObjectKey, RouteFilter, RouteKind, RouteRule};

    fn services() -> ObjectMap<Service> {
        state(vec![service("shop", "web", &[("http", 80)]), service("shop", "v2", &[("http", 80)])], vec![], vec![])
            .services
    }

    fn route(parents: &[(&str, &str, Option<u16>)], backends: &[(&str, &str, Option<u16>)]) -> HttpRoute {
        let key = |ns: &str, name: &str| ObjectKey::new(ns, name);
        HttpRoute {
            kind: RouteKind::Http,
            key: key("shop", "r"),
            created: None,
            generation: Some(3),
            parents: parents.iter().map(|(ns, name, port)| ParentRef { service: key(ns, name), port: *port }).collect(),
            rules: vec![RouteRule {
                backends: backends
                    .iter()
                    .map(|(ns, name, port)| BackendRef { service: key(ns, name), port: *port, weight: 1 })
                    .collect(),
                filters: vec![RouteFilter::Mirror {
                    backend: BackendRef { service: key("shop", "web"), port: Some(80), weight: 1 },
                    percent: 100,
                }],
                ..Default::default()
            }],
            refused: None,
        }
    }

    fn summary(status: &[ParentStatus]) -> Vec<(bool, &str, bool, &str)> {
        status
            .iter()
            .map(|s| (s.accepted.holds, s.accepted.reason, s.resolved_refs.holds, s.resolved_refs.reason))
            .collect()
    }

    #[test]
    fn a_route_to_existing_services_is_accepted_and_resolved() {
        let status = route_status(&route(&[("shop", "web", Some(80))], &[("shop", "v2", Some(80))]), &services());
        assert_eq!(summary(&status), [(true, "Accepted", true, "ResolvedRefs")]);
        assert_eq!(status[0].accepted.message, "attached to shop/web:80");
    }

    #[test]
    fn each_parent_problem_has_its_reason() {
        let parents = [("shop", "gone", None), ("shop", "web", Some(81)), ("other", "web", None)];
        let status = route_status(&route(&parents, &[("shop", "v2", Some(80))]), &services());
        let reasons: Vec<_> = status.iter().map(|s| (s.accepted.holds, s.accepted.reason)).collect();
        assert_eq!(reasons, [(false, "NoMatchingParent"), (false, "NoMatchingParent"), (false, "UnsupportedValue")]);
        assert!(status[0].accepted.message.contains("Service shop/gone not found"));
        assert!(status[2].accepted.message.contains("consumer route"), "{}", status[2].accepted.message);
    }

    #[test]
    fn each_backend_problem_has_its_reason_and_the_first_reason_is_the_conditions() {
        let cases = [
            (("shop", "gone", Some(80)), "BackendNotFound", "Service shop/gone not found"),
            (("shop", "v2", Some(81)), "BackendNotFound", "has no TCP port 81"),
            (("shop", "v2", None), "BackendNotFound", "names no port"),
            (("other", "v2", Some(80)), "RefNotPermitted", "ReferenceGrant"),
            (("shop", "", Some(80)), "InvalidKind", "not a Service"),
        ];
        for (backend, reason, message) in cases {
            let status = route_status(&route(&[("shop", "web", None)], &[backend]), &services());
            let resolved = &status[0].resolved_refs;
            assert_eq!((resolved.holds, resolved.reason), (false, reason), "{backend:?}");
            assert!(resolved.message.contains(message) && resolved.message.ends_with("answered 500"), "{resolved:?}");
            assert!(status[0].accepted.holds, "a route with a bad backend is still attached");
        }
    }

    #[test]
    fn a_refused_route_is_not_accepted_and_says_why() {
        let refused = HttpRoute { refused: Some("spec.rules[0]: bad".into()), ..route(&[("shop", "web", None)], &[]) };
        let status = route_status(&refused, &services());
        assert_eq!(
            (status[0].accepted.reason, status[0].accepted.message.as_str()),
            ("UnsupportedValue", "spec.rules[0]: bad")
        );
    }
}
