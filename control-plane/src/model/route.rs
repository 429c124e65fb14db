//! Gateway API routes for the mesh (GAMMA): an HTTPRoute or GRPCRoute whose parentRefs name
//! Services, as plain values. Only Service parents are kept: a route for a Gateway is not
//! ours. A GRPCRoute is held as the HTTP route it means (a method match is a path match on
//! `/service/method`), so one translation serves both.
//!
//! A route shapes the traffic of every client of its parent Service, so only the Service's
//! own namespace may hold one (a producer route). A route in another namespace (a consumer
//! route, which GAMMA scopes to that namespace's clients) and a backend in another namespace
//! (which needs a ReferenceGrant) are not supported: neither attaches nor resolves, and the
//! route's status says so.

use std::time::Duration;

use super::ObjectKey;

/// Which Gateway API kind a route came as: the two share names, so each keeps its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Http,
    Grpc,
}

/// A route's identity: its kind and namespace/name.
pub type RouteId = (RouteKind, ObjectKey);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    pub kind: RouteKind,
    pub key: ObjectKey,
    /// Older routes win a tie of precedence: creation time first, then namespace/name.
    pub created: Option<String>,
    pub generation: Option<i64>,
    pub parents: Vec<ParentRef>,
    pub rules: Vec<RouteRule>,
    /// Why the route as written cannot be served (its rules are then empty): it attaches to
    /// nothing, and its status says why.
    pub refused: Option<String>,
}

/// A Service the route attaches to, and the port it is limited to, if any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParentRef {
    pub service: ObjectKey,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteRule {
    /// Empty means every request (a prefix `/` match).
    pub matches: Vec<RequestMatch>,
    pub filters: Vec<RouteFilter>,
    pub backends: Vec<BackendRef>,
    pub timeouts: RouteTimeouts,
    pub retry: Option<RouteRetry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMatch {
    pub path: Option<PathMatch>,
    pub headers: Vec<ValueMatch>,
    pub query: Vec<ValueMatch>,
    pub method: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// A header or query parameter that must equal `value`, or match it as a regular expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueMatch {
    pub name: String,
    pub value: String,
    pub regex: bool,
}

/// A Service port traffic goes to, with its share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendRef {
    pub service: ObjectKey,
    pub port: Option<u16>,
    pub weight: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRewrite {
    Full(String),
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteFilter {
    RequestHeaders(HeaderEdits),
    ResponseHeaders(HeaderEdits),
    Rewrite {
        hostname: Option<String>,
        path: Option<PathRewrite>,
    },
    Redirect {
        scheme: Option<String>,
        hostname: Option<String>,
        path: Option<PathRewrite>,
        port: Option<u16>,
        status: u16,
    },
    /// A copy of each request (of `percent` of them) to `backend`, its answer dropped.
    Mirror {
        backend: BackendRef,
        percent: u32,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTimeouts {
    /// The whole request, retries included.
    pub request: Option<Duration>,
    /// One try at a backend.
    pub backend_request: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteRetry {
    pub attempts: Option<u32>,
    /// Statuses retried; empty: the implementation's choice (5xx, connection failures).
    pub codes: Vec<u16>,
    pub backoff: Option<Duration>,
}

impl HttpRoute {
    pub fn id(&self) -> RouteId {
        (self.kind, self.key.clone())
    }

    /// The Services whose traffic this route shapes: its parents in its own namespace.
    pub fn parent_services(&self) -> impl Iterator<Item = &ObjectKey> {
        self.attachable().map(|p| &p.service)
    }

    fn attachable(&self) -> impl Iterator<Item = &ParentRef> {
        let serving = self.refused.is_none();
        self.parents.iter().filter(move |p| serving && p.service.namespace == self.key.namespace)
    }

    /// Whether `backend` is one this route may send to: a Service of its own namespace.
    pub fn may_use(&self, backend: &ObjectKey) -> bool {
        backend.namespace == self.key.namespace && !backend.name.is_empty()
    }

    /// Every backend a rule sends to or mirrors to.
    pub fn backend_refs(&self) -> impl Iterator<Item = &BackendRef> {
        self.rules.iter().flat_map(|rule| {
            rule.backends.iter().chain(rule.filters.iter().filter_map(|f| match f {
                RouteFilter::Mirror { backend, .. } => Some(backend),
                _ => None,
            }))
        })
    }

    /// Every Service a rule sends to or mirrors to.
    pub fn backend_services(&self) -> impl Iterator<Item = &ObjectKey> {
        self.backend_refs().map(|b| &b.service)
    }

    /// Whether this route attaches to `port` of `service`.
    pub fn attaches_to(&self, service: &ObjectKey, port: u16) -> bool {
        self.attachable().any(|p| &p.service == service && p.port.is_none_or(|only| only == port))
    }

    /// Precedence among routes of one Service: the oldest first, then by name.
    pub fn age_order(&self) -> (Option<&str>, &ObjectKey, RouteKind) {
        (self.created.as_deref(), &self.key, self.kind)
    }
}

impl RequestMatch {
    /// Gateway API's precedence among matches: an exact path, then the longest prefix (or
    /// regex), then a method, then the most headers, then the most query parameters. Lower
    /// sorts first.
    pub fn precedence(
        &self,
    ) -> (u8, std::cmp::Reverse<usize>, bool, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
        let (kind, length) = match &self.path {
            Some(PathMatch::Exact(p)) => (0, p.len()),
            Some(PathMatch::Prefix(p)) => (1, p.len()),
            Some(PathMatch::Regex(p)) => (2, p.len()),
            None => (1, 1),
        };
        (
            kind,
            std::cmp::Reverse(length),
            self.method.is_none(),
            std::cmp::Reverse(self.headers.len()),
            std::cmp::Reverse(self.query.len()),
        )
    }
}

/// A route attached to a Service, with the cluster of each backend it names that exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedRoute {
    pub route: std::sync::Arc<HttpRoute>,
    /// By backend Service and port; a backend missing here does not resolve (no such Service,
    /// or no such TCP port of it) and its share is answered 500, as the spec says.
    pub clusters: std::collections::BTreeMap<(ObjectKey, u16), String>,
}

impl AttachedRoute {
    pub fn cluster_of(&self, backend: &BackendRef) -> Option<&str> {
        let port = backend.port?;
        self.clusters.get(&(backend.service.clone(), port)).map(String::as_str)
    }
}
