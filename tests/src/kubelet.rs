//! A test kubelet: it plays the kubelet's part for Nodes the tests create, so that Pods
//! really run, the real EndpointSlice controller writes their slices from the status this
//! kubelet writes, and zones really come from Node labels.
//!
//! - **Nodes**: created with `topology.kubernetes.io/zone`, Ready, with room for 250 pods.
//!   The node lifecycle controller does not run, so this kubelet lifts the `not-ready` taint
//!   that admission puts on a new Node itself, as that controller would.
//! - **Pods** bound to its Nodes (by the real scheduler, or by `nodeName`): each gets a
//!   network namespace on its Node's bridge ([`network`]) and its containers run there as real
//!   processes: a container's `command` (or its image) names a program the kubelet was given
//!   (`test-upstream` by default), and its `env` is resolved as the kubelet does (values and
//!   the downward API's `metadata.name`, `metadata.namespace`, `status.podIP`,
//!   `spec.nodeName`). Status is written as a kubelet writes it: phase, `podIP`/`podIPs`,
//!   `hostIP`, container states, and `ContainersReady`/`Ready` from each container's
//!   readiness probe (`httpGet` or `tcpSocket`, at its `periodSeconds` and thresholds).
//! - **Graceful deletion** in the kubelet's order ([`pod`]): the pod turns terminating
//!   (readiness is still probed), the `preStop` sleep runs, the processes get SIGTERM and
//!   may serve until the grace period ends, then are killed; the final status is written and
//!   the Pod removed.
//!
//! Everything it makes (namespaces, veths, bridges, processes) goes when it is dropped, and
//! a test process killed before that leaves it to be swept by the next one. What happened to
//! each pod is kept in a [`Timeline`] for tests to check requests against.
//!
//! It runs on a runtime of its own, so that one kubelet serves every test of a binary.

pub mod network;
pub mod pod;
pub mod timeline;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::watch;

pub use network::{Network, NodeNet};
pub use timeline::{PodEvent, Timeline};

/// A Node this kubelet runs: its name and zone.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub zone: String,
}

impl NodeSpec {
    pub fn new(name: &str, zone: &str) -> Self {
        Self { name: name.to_owned(), zone: zone.to_owned() }
    }
}

/// What a running kubelet shares with its pods' tasks.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub network: Network,
    pub programs: HashMap<String, PathBuf>,
    pub timeline: Timeline,
}

pub struct Kubelet {
    pub nodes: Vec<(NodeSpec, NodeNet)>,
    pub timeline: Timeline,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The programs a pod's container may name: `test-upstream` from this crate's binaries, and
/// `edgexds` itself (the webhook's tests run it as a pod, where the API server can call it).
pub fn default_programs() -> HashMap<String, PathBuf> {
    [
        ("test-upstream".to_owned(), crate::binary::sibling("test-upstream")),
        ("edgexds".to_owned(), crate::binary::edgexds_binary()),
    ]
    .into()
}

impl Kubelet {
    /// Creates `nodes` on the API server behind `kubeconfig` and runs their pods until dropped.
    pub fn start(kubeconfig: PathBuf, nodes: &[NodeSpec], programs: HashMap<String, PathBuf>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-kubelet")
            .enable_all()
            .build()?;
        let timeline = Timeline::default();
        let nodes_made = runtime.block_on(async {
            let client = crate::kube_server::client_from(&kubeconfig).await?;
            let shared = Arc::new(Shared { client, network: Network::claim()?, programs, timeline: timeline.clone() });
            let mut made = Vec::new();
            for spec in nodes {
                let net = shared.network.add_node().await?;
                register_node(&shared.client, spec, &net).await.with_context(|| format!("Node {}", spec.name))?;
                made.push((spec.clone(), net));
            }
            tokio::spawn(run(shared, made.clone()));
            anyhow::Ok(made)
        })?;
        Ok(Self { nodes: nodes_made, timeline, runtime: Some(runtime) })
    }

    /// The Node names of `zone`.
    pub fn nodes_in(&self, zone: &str) -> Vec<String> {
        self.nodes.iter().filter(|(spec, _)| spec.zone == zone).map(|(spec, _)| spec.name.clone()).collect()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        // Ending the runtime drops every pod's task, whose guards kill its processes; the
        // network (with its namespaces and bridges) goes with the last of them.
        // On a thread of its own: a runtime may not be shut down from an async context.
        if let Some(runtime) = self.runtime.take() {
            let _ = std::thread::spawn(move || runtime.shutdown_timeout(std::time::Duration::from_secs(5))).join();
        }
    }
}

/// Creates (or takes over) the Node, marks it Ready with room for pods, and lifts the
/// not-ready taint.
async fn register_node(client: &kube::Client, spec: &NodeSpec, net: &NodeNet) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": spec.name, "labels": {
            "kubernetes.io/hostname": spec.name,
            "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": spec.zone,
        }},
        "spec": {"podCIDR": net.cidr, "podCIDRs": [net.cidr]},
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            nodes
                .patch(
                    &spec.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"podCIDR": net.cidr, "podCIDRs": [net.cidr]}})),
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let now = chrono_now();
    let room = json!({"cpu": "32", "memory": "64Gi", "pods": "250"});
    let status = json!({"status": {
        "capacity": room, "allocatable": room,
        "addresses": [{"type": "InternalIP", "address": net.gateway.to_string()}, {"type": "Hostname", "address": spec.name}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test kubelet is posting ready status",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "nodeInfo": {"kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
                     "containerRuntimeVersion": "edgexds-test://1", "kernelVersion": "", "osImage": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    nodes.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(status)).await?;
    nodes.patch(&spec.name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": null}}))).await?;
    Ok(())
}

/// Now, as the API server writes times.
pub(crate) fn chrono_now() -> String {
    k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap_or_default().to_string()
}

/// Watches every Pod and gives each one bound to these Nodes a task of its own.
async fn run(shared: Arc<Shared>, nodes: Vec<(NodeSpec, NodeNet)>) {
    let pods_api = Api::<Pod>::all(shared.client.clone());
    let running: Arc<Mutex<HashMap<String, watch::Sender<Option<Pod>>>>> = Arc::default();
    let mut events = watcher(pods_api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let (pods, gone) = match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => (vec![pod], false),
            watcher::Event::Delete(pod) => (vec![pod], true),
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        for pod in pods {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else { continue };
            let Some((_, net)) = nodes.iter().find(|(spec, _)| spec.name == node) else { continue };
            let Some(uid) = pod.metadata.uid.clone() else { continue };
            let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
            if gone {
                if let Some(sender) = running.remove(&uid) {
                    sender.send_replace(None);
                }
                continue;
            }
            match running.get(&uid) {
                Some(sender) => {
                    sender.send_replace(Some(pod));
                }
                None => {
                    let (sender, receiver) = watch::channel(Some(pod));
                    running.insert(uid.clone(), sender);
                    tokio::spawn(pod::run(shared.clone(), net.clone(), receiver));
                }
            }
        }
    }
}
