//! The mesh on a test cluster's namespace: edgexds replicas (the real binary, Kubernetes
//! source) watching it, a sidecar Envoy whose xDS cluster points at every replica, and an xDS
//! bootstrap for a proxyless grpcio client. Apps come from [`crate::kube_objects::Upstream`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::binary::{Ports, Server, free_port};
use crate::cluster::Cluster;
use crate::envoy::{Envoy, sidecar_bootstrap};
use crate::traffic::grpc_bootstrap;

pub struct Mesh {
    pub replicas: Vec<Server>,
    pub envoy: Envoy,
    /// The sidecar's outbound listener, as edgexds places it.
    pub proxy: SocketAddr,
    /// An xDS bootstrap for grpcio naming every replica, the first first.
    pub grpc_bootstrap: PathBuf,
    args: Vec<String>,
    kubeconfig: String,
    _dir: tempfile::TempDir,
}

impl Mesh {
    /// `replicas` edgexds processes watching `namespace`, and a sidecar Envoy connected to them
    /// over delta ADS.
    pub async fn start(cluster: &Cluster, namespace: &str, replicas: usize) -> Result<Self> {
        Self::start_with(cluster, namespace, replicas, "DELTA_GRPC").await
    }

    /// The same, the sidecar speaking `api_type` (`DELTA_GRPC`, or `GRPC` for state of the world).
    pub async fn start_with(cluster: &Cluster, namespace: &str, replicas: usize, api_type: &str) -> Result<Self> {
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let args = serve_args(namespace, proxy);
        let kubeconfig = cluster.kube.admin_kubeconfig.display().to_string();
        let mut started = Vec::new();
        for _ in 0..replicas {
            started.push(launch(Ports::free(), &args, &kubeconfig).await);
        }
        let xds: Vec<SocketAddr> = started.iter().map(|s| s.xds).collect();
        let mut bootstrap = sidecar_bootstrap(xds[0], api_type);
        bootstrap["node"]["id"] = json!(format!("sidecar-{namespace}"));
        let endpoints: Vec<_> = xds
            .iter()
            .map(|addr| json!({"endpoint": {"address": {"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}}}}))
            .collect();
        bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"] =
            json!(endpoints);
        let envoy = Envoy::start_with(bootstrap).await?;
        let dir = tempfile::tempdir()?;
        let grpc_bootstrap = grpc_bootstrap(dir.path(), &xds, &format!("proxyless-{namespace}"), "zone-a")?;
        Ok(Self { replicas: started, envoy, proxy, grpc_bootstrap, args, kubeconfig, _dir: dir })
    }

    /// Replaces replica `index` as a rolling update of edgexds does: SIGTERM, then a new
    /// process of the same binary on the same ports, once the old one has exited.
    pub async fn replace(&mut self, index: usize) {
        let mut old = self.replicas.remove(index);
        let ports = old.ports();
        tokio::task::spawn_blocking(move || old.terminate()).await.expect("stopping a replica");
        let new = launch(ports, &self.args, &self.kubeconfig).await;
        self.replicas.insert(index, new);
    }
}

/// A sidecar Envoy at a place (bootstrap `node.locality.zone`, and node metadata `node_name`
/// as the injector sets it), with an edgexds replica of its own watching `namespace`, so that
/// several sidecars on one machine each get their own outbound listener.
pub struct PlacedSidecar {
    pub replica: Server,
    pub envoy: Envoy,
    pub proxy: SocketAddr,
}

impl PlacedSidecar {
    pub async fn start(cluster: &Cluster, namespace: &str, zone: &str, node_name: Option<&str>) -> Result<Self> {
        let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let replica =
            launch(Ports::free(), &serve_args(namespace, proxy), &cluster.kube.admin_kubeconfig.display().to_string())
                .await;
        let mut bootstrap = sidecar_bootstrap(replica.xds, "DELTA_GRPC");
        bootstrap["node"]["id"] = json!(format!("sidecar-{zone}-{}", node_name.unwrap_or("any")));
        bootstrap["node"]["locality"] = json!({"zone": zone});
        if let Some(node_name) = node_name {
            bootstrap["node"]["metadata"]["node_name"] = json!(node_name);
        }
        let envoy = Envoy::start_with(bootstrap).await?;
        Ok(Self { replica, envoy, proxy })
    }
}

/// One edgexds replica watching `namespace`, without a sidecar: for tests that read xDS
/// themselves.
pub async fn edgexds(cluster: &Cluster, namespace: &str) -> Server {
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("an address");
    launch(Ports::free(), &serve_args(namespace, proxy), &cluster.kube.admin_kubeconfig.display().to_string()).await
}

fn serve_args(namespace: &str, outbound: SocketAddr) -> Vec<String> {
    ["--namespaces", namespace, "--outbound-listener", &outbound.to_string(), "--debounce", "50ms"]
        .map(str::to_owned)
        .to_vec()
}

async fn launch(ports: Ports, args: &[String], kubeconfig: &str) -> Server {
    let (args, kubeconfig) = (args.to_vec(), kubeconfig.to_owned());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::launch(ports, &args, &[("KUBECONFIG", &kubeconfig)], Stdio::null())
    })
    .await
    .expect("launching edgexds")
}

/// How long a test waits for the mesh to follow a change.
pub const SETTLE: Duration = Duration::from_secs(60);
