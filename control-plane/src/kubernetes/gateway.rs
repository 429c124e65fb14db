//! Gateway API HTTPRoutes and GRPCRoutes (`gateway.networking.k8s.io/v1`, v1.6.3 of the
//! CRDs): the API types edgexds reads, and their conversion into [`model::HttpRoute`], checked
//! as the CRD's schema checks them. Only Service parents are kept; a route for Gateways alone
//! converts to one with no parents, which attaches to nothing. A GRPCRoute's method match
//! becomes the path match gRPC's `/service/method` means.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::convert::{NameRule, dns_subdomain, object_key};
use crate::model::{
    self, BackendRef, FieldError, HeaderEdits, ObjectKey, ParentRef, PathMatch, PathRewrite, RequestMatch, RouteFilter,
    RouteKind, RouteRetry, RouteRule, RouteTimeouts, ValueMatch,
};

pub const GROUP: &str = "gateway.networking.k8s.io";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HttpRouteSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<Ref>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GrpcRouteSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<Ref>,
    #[serde(default)]
    pub rules: Vec<GrpcRule>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRule {
    #[serde(default)]
    pub matches: Vec<GrpcMatch>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub backend_refs: Vec<Ref>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMatch {
    pub method: Option<GrpcMethod>,
    #[serde(default)]
    pub headers: Vec<TypedValue>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct GrpcMethod {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub service: Option<String>,
    pub method: Option<String>,
}

/// A parentRef or backendRef: group and kind default to core Services.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ref {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub port: Option<i64>,
    pub weight: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub matches: Vec<Match>,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub backend_refs: Vec<Ref>,
    pub timeouts: Option<Timeouts>,
    pub retry: Option<Retry>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    pub path: Option<TypedValue>,
    #[serde(default)]
    pub headers: Vec<TypedValue>,
    #[serde(default)]
    pub query_params: Vec<TypedValue>,
    pub method: Option<String>,
}

/// A path, header or query match: `type` and `value`, with `name` for headers and queries.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TypedValue {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(rename = "type")]
    pub kind: String,
    pub request_header_modifier: Option<HeaderModifier>,
    pub response_header_modifier: Option<HeaderModifier>,
    pub url_rewrite: Option<Rewrite>,
    pub request_redirect: Option<Redirect>,
    pub request_mirror: Option<Mirror>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct HeaderModifier {
    #[serde(default)]
    pub set: Vec<Header>,
    #[serde(default)]
    pub add: Vec<Header>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    #[serde(rename = "type")]
    pub kind: String,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<i64>,
    pub status_code: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    pub backend_ref: Ref,
    pub percent: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    #[serde(default)]
    pub codes: Vec<i64>,
    pub attempts: Option<i64>,
    pub backoff: Option<String>,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

/// The route, as the API server would accept it, with its Service parents.
pub fn http_route(object: &HttpRoute, default_namespace: &str) -> Result<model::HttpRoute, FieldError> {
    let spec = &object.spec;
    route(RouteKind::Http, &object.metadata, default_namespace, &spec.parent_refs, &spec.rules, convert_rule)
}

/// The GRPCRoute, as the API server would accept it, as the HTTP route it means.
pub fn grpc_route(object: &GrpcRoute, default_namespace: &str) -> Result<model::HttpRoute, FieldError> {
    let spec = &object.spec;
    route(RouteKind::Grpc, &object.metadata, default_namespace, &spec.parent_refs, &spec.rules, convert_grpc_rule)
}

/// What every route kind shares: its key, its Service parents and the bounds on both; each
/// of `rules` is converted by `convert_rule` (its field, the rule, the route's namespace).
fn route<R>(
    kind: RouteKind,
    metadata: &ObjectMeta,
    default_namespace: &str,
    parent_refs: &[Ref],
    rules: &[R],
    convert_rule: fn(&str, &R, &str) -> Result<RouteRule, FieldError>,
) -> Result<model::HttpRoute, FieldError> {
    let key = object_key(metadata, default_namespace, NameRule::Dns1123Subdomain)?;
    if parent_refs.len() > 32 {
        return Err(error("spec.parentRefs", "Too many: at most 32"));
    }
    if rules.len() > 16 {
        return Err(error("spec.rules", "Too many: at most 16"));
    }
    let parents =
        parent_refs.iter().filter(|r| is_service(r)).map(|r| parent(r, &key)).collect::<Result<_, FieldError>>()?;
    let rules = each("spec", "rules", rules, |field, rule| convert_rule(field, rule, &key.namespace))?;
    Ok(model::HttpRoute { parents, rules, ..unserved(kind, metadata, key) })
}

/// A Service parent of the route `route`.
fn parent(r: &Ref, route: &ObjectKey) -> Result<ParentRef, FieldError> {
    Ok(ParentRef {
        service: ObjectKey::new(r.namespace.as_deref().unwrap_or(&route.namespace), &r.name),
        port: r.port.map(|p| port("spec.parentRefs[].port", p)).transpose()?,
    })
}

/// The route `key` with nothing to serve yet: no parents, no rules.
fn unserved(kind: RouteKind, metadata: &ObjectMeta, key: ObjectKey) -> model::HttpRoute {
    model::HttpRoute {
        kind,
        created: metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        generation: metadata.generation,
        key,
        parents: Vec::new(),
        rules: Vec::new(),
        refused: None,
    }
}

/// A route that does not convert, kept by its key and Service parents so that its status can
/// say why it is not served. `why` itself when not even those can be read.
pub fn refused(
    kind: RouteKind,
    metadata: &ObjectMeta,
    parent_refs: &[Ref],
    why: FieldError,
) -> Result<model::HttpRoute, FieldError> {
    let Ok(key) = object_key(metadata, "", NameRule::Dns1123Subdomain) else { return Err(why) };
    // Parents as far as they read: a status for each that does.
    let parents = parent_refs.iter().filter(|r| is_service(r)).take(32).filter_map(|r| parent(r, &key).ok()).collect();
    Ok(model::HttpRoute { parents, refused: Some(why.to_string()), ..unserved(kind, metadata, key) })
}

/// Converts each of `items`, the list `name` under `field`, naming its index in an error.
fn each<T, U>(
    field: &str,
    name: &str,
    items: &[T],
    convert: impl Fn(&str, &T) -> Result<U, FieldError>,
) -> Result<Vec<U>, FieldError> {
    items.iter().enumerate().map(|(i, item)| convert(&format!("{field}.{name}[{i}]"), item)).collect()
}

/// At most this many matches in one rule, as the CRDs allow.
const MAX_MATCHES: usize = 64;

fn within_matches(field: &str, count: usize) -> Result<(), FieldError> {
    if count > MAX_MATCHES {
        return Err(error(format!("{field}.matches"), format!("Too many: at most {MAX_MATCHES}")));
    }
    Ok(())
}

fn convert_grpc_rule(field: &str, rule: &GrpcRule, namespace: &str) -> Result<RouteRule, FieldError> {
    within_matches(field, rule.matches.len())?;
    let matches = each(field, "matches", &rule.matches, |field, m| {
        let headers = Match { headers: m.headers.clone(), ..Match::default() };
        Ok(RequestMatch { path: grpc_path(field, m.method.as_ref())?, ..convert_match(field, &headers)? })
    })?;
    let backends = each(field, "backendRefs", &rule.backend_refs, |field, b| backend(field, b, namespace))?;
    let filters = each(field, "filters", &rule.filters, |field, f| match f.kind.as_str() {
        "RequestHeaderModifier" | "ResponseHeaderModifier" | "RequestMirror" => convert_filter(field, f, namespace),
        other => Err(error(format!("{field}.type"), format!("Unsupported value: {other:?}"))),
    })?;
    Ok(RouteRule { matches, filters, backends, ..RouteRule::default() })
}

/// What a GRPCRoute method match means for the request path `/service/method`.
fn grpc_path(field: &str, method: Option<&GrpcMethod>) -> Result<Option<PathMatch>, FieldError> {
    let Some(method) = method else { return Ok(None) };
    let (service, name) = (method.service.as_deref(), method.method.as_deref());
    for part in [service, name].into_iter().flatten() {
        text(&format!("{field}.method"), part)?;
    }
    Ok(match method.kind.as_deref().unwrap_or("Exact") {
        "Exact" => {
            let valid = |part: Option<&str>| part.is_none_or(|p| !p.is_empty() && !p.contains('/'));
            if !valid(service) || !valid(name) {
                return Err(error(format!("{field}.method"), "service and method are names without '/'"));
            }
            match (service, name) {
                (Some(s), Some(m)) => Some(PathMatch::Exact(format!("/{s}/{m}"))),
                (Some(s), None) => Some(PathMatch::Prefix(format!("/{s}/"))),
                (None, Some(m)) => Some(PathMatch::Regex(format!("/[^/]+/{}", regex_literal(m)))),
                (None, None) => return Err(error(format!("{field}.method"), "one of service or method is required")),
            }
        }
        "RegularExpression" => {
            let path = format!("/{}/{}", service.unwrap_or("[^/]+"), name.unwrap_or("[^/]+"));
            Some(PathMatch::Regex(re2(&format!("{field}.method"), path)?))
        }
        other => return Err(error(format!("{field}.method.type"), format!("Unsupported value: {other:?}"))),
    })
}

/// `value`, which Envoy puts in a request line or header: without NUL, CR or LF, which Envoy
/// refuses in a route, and so would reject every route beside this one.
fn text(field: &str, value: &str) -> Result<String, FieldError> {
    if value.contains(['\0', '\r', '\n']) {
        return Err(error(field, format!("{value:?}: NUL, CR and LF are not allowed")));
    }
    if value.len() > 4096 {
        return Err(error(field, "Too long: at most 4096 bytes"));
    }
    Ok(value.to_owned())
}

/// A header name as the CRD's pattern has it (an HTTP token, at most 256 bytes). Envoy refuses
/// a route that edits `Host` or a pseudo-header on the request, so `request` edits may not.
fn header_name(field: &str, name: &str, request: bool) -> Result<String, FieldError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.len() > 256 || !name.chars().all(token) {
        return Err(error(field, format!("{name:?}: must be an HTTP header name")));
    }
    if request && name.eq_ignore_ascii_case("host") {
        return Err(error(field, "Host cannot be edited as a header: use a URLRewrite's hostname"));
    }
    Ok(name.to_owned())
}

/// A precise hostname, as the CRD's pattern has it.
fn hostname(field: &str, name: &str) -> Result<String, FieldError> {
    dns_subdomain(field, name)?;
    Ok(name.to_owned())
}

/// `pattern`, if Envoy's RE2 takes it: a pattern it refuses would make Envoy reject every
/// route beside this one.
fn re2(field: &str, pattern: String) -> Result<String, FieldError> {
    model::re2::check(&pattern).map_err(|why| error(field, format!("{pattern:?}: {why}")))?;
    Ok(pattern)
}

/// `text` matching itself only, in RE2.
fn regex_literal(text: &str) -> String {
    text.chars().flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' { vec![c] } else { vec!['\\', c] }).collect()
}

/// Group `""` and kind `Service` (their defaults for backends; a parent must say so).
fn is_service(r: &Ref) -> bool {
    r.group.as_deref().unwrap_or("").is_empty() && r.kind.as_deref() == Some("Service")
}

fn port(field: &str, value: i64) -> Result<u16, FieldError> {
    u16::try_from(value).ok().filter(|p| *p > 0).ok_or_else(|| error(field, format!("{value}: must be 1 to 65535")))
}

fn convert_rule(field: &str, rule: &Rule, namespace: &str) -> Result<RouteRule, FieldError> {
    within_matches(field, rule.matches.len())?;
    let matches = each(field, "matches", &rule.matches, convert_match)?;
    let backends = each(field, "backendRefs", &rule.backend_refs, |field, b| backend(field, b, namespace))?;
    let filters = each(field, "filters", &rule.filters, |field, f| convert_filter(field, f, namespace))?;
    let timeouts = match &rule.timeouts {
        Some(t) => RouteTimeouts {
            request: t.request.as_deref().map(|d| duration(&format!("{field}.timeouts.request"), d)).transpose()?,
            backend_request: t
                .backend_request
                .as_deref()
                .map(|d| duration(&format!("{field}.timeouts.backendRequest"), d))
                .transpose()?,
        },
        None => RouteTimeouts::default(),
    };
    if let (Some(request), Some(backend)) = (timeouts.request, timeouts.backend_request)
        && !request.is_zero()
        && backend > request
    {
        return Err(error(format!("{field}.timeouts"), "backendRequest must be <= request timeout"));
    }
    let retry = rule
        .retry
        .as_ref()
        .map(|r| -> Result<RouteRetry, FieldError> {
            Ok(RouteRetry {
                attempts: r.attempts.map(|a| u32::try_from(a).unwrap_or(0)),
                codes: r
                    .codes
                    .iter()
                    .map(|c| {
                        u16::try_from(*c)
                            .ok()
                            .filter(|c| (400..=599).contains(c))
                            .ok_or_else(|| error(format!("{field}.retry.codes"), format!("{c}: must be 400 to 599")))
                    })
                    .collect::<Result<_, _>>()?,
                backoff: r.backoff.as_deref().map(|d| duration(&format!("{field}.retry.backoff"), d)).transpose()?,
            })
        })
        .transpose()?;
    Ok(RouteRule { matches, filters, backends, timeouts, retry })
}

fn backend(field: &str, r: &Ref, namespace: &str) -> Result<BackendRef, FieldError> {
    let weight = r.weight.unwrap_or(1);
    if !(0..=1_000_000).contains(&weight) {
        return Err(error(format!("{field}.weight"), format!("{weight}: must be 0 to 1000000")));
    }
    let service = r.group.as_deref().unwrap_or("").is_empty() && r.kind.as_deref().unwrap_or("Service") == "Service";
    Ok(BackendRef {
        // A backend of another kind resolves to nothing: its share gets 500.
        service: ObjectKey::new(r.namespace.as_deref().unwrap_or(namespace), if service { &r.name } else { "" }),
        port: r.port.map(|p| port(&format!("{field}.port"), p)).transpose()?,
        weight: weight as u32,
    })
}

fn convert_match(field: &str, m: &Match) -> Result<RequestMatch, FieldError> {
    let path = match &m.path {
        None => None,
        Some(p) => {
            let value = text(&format!("{field}.path.value"), p.value.as_deref().unwrap_or("/"))?;
            if !value.starts_with('/') {
                return Err(error(format!("{field}.path.value"), "must be an absolute path"));
            }
            Some(match p.kind.as_deref().unwrap_or("PathPrefix") {
                "Exact" => PathMatch::Exact(value),
                "PathPrefix" => PathMatch::Prefix(value),
                "RegularExpression" => PathMatch::Regex(re2(&format!("{field}.path.value"), value)?),
                other => return Err(error(format!("{field}.path.type"), format!("Unsupported value: {other:?}"))),
            })
        }
    };
    let values = |list: &[TypedValue], what: &str| -> Result<Vec<ValueMatch>, FieldError> {
        list.iter()
            .map(|v| {
                let name = v.name.as_deref().ok_or_else(|| error(format!("{field}.{what}.name"), "Required value"))?;
                let name = header_name(&format!("{field}.{what}.name"), name, false)?;
                let regex = match v.kind.as_deref().unwrap_or("Exact") {
                    "Exact" => false,
                    "RegularExpression" => true,
                    other => {
                        return Err(error(format!("{field}.{what}.type"), format!("Unsupported value: {other:?}")));
                    }
                };
                let value = text(&format!("{field}.{what}.value"), v.value.as_deref().unwrap_or_default())?;
                let value = if regex { re2(&format!("{field}.{what}.value"), value)? } else { value };
                Ok(ValueMatch { name, value, regex })
            })
            .collect()
    };
    let method = match m.method.as_deref() {
        None => None,
        Some(m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH")) => {
            Some(m.to_owned())
        }
        Some(other) => return Err(error(format!("{field}.method"), format!("Unsupported value: {other:?}"))),
    };
    Ok(RequestMatch {
        path,
        headers: values(&m.headers, "headers")?,
        query: values(&m.query_params, "queryParams")?,
        method,
    })
}

fn convert_filter(field: &str, f: &Filter, namespace: &str) -> Result<RouteFilter, FieldError> {
    let missing = || error(field, format!("type {} needs its field", f.kind));
    let edits = |m: &HeaderModifier, request: bool| -> Result<HeaderEdits, FieldError> {
        let pairs = |list: &[Header], what: &str| {
            each(field, what, list, |field, h| {
                Ok((
                    header_name(&format!("{field}.name"), &h.name, request)?,
                    text(&format!("{field}.value"), &h.value)?,
                ))
            })
        };
        Ok(HeaderEdits {
            set: pairs(&m.set, "set")?,
            add: pairs(&m.add, "add")?,
            remove: each(field, "remove", &m.remove, |field, name| header_name(field, name, request))?,
        })
    };
    let path = |p: &Option<PathModifier>| -> Result<Option<PathRewrite>, FieldError> {
        match p {
            None => Ok(None),
            Some(p) => match (p.kind.as_str(), &p.replace_full_path, &p.replace_prefix_match) {
                ("ReplaceFullPath", Some(full), _) => {
                    Ok(Some(PathRewrite::Full(text(&format!("{field}.path"), full)?)))
                }
                ("ReplacePrefixMatch", _, Some(prefix)) => {
                    Ok(Some(PathRewrite::Prefix(text(&format!("{field}.path"), prefix)?)))
                }
                (other, _, _) => Err(error(format!("{field}.path.type"), format!("{other:?} without its value"))),
            },
        }
    };
    Ok(match f.kind.as_str() {
        "RequestHeaderModifier" => {
            RouteFilter::RequestHeaders(edits(f.request_header_modifier.as_ref().ok_or_else(missing)?, true)?)
        }
        "ResponseHeaderModifier" => {
            RouteFilter::ResponseHeaders(edits(f.response_header_modifier.as_ref().ok_or_else(missing)?, false)?)
        }
        "URLRewrite" => {
            let rewrite = f.url_rewrite.as_ref().ok_or_else(missing)?;
            let hostname = rewrite.hostname.as_deref().map(|h| hostname(&format!("{field}.urlRewrite.hostname"), h));
            RouteFilter::Rewrite { hostname: hostname.transpose()?, path: path(&rewrite.path)? }
        }
        "RequestRedirect" => {
            let redirect = f.request_redirect.as_ref().ok_or_else(missing)?;
            let status = redirect.status_code.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(error(
                    format!("{field}.requestRedirect.statusCode"),
                    format!("Unsupported value: {status}"),
                ));
            }
            RouteFilter::Redirect {
                scheme: redirect.scheme.clone(),
                hostname: redirect
                    .hostname
                    .as_deref()
                    .map(|h| hostname(&format!("{field}.requestRedirect.hostname"), h))
                    .transpose()?,
                path: path(&redirect.path)?,
                port: redirect.port.map(|p| port(&format!("{field}.requestRedirect.port"), p)).transpose()?,
                status: status as u16,
            }
        }
        "RequestMirror" => {
            let mirror = f.request_mirror.as_ref().ok_or_else(missing)?;
            let percent = mirror.percent.unwrap_or(100);
            if !(0..=100).contains(&percent) {
                return Err(error(format!("{field}.requestMirror.percent"), format!("{percent}: must be 0 to 100")));
            }
            let backend = backend(&format!("{field}.requestMirror.backendRef"), &mirror.backend_ref, namespace)?;
            RouteFilter::Mirror { backend, percent: percent as u32 }
        }
        other => return Err(error(format!("{field}.type"), format!("Unsupported value: {other:?}"))),
    })
}

/// A Gateway API Duration (`1h`, `30s`, `500ms`, combined), as its CRD pattern allows.
fn duration(field: &str, text: &str) -> Result<std::time::Duration, FieldError> {
    let bad = || error(field, format!("{text:?}: not a Gateway API duration (e.g. 10s, 500ms, 1h30m)"));
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    let units: BTreeMap<&str, u64> = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)].into();
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = if rest.starts_with("ms") { "ms" } else { &rest[..1] };
        let millis = units.get(unit).ok_or_else(bad)?;
        total += std::time::Duration::from_millis(number * millis);
        rest = &rest[unit.len()..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<model::HttpRoute, FieldError> {
        let route: HttpRoute = serde_norway::from_str(yaml).unwrap();
        http_route(&route, "default")
    }

    #[test]
    fn only_service_parents_attach_and_every_field_converts() {
        let route = parse(
            "metadata: {name: canary, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: web, port: 80}, {name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-test, value: 'yes'}], method: GET}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, percent: 10}}
    backendRefs: [{name: web-v1, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]
    timeouts: {request: 1s500ms, backendRequest: 500ms}
    retry: {codes: [503], attempts: 2, backoff: 100ms}",
        )
        .unwrap();
        assert_eq!(route.parents, vec![ParentRef { service: ObjectKey::new("shop", "web"), port: Some(80) }]);
        let rule = &route.rules[0];
        assert_eq!(rule.backends.iter().map(|b| b.weight).collect::<Vec<_>>(), vec![90, 10]);
        assert_eq!(rule.timeouts.request, Some(std::time::Duration::from_millis(1500)));
        assert_eq!(rule.retry.as_ref().unwrap().codes, vec![503]);
        assert_eq!(rule.matches[0].path, Some(PathMatch::Prefix("/api".into())));
    }

    #[test]
    fn a_grpc_method_match_is_the_path_grpc_means() {
        let route: GrpcRoute = serde_norway::from_str(
            "metadata: {name: greeter, namespace: shop}
spec:
  parentRefs: [{kind: Service, group: '', name: greeter}]
  rules:
  - matches: [{method: {service: test.Greeter, method: Who}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{method: {service: test.Greeter}}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{method: {method: Where}}]
    backendRefs: [{name: c, port: 80}]",
        )
        .unwrap();
        let route = grpc_route(&route, "default").unwrap();
        let paths: Vec<_> = route.rules.iter().map(|r| r.matches[0].path.clone().unwrap()).collect();
        assert_eq!(
            paths,
            vec![
                PathMatch::Exact("/test.Greeter/Who".into()),
                PathMatch::Prefix("/test.Greeter/".into()),
                PathMatch::Regex("/[^/]+/Where".into())
            ]
        );
        assert_eq!(route.kind, RouteKind::Grpc);
    }

    #[test]
    fn what_the_crd_refuses_is_refused_with_its_field() {
        let bad = parse(
            "metadata: {name: r}
spec: {rules: [{backendRefs: [{name: web, port: 80, weight: -1}]}]}",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("spec.rules[0].backendRefs[0].weight"), "{bad}");
        let bad = parse("metadata: {name: r}\nspec: {rules: [{timeouts: {request: 10x}}]}").unwrap_err();
        assert!(bad.to_string().contains("timeouts.request"), "{bad}");
    }

    /// Each passes the API server's schema, and each makes Envoy reject the whole route.
    #[test]
    fn text_envoy_would_refuse_refuses_the_route_naming_its_field() {
        let filter = |body: &str| format!("metadata: {{name: r}}\nspec: {{rules: [{{filters: [{body}]}}]}}");
        for (body, field) in [
            ("{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Host, value: x}]}}", "set[0].name"),
            ("{type: RequestHeaderModifier, requestHeaderModifier: {remove: [host]}}", "remove[0]"),
            (
                "{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x, value: \"a\\r\\nb\"}]}}",
                "add[0].value",
            ),
            ("{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: 'x y', value: v}]}}", "set[0].name"),
            ("{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: \"/a\\nb\"}}}", "path"),
            ("{type: URLRewrite, urlRewrite: {hostname: 'Bad_Host'}}", "urlRewrite.hostname"),
        ] {
            let bad = parse(&filter(body)).unwrap_err();
            assert!(bad.to_string().contains(&format!("spec.rules[0].filters[0].{field}")), "{body}: {bad}");
        }
        let response_host =
            parse(&filter("{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: Host, value: x}]}}"));
        assert!(response_host.is_ok(), "Host may be set on a response");
    }

    #[test]
    fn a_regex_envoy_would_refuse_refuses_the_route_naming_its_field() {
        for (spec, field) in [
            ("{matches: [{path: {type: RegularExpression, value: '/a{200}'}}]}", "matches[0].path.value"),
            (
                "{matches: [{headers: [{type: RegularExpression, name: h, value: '(?=x)'}]}]}",
                "matches[0].headers.value",
            ),
            (
                "{matches: [{queryParams: [{type: RegularExpression, name: q, value: '\\pL'}]}]}",
                "matches[0].queryParams.value",
            ),
        ] {
            let bad = parse(&format!("metadata: {{name: r}}\nspec: {{rules: [{spec}]}}")).unwrap_err();
            assert!(bad.to_string().contains(&format!("spec.rules[0].{field}")), "{bad}");
        }
        let grpc: GrpcRoute = serde_norway::from_str(
            "metadata: {name: g}\nspec: {rules: [{matches: [{method: {type: RegularExpression, service: 'a{300}'}}]}]}",
        )
        .unwrap();
        let bad = grpc_route(&grpc, "default").unwrap_err();
        assert!(bad.to_string().contains("spec.rules[0].matches[0].method"), "{bad}");
    }
}
