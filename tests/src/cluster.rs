//! A cluster as it really runs, for end-to-end tests: the real kube-apiserver, etcd,
//! controllers and scheduler ([`KubeServer`]) and the test kubelet ([`Kubelet`]) running pods as
//! real processes in network namespaces, on Nodes in three zones.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::Result;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;

use crate::kube_server::KubeServer;
use crate::kubelet::{Kubelet, NodeSpec, default_programs};

pub struct Cluster {
    pub kube: KubeServer,
    pub kubelet: Kubelet,
}

/// Two Nodes in each of zones a and b, one in zone c.
pub fn default_nodes() -> Vec<NodeSpec> {
    vec![
        NodeSpec::new("node-a1", "zone-a"),
        NodeSpec::new("node-a2", "zone-a"),
        NodeSpec::new("node-b1", "zone-b"),
        NodeSpec::new("node-b2", "zone-b"),
        NodeSpec::new("node-c1", "zone-c"),
    ]
}

impl Cluster {
    /// The cluster shared by every test of this test binary, started on first use.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start(&default_nodes()).unwrap_or_else(|e| panic!("test cluster: {e:#}")))
    }

    /// A cluster of its own, with `nodes`.
    pub fn start(nodes: &[NodeSpec]) -> Result<Self> {
        let kube = KubeServer::start()?;
        let kubelet = Kubelet::start(kube.admin_kubeconfig.clone(), nodes, default_programs())?;
        Ok(Self { kube, kubelet })
    }
}

/// Waits until the EndpointSlices of Service `namespace/service`, as a watch sees them, satisfy
/// `done`; returns them. At most `limit`.
pub async fn wait_slices(
    client: &kube::Client,
    namespace: &str,
    service: &str,
    limit: std::time::Duration,
    what: &str,
    done: impl Fn(&[EndpointSlice]) -> bool,
) -> Vec<EndpointSlice> {
    let api = kube::Api::<EndpointSlice>::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    let mut events = watcher(api, config).boxed();
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut listing: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut listed = false;
    let waited = tokio::time::timeout(limit, async {
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(slice)) => {
                    listing.insert(slice.metadata.name.clone().unwrap_or_default(), slice);
                }
                Ok(watcher::Event::InitDone) => {
                    slices = std::mem::take(&mut listing);
                    listed = true;
                }
                Ok(watcher::Event::Apply(slice)) => {
                    slices.insert(slice.metadata.name.clone().unwrap_or_default(), slice);
                }
                Ok(watcher::Event::Delete(slice)) => {
                    slices.remove(&slice.metadata.name.clone().unwrap_or_default());
                }
                Err(_) => continue,
            }
            let current: Vec<EndpointSlice> = slices.values().cloned().collect();
            // Judged on a whole list only, never on one half read.
            if listed && done(&current) {
                return current;
            }
        }
        Vec::new()
    })
    .await;
    waited.unwrap_or_else(|_| panic!("timed out after {limit:?} waiting until {what}: {slices:#?}"))
}

/// The endpoints of `slices`, by address: (ready, serving, terminating).
pub fn endpoint_conditions(slices: &[EndpointSlice]) -> BTreeMap<String, (bool, bool, bool)> {
    slices
        .iter()
        .flat_map(|slice| slice.endpoints.iter())
        .flat_map(|endpoint| {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let flags = (
                conditions.ready.unwrap_or(false),
                conditions.serving.unwrap_or(false),
                conditions.terminating.unwrap_or(false),
            );
            endpoint.addresses.iter().map(move |address| (address.clone(), flags))
        })
        .collect()
}

/// Waits until Pod `namespace/name` satisfies `done` (`None`: it is gone); returns it.
pub async fn wait_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    limit: std::time::Duration,
    what: &str,
    done: impl Fn(Option<&Pod>) -> bool,
) -> Option<Pod> {
    let api = kube::Api::<Pod>::namespaced(client.clone(), namespace);
    let waited = tokio::time::timeout(
        limit,
        kube::runtime::wait::await_condition(api, name, move |pod: Option<&Pod>| done(pod)),
    )
    .await;
    match waited {
        Ok(Ok(pod)) => pod,
        Ok(Err(error)) => panic!("watching pod {namespace}/{name}: {error}"),
        Err(_) => panic!("timed out after {limit:?} waiting until {what}"),
    }
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Runs Pod `namespace/name` of app `app` (a `test-upstream` answering with its name) and
/// waits until it is ready; its address.
pub async fn run_pod(client: &kube::Client, namespace: &str, name: &str, app: &str) -> std::net::IpAddr {
    let pod = crate::kube_objects::Upstream::default().pod(namespace, name, app);
    crate::kube_server::apply(client, &pod).await.unwrap_or_else(|e| panic!("creating pod {name}: {e:#}"));
    let pod =
        wait_pod(client, namespace, name, std::time::Duration::from_secs(60), "the pod is ready", pod_ready).await;
    pod.and_then(|p| p.status?.pod_ip).and_then(|ip| ip.parse().ok()).expect("a ready pod has an address")
}
