//! Starts the test suite's cluster (see `cluster`: the real kube-apiserver, etcd, controllers
//! and scheduler, and the test kubelet running pods as real processes) for tests outside Rust
//! — the Helm chart tests — and keeps it until its stdin closes.
//!
//! Prints one JSON line once the cluster is ready: `{"url", "kubeconfig", "logs", "kubectl",
//! "upstream_pod_spec"}`: `logs` is the directory of the API server's and controllers' logs;
//! the last is a pod spec whose container the kubelet runs as an
//! upstream answering with the pod's name on port 8080.

use std::io::Read;

use edgexds_tests::cluster::{Cluster, default_nodes};
use edgexds_tests::kube_objects::Upstream;
use edgexds_tests::kube_server::Binaries;

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::start(&default_nodes())?;
    let ready = serde_json::json!({
        "url": cluster.kube.url,
        "kubeconfig": cluster.kube.admin_kubeconfig,
        "logs": cluster.kube.dir,
        "kubectl": Binaries::get()?.kubectl,
        "upstream_pod_spec": Upstream::default().pod_spec(),
    });
    println!("{ready}");
    // Until the test process is done with us (or gone): then everything stops with `cluster`.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(cluster);
    Ok(())
}
