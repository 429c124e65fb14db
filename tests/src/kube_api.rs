//! A small Kubernetes API server with faithful list/watch semantics, for testing
//! the Kubernetes source through kube-rs.
//!
//! It keeps Services, EndpointSlices and HealthProbes with one global
//! resourceVersion; lists carry it; watches replay history after a given
//! resourceVersion, honour label selectors (an object leaving a selector is a
//! DELETED event, entering it an ADDED one), send bookmarks, and answer a
//! resourceVersion older than the compacted history with 410 Gone. Status is
//! written with server-side apply; an apply that changes nothing changes no
//! resourceVersion, as on a real server. `set_available(false)` simulates an
//! outage: open watches end and every request gets 503.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, RawQuery, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    HealthProbe,
}

impl Kind {
    fn from_plural(plural: &str) -> Option<Self> {
        match plural {
            "services" => Some(Kind::Service),
            "endpointslices" => Some(Kind::EndpointSlice),
            "healthprobes" => Some(Kind::HealthProbe),
            _ => None,
        }
    }

    fn from_object(object: &Value) -> Self {
        match object["kind"].as_str() {
            Some("Service") => Kind::Service,
            Some("EndpointSlice") => Kind::EndpointSlice,
            Some("HealthProbe") => Kind::HealthProbe,
            other => panic!("unsupported kind {other:?}"),
        }
    }

    fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::EndpointSlice => "EndpointSliceList",
            Kind::HealthProbe => "HealthProbeList",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::HealthProbe => "edgexds.io/v1alpha1",
        }
    }
}

type Key = (Kind, String, String);

struct Change {
    rv: u64,
    kind: Kind,
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest_watchable: u64,
    status_applies: Vec<(String, String)>,
    /// Every (verb, resource) a client used, as RBAC names them.
    verbs: std::collections::BTreeSet<(String, String)>,
    /// Requests answered 503 while the server was down.
    refused: usize,
}

#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Mutex<Inner>>,
    /// Bumped on every change so open watches wake up.
    changes: watch::Sender<u64>,
    available: watch::Sender<bool>,
    pub addr: SocketAddr,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server =
            Self { inner: Arc::default(), changes: watch::Sender::new(0), available: watch::Sender::new(true), addr };
        let app = Router::new().fallback(handle).with_state(server.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or replaces an object, as `kubectl apply` would.
    pub fn apply(&self, mut object: Value) {
        let kind = Kind::from_object(&object);
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let name = object["metadata"]["name"].as_str().expect("name").to_owned();
        let mut inner = self.lock();
        inner.rv += 1;
        let rv = inner.rv;
        let key = (kind, namespace.clone(), name);
        let old = inner.objects.get(&key).cloned();
        let meta = &mut object["metadata"];
        meta["namespace"] = json!(namespace);
        meta["resourceVersion"] = json!(rv.to_string());
        let (created, generation, status) = match &old {
            Some(old) => {
                let spec_changed = old.get("spec") != object.get("spec");
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + i64::from(spec_changed);
                (old["metadata"]["creationTimestamp"].clone(), generation, old.get("status").cloned())
            }
            None => (json!(format!("2026-01-01T00:{:02}:{:02}Z", (rv / 60) % 60, rv % 60)), 1, None),
        };
        let meta = &mut object["metadata"];
        meta["creationTimestamp"] = created;
        meta["generation"] = json!(generation);
        meta["uid"] = json!(format!("uid-{}-{}", key.1, key.2));
        if let (Some(status), None) = (status, object.get("status")) {
            object["status"] = status;
        }
        inner.objects.insert(key, object.clone());
        inner.history.push_back(Change { rv, kind, old, new: Some(object) });
        drop(inner);
        self.changes.send_replace(rv);
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut inner = self.lock();
        let Some(mut old) = inner.objects.remove(&(kind, namespace.to_owned(), name.to_owned())) else { return };
        inner.rv += 1;
        let rv = inner.rv;
        old["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.history.push_back(Change { rv, kind, old: Some(old), new: None });
        drop(inner);
        self.changes.send_replace(rv);
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&(kind, namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Forgets the change history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest_watchable = inner.rv;
    }

    /// Takes the API server down (every request 503, open watches end) or brings it back.
    pub fn set_available(&self, available: bool) {
        // Under the object lock: a watch reading history either sees the outage or
        // reads before anything that happens during it.
        let _inner = self.lock();
        self.available.send_replace(available);
    }

    /// The RBAC (verb, resource) pairs clients have used so far, e.g. ("watch", "services").
    pub fn verbs_used(&self) -> Vec<(String, String)> {
        self.lock().verbs.iter().cloned().collect()
    }

    /// How many requests were refused while the server was down.
    pub fn refused_requests(&self) -> usize {
        self.lock().refused
    }

    /// The (probe, field manager) of every status apply that reached the server.
    pub fn status_applies(&self) -> Vec<(String, String)> {
        self.lock().status_applies.clone()
    }
}

fn status_error(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                      "reason": reason, "code": code.as_u16()});
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

/// `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/status]]` and the same under `/apis/{group}/{version}`.
fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    match rest {
        [plural] => Some(Target { kind: Kind::from_plural(plural)?, namespace, name: None, status: false }),
        [plural, name] => {
            Some(Target { kind: Kind::from_plural(plural)?, namespace, name: Some(name.to_string()), status: false })
        }
        [plural, name, "status"] => {
            Some(Target { kind: Kind::from_plural(plural)?, namespace, name: Some(name.to_string()), status: true })
        }
        _ => None,
    }
}

async fn handle(
    State(server): State<FakeApiServer>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    RawQuery(_raw): RawQuery,
    body: Bytes,
) -> Response {
    if !*server.available.borrow() {
        server.lock().refused += 1;
        return status_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "the API server is down");
    }
    let Some(target) = parse_path(uri.path()) else {
        return status_error(StatusCode::NOT_FOUND, "NotFound", &format!("no route {}", uri.path()));
    };
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &target.name, watching) {
        (&Method::GET, None, true) => "watch",
        (&Method::GET, None, false) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::PATCH, _, _) => "patch",
        _ => method.as_str(),
    };
    let resource = format!("{}{}", target.plural(), if target.status { "/status" } else { "" });
    server.lock().verbs.insert((verb.to_owned(), resource));
    match (method, &target) {
        (Method::GET, Target { name: None, .. }) if watching => watch_response(server, target, query),
        (Method::GET, Target { name: None, .. }) => list(&server, &target, &query),
        (Method::GET, Target { name: Some(name), .. }) => {
            match server.get(target.kind, target.namespace.as_deref().unwrap_or("default"), name) {
                Some(object) => axum::Json(object).into_response(),
                None => status_error(StatusCode::NOT_FOUND, "NotFound", "not found"),
            }
        }
        (Method::PATCH, Target { name: Some(name), status: true, .. }) => {
            apply_status(&server, &target, name, &query, &body)
        }
        _ => status_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported here"),
    }
}

/// Equality (`k=v`, `k==v`), inequality (`k!=v`), existence (`k`) and absence (`!k`), comma-joined.
fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.is_none_or(|selector| {
        selector.split(',').filter(|s| !s.is_empty()).all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels[k.trim()].as_str() == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                labels[k.trim()].is_null()
            } else {
                !labels[term.trim()].is_null()
            }
        })
    })
}

fn in_scope(object: &Value, target: &Target, selector: Option<&String>) -> bool {
    target.namespace.as_deref().is_none_or(|ns| object["metadata"]["namespace"] == ns)
        && matches_selector(object, selector)
}

fn list(server: &FakeApiServer, target: &Target, query: &BTreeMap<String, String>) -> Response {
    let inner = server.lock();
    let items: Vec<&Value> = inner
        .objects
        .iter()
        .filter(|((kind, _, _), object)| *kind == target.kind && in_scope(object, target, query.get("labelSelector")))
        .map(|(_, object)| object)
        .collect();
    let body = json!({
        "kind": target.kind.list_kind(),
        "apiVersion": target.kind.api_version(),
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    });
    axum::Json(body).into_response()
}

fn event(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Events of `change` as this watch sees them, with selector transitions.
fn visible(change: &Change, target: &Target, selector: Option<&String>) -> Option<Bytes> {
    if change.kind != target.kind {
        return None;
    }
    let was = change.old.as_ref().filter(|o| in_scope(o, target, selector));
    let is = change.new.as_ref().filter(|o| in_scope(o, target, selector));
    match (was, is) {
        (None, Some(new)) => Some(event("ADDED", new)),
        (Some(_), Some(new)) => Some(event("MODIFIED", new)),
        (Some(old), None) => {
            let mut gone = change.new.clone().unwrap_or_else(|| old.clone());
            gone["metadata"]["resourceVersion"] = json!(change.rv.to_string());
            Some(event("DELETED", &gone))
        }
        (None, None) => None,
    }
}

fn watch_response(server: FakeApiServer, target: Target, query: BTreeMap<String, String>) -> Response {
    let from: u64 = query.get("resourceVersion").and_then(|rv| rv.parse().ok()).unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(290));
    let selector = query.get("labelSelector").cloned();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut changes = server.changes.subscribe();
        let mut available = server.available.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent = from;
        {
            let inner = server.lock();
            // rv 0 means "from now"; older than the kept history means the client must re-list.
            if from != 0 && from < inner.oldest_watchable {
                let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                    "reason": "Expired", "message": format!("too old resource version: {from} ({})", inner.oldest_watchable)});
                let _ = tx.try_send(Ok(event("ERROR", &gone)));
                return;
            }
            if from == 0 {
                sent = inner.rv;
            }
        }
        loop {
            let lines: Vec<Bytes> = {
                let inner = server.lock();
                // An outage ends the watch before anything that happened during it is delivered.
                if !*available.borrow() {
                    return;
                }
                let lines = inner
                    .history
                    .iter()
                    .filter(|c| c.rv > sent)
                    .filter_map(|c| visible(c, &target, selector.as_ref()))
                    .collect();
                sent = sent.max(inner.rv);
                lines
            };
            for line in lines {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                biased;
                () = async { let _ = available.wait_for(|up| !*up).await; } => return,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)), if bookmarks => {
                    let bookmark = json!({"kind": target.kind_name(), "apiVersion": target.kind.api_version(),
                        "metadata": {"resourceVersion": sent.to_string()}});
                    if tx.send(Ok(event("BOOKMARK", &bookmark))).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream_adapter(rx));
    ([("content-type", "application/json")], body).into_response()
}

impl Target {
    fn plural(&self) -> &'static str {
        match self.kind {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::HealthProbe => "healthprobes",
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::HealthProbe => "HealthProbe",
        }
    }
}

fn tokio_stream_adapter(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn apply_status(
    server: &FakeApiServer,
    target: &Target,
    name: &str,
    query: &BTreeMap<String, String>,
    body: &Bytes,
) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status_error(StatusCode::BAD_REQUEST, "BadRequest", "apply patch is not JSON");
    };
    let Some(manager) = query.get("fieldManager") else {
        return status_error(StatusCode::BAD_REQUEST, "BadRequest", "fieldManager is required for apply");
    };
    let namespace = target.namespace.clone().unwrap_or_else(|| "default".into());
    let key = (target.kind, namespace.clone(), name.to_owned());
    let mut inner = server.lock();
    inner.status_applies.push((format!("{namespace}/{name}"), manager.clone()));
    let Some(current) = inner.objects.get(&key).cloned() else {
        return status_error(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    if current.get("status") == patch.get("status") {
        return axum::Json(current).into_response();
    }
    let mut updated = current.clone();
    updated["status"] = patch["status"].clone();
    inner.rv += 1;
    let rv = inner.rv;
    updated["metadata"]["resourceVersion"] = json!(rv.to_string());
    inner.objects.insert(key, updated.clone());
    inner.history.push_back(Change { rv, kind: target.kind, old: Some(current), new: Some(updated.clone()) });
    drop(inner);
    server.changes.send_replace(rv);
    axum::Json(updated).into_response()
}
