//! Gateway API HTTPRoutes attached to a Service port, as the routes of its virtual host:
//! matches, weighted backends (an unresolved backend's share answered 500), header
//! modifiers, URL rewrite, redirect, mirror, timeouts and retries.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, RuntimeFractionalPercent};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::retry_policy::RetryBackOff;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterNotFoundResponseCode, ClusterSpecifier, HostRewriteSpecifier, RequestMirrorPolicy,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};

use crate::model::{
    AttachedRoute, BackendRef, HeaderEdits, ObjectKey, PathMatch, PathRewrite, RequestMatch, RouteFilter, RouteRule,
    ValueMatch,
};

/// The routes of `service`'s port `port` from the routes attached to it, in Gateway API's
/// precedence (match, then the route's age, then rule order); `None` when no route attaches
/// to the port, which keeps its one route to its own cluster.
pub fn port_routes(service: &ObjectKey, routes: &[AttachedRoute], port: u16) -> Option<Vec<Route>> {
    let mut ordered = Vec::new();
    for (age, attached) in routes.iter().enumerate() {
        if !attached.route.attaches_to(service, port) {
            continue;
        }
        for (index, rule) in attached.route.rules.iter().enumerate() {
            let every = vec![RequestMatch::default()];
            let matches = if rule.matches.is_empty() { every } else { rule.matches.clone() };
            for request in matches {
                ordered.push(((request.precedence(), age, index), request, rule, attached));
            }
        }
    }
    if ordered.is_empty() {
        return None;
    }
    ordered.sort_by_key(|entry| entry.0);
    Some(ordered.into_iter().map(|(_, request, rule, attached)| route(&request, rule, attached)).collect())
}

fn route(request: &RequestMatch, rule: &RouteRule, attached: &AttachedRoute) -> Route {
    let mut route = Route { r#match: Some(route_match(request)), ..Default::default() };
    for filter in &rule.filters {
        match filter {
            RouteFilter::RequestHeaders(edits) => {
                route.request_headers_to_add.extend(header_options(edits));
                route.request_headers_to_remove.extend(edits.remove.iter().cloned());
            }
            RouteFilter::ResponseHeaders(edits) => {
                route.response_headers_to_add.extend(header_options(edits));
                route.response_headers_to_remove.extend(edits.remove.iter().cloned());
            }
            _ => {}
        }
    }
    let redirect = rule.filters.iter().find_map(|f| match f {
        RouteFilter::Redirect { scheme, hostname, path, port, status } => Some((scheme, hostname, path, port, *status)),
        _ => None,
    });
    route.action = Some(match redirect {
        Some((scheme, hostname, path, port, status)) => Action::Redirect(RedirectAction {
            scheme_rewrite_specifier: scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
            host_redirect: hostname.clone().unwrap_or_default(),
            port_redirect: port.map(u32::from).unwrap_or_default(),
            path_rewrite_specifier: path.as_ref().map(|p| match p {
                PathRewrite::Full(full) => PathRewriteSpecifier::PathRedirect(full.clone()),
                PathRewrite::Prefix(prefix) => PathRewriteSpecifier::PrefixRewrite(prefix.clone()),
            }),
            response_code: redirect_code(status) as i32,
            ..Default::default()
        }),
        None => match forward(rule, attached) {
            Some(action) => Action::Route(action),
            None => Action::DirectResponse(DirectResponseAction { status: 500, ..Default::default() }),
        },
    });
    route
}

/// Where a rule sends its requests; `None` when no backend resolves (or it names none):
/// every request is then answered 500.
fn forward(rule: &RouteRule, attached: &AttachedRoute) -> Option<RouteAction> {
    let backends: Vec<(&BackendRef, Option<&str>)> =
        rule.backends.iter().filter(|b| b.weight > 0).map(|b| (b, attached.cluster_of(b))).collect();
    if backends.iter().all(|(_, cluster)| cluster.is_none()) {
        return None;
    }
    let cluster_specifier = match backends.as_slice() {
        [(_, Some(cluster))] => ClusterSpecifier::Cluster((*cluster).to_owned()),
        _ => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: backends
                .iter()
                .map(|(backend, cluster)| ClusterWeight {
                    // No cluster has this name: Envoy answers the share with
                    // `cluster_not_found_response_code`, set to 500 below.
                    name: cluster.map_or_else(|| unresolved(backend), str::to_owned),
                    weight: Some(UInt32Value { value: backend.weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        cluster_not_found_response_code: ClusterNotFoundResponseCode::InternalServerError as i32,
        // A mesh route carries long-lived streams (gRPC, SSE): no timeout unless asked.
        timeout: Some(duration(rule.timeouts.request.unwrap_or_default())),
        ..Default::default()
    };
    for filter in &rule.filters {
        match filter {
            RouteFilter::Rewrite { hostname, path } => {
                action.host_rewrite_specifier = hostname.clone().map(HostRewriteSpecifier::HostRewriteLiteral);
                match path {
                    Some(PathRewrite::Prefix(prefix)) => action.prefix_rewrite = prefix.clone(),
                    Some(PathRewrite::Full(full)) => {
                        action.regex_rewrite = Some(RegexMatchAndSubstitute {
                            pattern: Some(RegexMatcher { regex: "^/.*$".into(), ..Default::default() }),
                            substitution: full.clone(),
                        });
                    }
                    None => {}
                }
            }
            RouteFilter::Mirror { backend, percent } => {
                if let Some(cluster) = attached.cluster_of(backend) {
                    action.request_mirror_policies.push(RequestMirrorPolicy {
                        cluster: cluster.to_owned(),
                        runtime_fraction: (*percent < 100).then(|| RuntimeFractionalPercent {
                            default_value: Some(FractionalPercent {
                                numerator: *percent,
                                denominator: DenominatorType::Hundred as i32,
                            }),
                            runtime_key: String::new(),
                        }),
                        ..Default::default()
                    });
                }
            }
            _ => {}
        }
    }
    if rule.retry.is_some() || rule.timeouts.backend_request.is_some() {
        let retry = rule.retry.clone().unwrap_or_default();
        let codes: Vec<u32> = retry.codes.iter().map(|c| u32::from(*c)).collect();
        action.retry_policy = Some(RetryPolicy {
            retry_on: match (rule.retry.is_some(), codes.is_empty()) {
                (false, _) => String::new(),
                (true, true) => "5xx,connect-failure,refused-stream,unavailable".into(),
                (true, false) if codes.iter().any(|c| GRPC_UNAVAILABLE.contains(c)) => {
                    "retriable-status-codes,connect-failure,refused-stream,unavailable".into()
                }
                (true, false) => "retriable-status-codes,connect-failure,refused-stream".into(),
            },
            retriable_status_codes: codes,
            num_retries: Some(UInt32Value {
                value: if rule.retry.is_some() { retry.attempts.unwrap_or(1) } else { 0 },
            }),
            per_try_timeout: rule.timeouts.backend_request.map(duration),
            retry_back_off: retry
                .backoff
                .map(|b| RetryBackOff { base_interval: Some(duration(b)), ..Default::default() }),
            ..Default::default()
        });
    }
    Some(action)
}

/// The HTTP statuses gRPC reads as UNAVAILABLE (gRPC's HTTP-to-gRPC status mapping): a
/// route retrying them retries a gRPC call failing UNAVAILABLE too. `unavailable` in
/// `retry_on` is the one condition both Envoy (on grpc-status) and gRPC clients (gRFC A44,
/// which ignores HTTP conditions) act on.
const GRPC_UNAVAILABLE: [u32; 4] = [429, 502, 503, 504];

/// The name of a cluster that does not exist, for a backend that does not resolve.
fn unresolved(backend: &BackendRef) -> String {
    format!("unresolved:{}.{}:{}", backend.service.name, backend.service.namespace, backend.port.unwrap_or(0))
}

fn route_match(request: &RequestMatch) -> RouteMatch {
    let path = match &request.path {
        None => PathSpecifier::Prefix("/".into()),
        Some(PathMatch::Exact(path)) => PathSpecifier::Path(path.clone()),
        // Gateway API's prefix is by path element: `/foo` takes `/foo/bar`, never `/foobar`.
        Some(PathMatch::Prefix(prefix)) if prefix == "/" || prefix.ends_with('/') => {
            PathSpecifier::Prefix(prefix.clone())
        }
        Some(PathMatch::Prefix(prefix)) => PathSpecifier::PathSeparatedPrefix(prefix.clone()),
        Some(PathMatch::Regex(regex)) => {
            PathSpecifier::SafeRegex(RegexMatcher { regex: regex.clone(), ..Default::default() })
        }
    };
    let mut headers: Vec<HeaderMatcher> = request.headers.iter().map(header_matcher).collect();
    if let Some(method) = &request.method {
        headers.push(header_matcher(&ValueMatch { name: ":method".into(), value: method.clone(), regex: false }));
    }
    RouteMatch {
        path_specifier: Some(path),
        headers,
        query_parameters: request
            .query
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(string_matcher(q))),
            })
            .collect(),
        ..Default::default()
    }
}

fn header_matcher(value: &ValueMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: value.name.clone(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(value))),
        ..Default::default()
    }
}

fn string_matcher(value: &ValueMatch) -> StringMatcher {
    let pattern = if value.regex {
        string_matcher::MatchPattern::SafeRegex(RegexMatcher { regex: value.value.clone(), ..Default::default() })
    } else {
        string_matcher::MatchPattern::Exact(value.value.clone())
    };
    StringMatcher { match_pattern: Some(pattern), ignore_case: false }
}

fn header_options(edits: &HeaderEdits) -> impl Iterator<Item = HeaderValueOption> + '_ {
    let option = |(name, value): &(String, String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue { key: name.clone(), value: value.clone(), ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
    };
    let set = edits.set.iter().map(move |h| option(h, HeaderAppendAction::OverwriteIfExistsOrAdd));
    set.chain(edits.add.iter().map(move |h| option(h, HeaderAppendAction::AppendIfExistsOrAdd)))
}

fn redirect_code(status: u16) -> RedirectResponseCode {
    match status {
        301 => RedirectResponseCode::MovedPermanently,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::Found,
    }
}

fn duration(value: std::time::Duration) -> Duration {
    Duration { seconds: value.as_secs() as i64, nanos: value.subsec_nanos() as i32 }
}
