//! The Kubernetes source: watches Services, EndpointSlices and HealthProbes (and Nodes,
//! for the zones of clients) and publishes what they hold once every initial list has
//! completed.
//!
//! Objects are converted to the model as they arrive and the API objects are
//! dropped at once: only the compact model stays in memory. Watch errors (the
//! API server is away, a 410 Gone) are retried with backoff by kube-rs while
//! the last published state keeps being served.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node as KubeNode, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice as KubeEndpointSlice;
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::store::{Change, Held, Item, KubeStore};
use crate::kubernetes::convert::{self, SERVICE_NAME_LABEL};
use crate::kubernetes::crd::HealthProbe as KubeHealthProbe;
use crate::kubernetes::gateway;
use crate::kubernetes::metrics::KubeMetrics;
use crate::kubernetes::route_conditions::HeldRouteStatus;
use crate::kubernetes::route_status_writer::RouteStatuses;
use crate::kubernetes::status_writer::ProbeStatuses;
use crate::model::ObjectKey;
use crate::model::{self, FieldError, ObjectKind, RouteKind, SourceObject};
use crate::pipeline::{KindLabel, SourceMetrics, StateSender};
use crate::shutdown::{self, Shutdown};

#[derive(Clone)]
pub struct KubernetesConfig {
    pub client: Client,
    /// Empty: all namespaces. Otherwise one watch per namespace, so a namespaced Role suffices.
    pub namespaces: Vec<String>,
    /// A label selector limiting which Services are served.
    pub service_selector: Option<String>,
}

type Tagged = (usize, Result<Change, watcher::Error>);

struct Scope {
    kind: ObjectKind,
    namespace: Option<String>,
}

impl Scope {
    fn describe(&self) -> String {
        format!("{:?} in {}", self.kind, self.namespace.as_deref().unwrap_or("all namespaces"))
    }
}

fn api<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &Client,
    namespace: Option<&str>,
) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn key_of<K: ResourceExt>(object: &K) -> ObjectKey {
    ObjectKey::new(object.namespace().unwrap_or_default(), object.name_any())
}

/// Turns a watch event into a store change, logging objects that cannot be converted.
fn change<K: ResourceExt>(
    event: Event<K>,
    kind: ObjectKind,
    convert: fn(&K) -> Result<Item, FieldError>,
) -> Option<Change> {
    let converted = |object: &K| {
        convert(object).inspect_err(|e| warn!(object = %key_of(object), kind = ?kind, "ignored: {e}")).ok()
    };
    Some(match event {
        Event::Init => Change::Init,
        Event::InitDone => Change::InitDone,
        Event::InitApply(object) => Change::InitApply(converted(&object)?),
        // An object that no longer converts is treated as gone rather than kept stale.
        Event::Apply(object) => converted(&object).map_or_else(|| Change::Delete(key_of(&object)), Change::Apply),
        Event::Delete(object) => Change::Delete(key_of(&object)),
    })
}

fn tagged<K>(
    index: usize,
    kind: ObjectKind,
    api: Api<K>,
    config: watcher::Config,
    convert: fn(&K) -> Result<Item, FieldError>,
) -> BoxStream<'static, Tagged>
where
    K: Resource + ResourceExt + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, config)
        .backoff(edge_backoff())
        .map_ok(move |event| change(event, kind, convert))
        .filter_map(move |result| async move {
            match result {
                Ok(Some(change)) => Some((index, Ok(change))),
                Ok(None) => None,
                Err(e) => Some((index, Err(e))),
            }
        })
        .boxed()
}

/// Retry a failed watch after 250 ms, doubling up to 5 s, and start over after 30 s of health.
/// kube-rs defaults to 0.8 s -> 30 s reset after 120 s; on a small cluster a few watches are
/// cheap to retry, and converging within seconds of the API server's return matters more.
fn edge_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(30))
}

/// Where the statuses the API server holds go, for the status writers.
pub struct HeldSenders {
    pub probes: watch::Sender<ProbeStatuses>,
    pub routes: watch::Sender<RouteStatuses>,
}

/// Keeps the statuses the API server holds for the status writers. Entries of objects deleted
/// during an outage may linger until the next list; the writers look up each in the state.
fn track_status(held: &HeldSenders, kind: ObjectKind, change: &Change) {
    match change {
        Change::Apply(item) | Change::InitApply(item) => match (&item.object, &item.held) {
            (SourceObject::HealthProbe(probe), Some(Held::Probe(status))) => {
                hold(&held.probes, &probe.key, Some(status))
            }
            (SourceObject::HealthProbe(probe), _) => hold(&held.probes, &probe.key, None),
            (SourceObject::Route(route), Some(Held::Route(status))) => hold(&held.routes, &route.id(), Some(status)),
            _ => {}
        },
        Change::Delete(key) if kind == ObjectKind::HealthProbe => hold(&held.probes, key, None),
        Change::Delete(key) => {
            if let Some(route) = kind.route() {
                hold(&held.routes, &(route, key.clone()), None);
            }
        }
        _ => {}
    }
}

/// Sets (or with `None`, removes) `key`'s held status, telling the writer only of a change.
fn hold<K: Ord + Clone, V: PartialEq>(
    sender: &watch::Sender<Arc<BTreeMap<K, Arc<V>>>>,
    key: &K,
    value: Option<&Arc<V>>,
) {
    sender.send_if_modified(|all| {
        if all.get(key) == value {
            return false;
        }
        let all = Arc::make_mut(all);
        match value {
            Some(value) => all.insert(key.clone(), value.clone()),
            None => all.remove(key),
        };
        true
    });
}

fn service(object: &KubeService) -> Result<Item, FieldError> {
    convert::service(object, "").map(|s| Item { object: SourceObject::Service(s.into()), held: None })
}

fn slice(object: &KubeEndpointSlice) -> Result<Item, FieldError> {
    convert::slice(object, "").map(|s| Item { object: SourceObject::EndpointSlice(s.into()), held: None })
}

fn node(object: &PartialObjectMeta<KubeNode>) -> Result<Item, FieldError> {
    convert::node(&object.metadata).map(|n| Item { object: SourceObject::Node(n.into()), held: None })
}

fn http_route(object: &DynamicObject) -> Result<Item, FieldError> {
    let route: gateway::HttpRoute = from_dynamic(object, "HTTPRoute")?;
    let converted = gateway::http_route(&route, "");
    routed(
        object,
        converted.or_else(|why| gateway::refused(RouteKind::Http, &route.metadata, &route.spec.parent_refs, why)),
    )
}

fn grpc_route(object: &DynamicObject) -> Result<Item, FieldError> {
    let route: gateway::GrpcRoute = from_dynamic(object, "GRPCRoute")?;
    let converted = gateway::grpc_route(&route, "");
    routed(
        object,
        converted.or_else(|why| gateway::refused(RouteKind::Grpc, &route.metadata, &route.spec.parent_refs, why)),
    )
}

/// A route as the watch keeps it: a refused one too (its status says why), with the status
/// the API server holds.
fn routed(object: &DynamicObject, route: Result<model::HttpRoute, FieldError>) -> Result<Item, FieldError> {
    let route = route?;
    if let Some(why) = &route.refused {
        warn!(route = %route.key, kind = ?route.kind, "not served: {why}");
    }
    let parents = object.data.pointer("/status/parents").and_then(serde_json::Value::as_array).cloned();
    let held = HeldRouteStatus {
        resource_version: object.metadata.resource_version.clone(),
        generation: object.metadata.generation,
        parents: parents.unwrap_or_default(),
    };
    Ok(Item { object: SourceObject::Route(route.into()), held: Some(Held::Route(Arc::new(held))) })
}

fn from_dynamic<T: DeserializeOwned>(object: &DynamicObject, kind: &str) -> Result<T, FieldError> {
    let unreadable = |e: serde_json::Error| FieldError::new("spec", format!("not a {kind}: {e}"));
    serde_json::to_value(object).and_then(serde_json::from_value).map_err(unreadable)
}

/// The Gateway API route kinds the cluster serves at `v1`: without their CRDs there is no
/// route to watch (installing them later takes a restart of edgexds).
async fn served_route_kinds(client: &Client) -> Vec<ObjectKind> {
    match kube::discovery::group(client, gateway::GROUP).await {
        Ok(group) => {
            let served = group.versioned_resources("v1");
            let has = |kind: &str| served.iter().any(|(resource, _)| resource.kind == kind);
            [ObjectKind::HttpRoute, ObjectKind::GrpcRoute].into_iter().filter(|kind| has(kind.name())).collect()
        }
        Err(error) => {
            info!(%error, "no Gateway API in this cluster: routes are not watched");
            Vec::new()
        }
    }
}

fn probe(object: &DynamicObject) -> Result<Item, FieldError> {
    convert::probe_from_dynamic(object, "").map(|(p, status)| Item {
        object: SourceObject::HealthProbe(p.into()),
        held: status.map(|s| Held::Probe(Arc::new(s))),
    })
}

/// Every watch asks for bookmarks (kube-rs's default, kept on purpose): a quiet kind's
/// watch then resumes from a recent resourceVersion, not from its last change, after its
/// timeout or a reconnect, instead of being told `410 Gone` and re-listing.
fn watch_config(kind: ObjectKind, service_selector: Option<&str>) -> watcher::Config {
    match (kind, service_selector) {
        (ObjectKind::Service, Some(selector)) => watcher::Config::default().labels(selector),
        // Only slices that belong to a Service.
        (ObjectKind::EndpointSlice, _) => watcher::Config::default().labels(SERVICE_NAME_LABEL),
        _ => watcher::Config::default(),
    }
}

fn streams(config: &KubernetesConfig, routes: &[ObjectKind]) -> (Vec<Scope>, SelectAll<BoxStream<'static, Tagged>>) {
    let namespaces: Vec<Option<String>> =
        if config.namespaces.is_empty() { vec![None] } else { config.namespaces.iter().cloned().map(Some).collect() };
    let probe_resource = ApiResource::erase::<KubeHealthProbe>(&());
    let mut scopes = Vec::new();
    let mut all = SelectAll::new();
    for namespace in namespaces {
        let ns = namespace.as_deref();
        let selector = config.service_selector.as_deref();
        let [services, slices, probes] = [ObjectKind::Service, ObjectKind::EndpointSlice, ObjectKind::HealthProbe]
            .map(|k| watch_config(k, selector));
        let probes_api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(config.client.clone(), ns, &probe_resource),
            None => Api::all_with(config.client.clone(), &probe_resource),
        };
        let index = scopes.len();
        all.push(tagged(index, ObjectKind::Service, api(&config.client, ns), services, service));
        all.push(tagged(index + 1, ObjectKind::EndpointSlice, api(&config.client, ns), slices, slice));
        all.push(tagged(index + 2, ObjectKind::HealthProbe, probes_api, probes, probe));
        for kind in [ObjectKind::Service, ObjectKind::EndpointSlice, ObjectKind::HealthProbe] {
            scopes.push(Scope { kind, namespace: namespace.clone() });
        }
        for &kind in routes {
            let convert: fn(&DynamicObject) -> Result<Item, FieldError> =
                if kind == ObjectKind::GrpcRoute { grpc_route } else { http_route };
            let gvk = kube::api::GroupVersionKind::gvk(gateway::GROUP, "v1", kind.name());
            let resource = ApiResource::from_gvk(&gvk);
            let routes_api: Api<DynamicObject> = match ns {
                Some(ns) => Api::namespaced_with(config.client.clone(), ns, &resource),
                None => Api::all_with(config.client.clone(), &resource),
            };
            all.push(tagged(scopes.len(), kind, routes_api, watcher::Config::default(), convert));
            scopes.push(Scope { kind, namespace: namespace.clone() });
        }
    }
    // Nodes are cluster-wide, whichever namespaces are watched: their zones place clients.
    // By their metadata alone: a Node's status (images, conditions) is large and changes
    // every few seconds, and only its zone label matters here.
    let nodes = Api::<PartialObjectMeta<KubeNode>>::all(config.client.clone());
    all.push(tagged(scopes.len(), ObjectKind::Node, nodes, watcher::Config::default(), node));
    scopes.push(Scope { kind: ObjectKind::Node, namespace: None });
    (scopes, all)
}

/// Watches until `shutdown`; publishes only after every initial list completed.
pub async fn run(
    config: KubernetesConfig,
    states: StateSender,
    held: HeldSenders,
    metrics: SourceMetrics,
    kube_metrics: KubeMetrics,
    mut shutdown: Shutdown,
) -> crate::Result<()> {
    let routes = served_route_kinds(&config.client).await;
    let (scopes, mut events) = streams(&config, &routes);
    let kinds: Vec<ObjectKind> = scopes.iter().map(|s| s.kind).collect();
    let mut store = KubeStore::new(&kinds);
    let mut failing = vec![false; scopes.len()];
    loop {
        let (index, event) = tokio::select! {
            Some(next) = events.next() => next,
            () = shutdown::requested(&mut shutdown) => return Ok(()),
        };
        let kind = scopes[index].kind.label();
        match event {
            Ok(change) => {
                match change {
                    Change::Init => {
                        kube_metrics.lists.get_or_create(&KindLabel { kind }).inc();
                    }
                    Change::InitDone => {}
                    _ => metrics.event(kind),
                }
                track_status(&held, scopes[index].kind, &change);
                if std::mem::take(&mut failing[index]) {
                    kube_metrics.watches_failing.dec();
                    info!(watch = %scopes[index].describe(), "watch recovered");
                }
                let was_synced = store.synced();
                if store.apply(index, change) && store.synced() {
                    if !was_synced {
                        let state = store.state();
                        info!(
                            services = state.services.len(),
                            slices = state.slices.len(),
                            probes = state.probes.len(),
                            nodes = state.nodes.len(),
                            routes = state.routes.len(),
                            "initial lists complete"
                        );
                    }
                    states.send_replace(Some(store.state()));
                }
            }
            Err(error) if !failing[index] => {
                kube_metrics.failure(kind, &error);
                kube_metrics.watches_failing.inc();
                failing[index] = true;
                warn!(watch = %scopes[index].describe(), %error, "watch failed; retrying with backoff, last state still served");
            }
            Err(error) => {
                kube_metrics.failure(kind, &error);
                debug!(watch = %scopes[index].describe(), %error, "watch still failing");
            }
        }
        metrics.synced(store.synced() && !failing.contains(&true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watch_asks_for_bookmarks_and_slices_need_a_service() {
        for kind in [ObjectKind::Service, ObjectKind::EndpointSlice, ObjectKind::HealthProbe] {
            assert!(watch_config(kind, Some("expose=true")).bookmarks, "{kind:?}");
        }
        assert_eq!(watch_config(ObjectKind::EndpointSlice, None).label_selector.as_deref(), Some(SERVICE_NAME_LABEL));
        assert_eq!(watch_config(ObjectKind::Service, Some("a=b")).label_selector.as_deref(), Some("a=b"));
        assert_eq!(watch_config(ObjectKind::HealthProbe, Some("a=b")).label_selector, None);
    }
}
