//! Starts the test suite's real kube-apiserver and etcd (see `kube_server`) for tests outside
//! Rust — the Helm chart tests — and keeps them until its stdin closes.
//!
//! Prints one JSON line once the server is ready: `{"url", "kubeconfig", "kubectl"}`.

use std::io::Read;

use edgexds_tests::kube_server::{Binaries, KubeServer};

fn main() -> anyhow::Result<()> {
    let server = KubeServer::start()?;
    let ready = serde_json::json!({
        "url": server.url,
        "kubeconfig": server.admin_kubeconfig,
        "kubectl": Binaries::get()?.kubectl,
    });
    println!("{ready}");
    // Until the test process is done with us (or gone): then the servers stop with `server`.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(server);
    Ok(())
}
