//! edgexds-load: a fleet of Envoy-like ADS clients against any xDS server, delta or (with
//! --sotw) state of the world.
//!
//! Each client subscribes to every cluster (wildcard CDS) and to the endpoints of every
//! cluster it learns, ACKing like Envoy. The tool drives churn by rewriting one
//! EndpointSlice file at a time in a manifests directory, measures how long each change
//! takes to reach the last client, the bytes sent per change, the server's CPU and peak
//! RSS (from /proc), and a reconnect storm: every client dropped and back at once with
//! `initial_resource_versions`, counting resources that were resent needlessly.
//!
//!   edgexds-load --server target/release/edgexds --clients 1000 --services 1000 --endpoints 10
//!   edgexds-load --xds 127.0.0.1:18000 --server-pid 1234 --manifests /srv/manifests --clients 100
//!   edgexds-load --sotw ...      state-of-the-world ADS (no initial versions: a reconnect resends all)
//!   edgexds-load --storm-responses 1 ...   a storm client counts as served after one response
//!                                (for servers that stay silent when a client's versions are current)
//!   edgexds-load --csds-loop ...   during the churn, one CSDS client asks for every proxy's state
//!                                (names and versions, without contents) back to back, and its
//!                                answer times are reported beside the clients' convergence
//!   edgexds-load --prefer-same-zone ...   every Service asks for `trafficDistribution:
//!                                PreferSameZone`; clients are in zone-0, zone-1 and zone-2 (by
//!                                id) either way, so the two runs differ in the preference only,
//!                                and the report adds the pipeline's time per change and the
//!                                place variants it keeps
//!   edgexds-load --kube --server target/release/edgexds ...   a real cluster instead (see
//!                                `cluster`: the real kube-apiserver, EndpointSlice, Deployment and
//!                                ReplicaSet controllers and scheduler, built by tests/k8s/build,
//!                                and the test kubelet): each Service a Deployment of --endpoints
//!                                pods running as processes, its slices written by the controller;
//!                                the churn alternates readiness flips (the pod's readiness check
//!                                fails, the kubelet writes Ready=False) and pod replacements (a
//!                                pod deleted, the Deployment replacing it), and convergence runs
//!                                from the pod status change to the last client. Also reports the
//!                                API server's watch events per change

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edgexds_tests::cluster::Cluster as TestCluster;
use edgexds_tests::control_plane::write_atomically;
use edgexds_tests::kube_objects::{UPSTREAM_PORT, Upstream, selecting_service};
use edgexds_tests::kube_server::apply;
use edgexds_tests::kubelet::{NodeSpec, PodEvent};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams};
use prost::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use edgexds_tests::xds::{CDS, EDS};

struct Options {
    xds: Option<SocketAddr>,
    server: Option<PathBuf>,
    server_pid: Option<u32>,
    manifests: Option<PathBuf>,
    clients: usize,
    connections: usize,
    services: usize,
    endpoints: usize,
    changes: usize,
    interval: Duration,
    json: Option<PathBuf>,
    sotw: bool,
    storm_responses: usize,
    kube: bool,
    csds_loop: bool,
    prefer_same_zone: bool,
}

fn options() -> Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let num = |name: &str, default: usize| -> Result<usize> {
        get(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("{name} {v}")))
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "{}",
            include_str!("edgexds-load.rs")
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .map(|l| l.trim_start_matches("//!").trim_start())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::process::exit(0);
    }
    let clients = num("--clients", 100)?;
    if num("--endpoints", 10)? > 3800 {
        bail!("--endpoints: at most 3,800 per Service (addresses are unique in 12 bits, with room to move one)");
    }
    Ok(Options {
        xds: get("--xds").map(|v| v.parse()).transpose()?,
        server: get("--server").map(PathBuf::from),
        server_pid: get("--server-pid").map(|v| v.parse()).transpose()?,
        manifests: get("--manifests").map(PathBuf::from),
        clients,
        connections: num("--connections", clients.min(100))?.max(1),
        services: num("--services", 100)?,
        endpoints: num("--endpoints", 10)?,
        changes: num("--changes", 20)?,
        interval: Duration::from_millis(num("--interval-ms", 300)? as u64),
        json: get("--json").map(PathBuf::from),
        sotw: args.iter().any(|a| a == "--sotw"),
        storm_responses: num("--storm-responses", 2)?,
        kube: args.iter().any(|a| a == "--kube"),
        csds_loop: args.iter().any(|a| a == "--csds-loop"),
        prefer_same_zone: args.iter().any(|a| a == "--prefer-same-zone"),
    })
}

fn slice_yaml(service: usize, endpoints: usize, generation: usize) -> String {
    let mut text = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{ name: svc-{service}-1, namespace: load }}\n\
         addressType: IPv4\nports: [{{ name: http, port: 8080 }}]\nendpoints:\n"
    );
    for e in 0..endpoints {
        // The last endpoint's address moves with every generation: one change per rewrite.
        // Addresses are unique within a slice (12 bits of service, 12 of endpoint): Kubernetes
        // and edgexds merge repeated addresses, and a server that does not would send more.
        let last = if e + 1 == endpoints { generation % 200 } else { 0 };
        let host = (e + 1 + last) as u32 & 0xfff;
        let ip = Ipv4Addr::from(0x0a00_0000 | ((service as u32 & 0xfff) << 12) | host);
        text.push_str(&format!("- {{ addresses: [\"{ip}\"], conditions: {{ ready: true }}, zone: zone-{} }}\n", e % 3));
    }
    text.replace("metadata: { name: svc", "metadata: { labels: { kubernetes.io/service-name: svc-SERVICE }, name: svc")
        .replace("svc-SERVICE", &format!("svc-{service}"))
}

fn generate(dir: &Path, services: usize, endpoints: usize, prefer_same_zone: bool) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let preference = if prefer_same_zone { "trafficDistribution: PreferSameZone, " } else { "" };
    for s in 0..services {
        let service = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: svc-{s}, namespace: load }}\nspec: {{ {preference}ports: [{{ name: http, port: 80 }}] }}\n"
        );
        let probe = format!(
            "---\napiVersion: edgexds.io/v1alpha1\nkind: HealthProbe\nmetadata: {{ name: svc-{s}, namespace: load }}\n\
             spec: {{ targetRef: {{ name: svc-{s} }}, intervalMs: 5000, overrides: [{{ match: {{ zone: zone-0 }}, intervalMs: 1000 }}] }}\n"
        );
        std::fs::write(dir.join(format!("svc-{s}.yaml")), service + &probe)?;
        std::fs::write(dir.join(format!("svc-{s}-slice.yaml")), slice_yaml(s, endpoints, 0))?;
    }
    Ok(())
}

/// A real cluster running the generated Services' pods, for edgexds to watch.
struct ClusterSource {
    cluster: TestCluster,
    client: kube::Client,
    /// Pods whose readiness this run turned off, by Service.
    flipped: Mutex<BTreeMap<usize, String>>,
}

impl ClusterSource {
    /// A cluster with Nodes enough for `services` Deployments of `pods` pods, all ready.
    async fn start(services: usize, pods: usize) -> Result<Self> {
        let nodes = (services * pods).div_ceil(240).clamp(1, 16);
        let specs: Vec<NodeSpec> =
            (0..nodes).map(|n| NodeSpec::new(&format!("node-{n}"), &format!("zone-{}", n % 3))).collect();
        let cluster = tokio::task::spawn_blocking(move || TestCluster::start(&specs)).await??;
        let client = cluster.kube.admin_client().await?;
        cluster.kube.named_namespace(&client, "load").await?;
        let started = Instant::now();
        for s in 0..services {
            apply(&client, &selecting_service("load", &format!("svc-{s}"), 80, None)).await?;
            let probe = json!({"apiVersion": "edgexds.io/v1alpha1", "kind": "HealthProbe",
                "metadata": {"name": format!("svc-{s}"), "namespace": "load"},
                "spec": {"targetRef": {"name": format!("svc-{s}")}, "intervalMs": 5000,
                         "overrides": [{"match": {"zone": "zone-0"}, "intervalMs": 1000}]}});
            apply(&client, &probe).await?;
            apply(&client, &Upstream::default().deployment("load", &format!("svc-{s}"), pods as u32)).await?;
        }
        let want = services * pods;
        let slices = Api::<EndpointSlice>::namespaced(client.clone(), "load");
        loop {
            let ready = slices
                .list(&Default::default())
                .await?
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                .count();
            if ready == want {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("{ready} of {want} pods ready after 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("{want} pods of {services} Services ready through the controllers in {:?}", started.elapsed());
        Ok(Self { cluster, client, flipped: Mutex::default() })
    }

    /// One change to Service `service`: even ones flip a pod's readiness, odd ones replace a
    /// pod. Returns when the pod's status changed: the kubelet's write of Ready, or the
    /// deletion taking effect.
    async fn change(&self, change: usize, service: usize) -> Result<Instant> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), "load");
        let listed = pods.list(&ListParams::default().labels(&format!("app=svc-{service}"))).await?;
        let flipped = self.flipped.lock().unwrap_or_else(|e| e.into_inner()).get(&service).cloned();
        let running = |p: &&Pod| {
            p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
        };
        if change.is_multiple_of(2) {
            // Back to ready if this Service has a flipped pod; else one goes unready.
            let (pod, ready) = match flipped
                .as_ref()
                .and_then(|name| listed.items.iter().find(|p| p.metadata.name.as_ref() == Some(name)))
            {
                Some(pod) => (pod, true),
                None => (listed.items.iter().find(running).context("no running pod")?, false),
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
            let key = format!("load/{name}");
            let before = self.cluster.kubelet.timeline.events(&key).len();
            edgexds_tests::http::post(&format!("http://{ip}:{UPSTREAM_PORT}/admin/ready?to={ready}"), "").await?;
            let written = PodEvent::Ready(ready);
            self.cluster
                .kubelet
                .timeline
                .wait_until(Duration::from_secs(30), "the kubelet writes the readiness", |t| {
                    t.events(&key).iter().skip(before).any(|(_, e)| *e == written)
                })
                .await;
            let mut flipped = self.flipped.lock().unwrap_or_else(|e| e.into_inner());
            match ready {
                true => flipped.remove(&service),
                false => flipped.insert(service, name),
            };
            let at = self
                .cluster
                .kubelet
                .timeline
                .events(&key)
                .iter()
                .skip(before)
                .find(|(_, e)| *e == written)
                .map(|(at, _)| *at);
            Ok(at.unwrap_or_else(Instant::now))
        } else {
            let pod = listed
                .items
                .iter()
                .filter(running)
                .find(|p| p.metadata.name != flipped)
                .context("no running pod to replace")?;
            pods.delete(pod.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await?;
            Ok(Instant::now())
        }
    }

    /// Watch events the API server has sent so far: in all, and of EndpointSlices.
    fn watch_events(&self) -> Result<(f64, f64)> {
        let text = self.cluster.kube.kubectl(&["get", "--raw", "/metrics"])?;
        let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let events = text.lines().filter(|l| l.starts_with("apiserver_watch_events_total{"));
        let (mut all, mut slices) = (0.0, 0.0);
        for line in events {
            all += value(line);
            if line.contains("resource=\"endpointslices\"") || line.contains("kind=\"EndpointSlice\"") {
                slices += value(line);
            }
        }
        Ok((all, slices))
    }
}

/// What one client holds, and when it received each (name, version).
#[derive(Default)]
struct Held {
    versions: [BTreeMap<String, String>; 2],
    received: HashMap<(String, String), Instant>,
    responses: usize,
    resources: usize,
    bytes: usize,
}

impl Held {
    /// Counts one response of `type_url`; returns the index of its type in `versions`.
    fn count(&mut self, type_url: &str, resources: usize, bytes: usize) -> usize {
        self.responses += 1;
        self.resources += resources;
        self.bytes += bytes;
        usize::from(type_url == EDS)
    }
}

type Shared = Arc<Mutex<Held>>;

fn lock(held: &Shared) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run_client(
    channel: Channel,
    id: usize,
    held: Shared,
    initial: Option<[BTreeMap<String, String>; 2]>,
) -> Result<()> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let node = Some(Node {
        id: format!("load-{id}"),
        cluster: "load".into(),
        locality: Some(zone_of(id)),
        ..Default::default()
    });
    let [cds_initial, eds_initial] = initial.unwrap_or_default();
    tx.send(DeltaDiscoveryRequest {
        node,
        type_url: CDS.into(),
        initial_resource_versions: cds_initial.into_iter().collect(),
        ..Default::default()
    })
    .await?;
    let mut eds_initial = Some(eds_initial);
    let mut responses = client.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
    while let Some(response) = responses.message().await? {
        let now = Instant::now();
        let ack = DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        };
        let (subscribe, unsubscribe) = record(&held, &response, now);
        tx.send(ack).await?;
        if response.type_url == CDS && (!subscribe.is_empty() || !unsubscribe.is_empty() || eds_initial.is_some()) {
            // Like Envoy: endpoints for every new cluster; the first request carries what it already has.
            let initial = eds_initial.take().unwrap_or_default();
            let subscribe =
                if initial.is_empty() { subscribe } else { initial.keys().cloned().chain(subscribe).collect() };
            tx.send(DeltaDiscoveryRequest {
                type_url: EDS.into(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                initial_resource_versions: initial.into_iter().collect(),
                ..Default::default()
            })
            .await?;
        }
    }
    Ok(())
}

/// A state-of-the-world client, as Envoy with `api_type: GRPC`: wildcard CDS, then EDS for
/// every cluster, each request naming the whole set. Responses carry no names or per-resource
/// versions, so resources are decoded for their names and a hash of the bytes stands in for
/// a version.
async fn run_sotw_client(channel: Channel, id: usize, held: Shared) -> Result<()> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let node = Some(Node {
        id: format!("load-sotw-{id}"),
        cluster: "load".into(),
        locality: Some(zone_of(id)),
        ..Default::default()
    });
    tx.send(DiscoveryRequest { node, type_url: CDS.into(), ..Default::default() }).await?;
    let mut responses = client.stream_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
    let mut clusters: Vec<String> = Vec::new();
    let mut eds: (String, String) = Default::default();
    while let Some(response) = responses.message().await? {
        let now = Instant::now();
        let is_cds = response.type_url == CDS;
        let names = record_sotw(&held, &response, now);
        let mut ack = DiscoveryRequest {
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        };
        if is_cds {
            tx.send(ack).await?;
            if names != clusters {
                clusters = names;
                tx.send(DiscoveryRequest {
                    type_url: EDS.into(),
                    resource_names: clusters.clone(),
                    version_info: eds.0.clone(),
                    response_nonce: eds.1.clone(),
                    ..Default::default()
                })
                .await?;
            }
        } else {
            eds = (response.version_info.clone(), response.nonce.clone());
            ack.resource_names = clusters.clone();
            tx.send(ack).await?;
        }
    }
    Ok(())
}

/// Applies a state-of-the-world response; returns the names it carried, sorted.
fn record_sotw(held: &Shared, response: &DiscoveryResponse, now: Instant) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    let mut held = lock(held);
    let index = held.count(&response.type_url, response.resources.len(), response.encoded_len());
    let mut names = Vec::new();
    for any in &response.resources {
        let name = if index == 0 {
            Cluster::decode(any.value.as_slice()).map(|c| c.name)
        } else {
            ClusterLoadAssignment::decode(any.value.as_slice()).map(|c| c.cluster_name)
        };
        let Ok(name) = name else { continue };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        any.value.hash(&mut hasher);
        let version = format!("{:016x}", hasher.finish());
        held.versions[index].insert(name.clone(), version.clone());
        held.received.insert((name.clone(), version), now);
        names.push(name);
    }
    if index == 0 {
        // A cluster response is the whole set: what it leaves out is gone.
        let present: std::collections::HashSet<&String> = names.iter().collect();
        held.versions[0].retain(|name, _| present.contains(name));
    }
    names.sort();
    names
}

/// Applies a response to what the client holds; for CDS, returns clusters added and removed.
fn record(held: &Shared, response: &DeltaDiscoveryResponse, now: Instant) -> (Vec<String>, Vec<String>) {
    let mut held = lock(held);
    let index = held.count(&response.type_url, response.resources.len(), response.encoded_len());
    let mut added = Vec::new();
    for resource in &response.resources {
        if held.versions[index].insert(resource.name.clone(), resource.version.clone()).is_none() {
            added.push(resource.name.clone());
        }
        held.received.insert((resource.name.clone(), resource.version.clone()), now);
    }
    for name in &response.removed_resources {
        held.versions[index].remove(name);
    }
    if index == 0 { (added, response.removed_resources.clone()) } else { (Vec::new(), Vec::new()) }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The value of an unlabelled series in a Prometheus text exposition.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A client's zone: the fleet is spread over three, as the endpoints are.
fn zone_of(id: usize) -> envoy_types::pb::envoy::config::core::v3::Locality {
    envoy_types::pb::envoy::config::core::v3::Locality { zone: format!("zone-{}", id % 3), ..Default::default() }
}

/// The server's push-latency histogram so far: its sum in seconds and its count.
async fn push_latency_totals(admin: u16) -> Option<(f64, f64)> {
    histogram_totals(admin, "edgexds_push_latency_seconds").await
}

/// A histogram of the server's so far: its sum and its count.
async fn histogram_totals(admin: u16, name: &str) -> Option<(f64, f64)> {
    let reply = edgexds_tests::http::get(&format!("http://127.0.0.1:{admin}/metrics")).await.ok()?;
    Some((metric(&reply.body, &format!("{name}_sum"))?, metric(&reply.body, &format!("{name}_count"))?))
}

/// CPU seconds used, peak RSS and current RSS (KiB) of a process, from /proc.
fn proc_stats(pid: u32) -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok();
    Some((ticks / 100.0, field("VmHWM:")?, field("VmRSS:")?))
}

async fn connect(xds: SocketAddr, connections: usize) -> Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{xds}"))?;
    futures_util::future::try_join_all((0..connections).map(|_| endpoint.connect())).await.context("connecting")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_until<F: FnMut() -> bool>(limit: Duration, what: &str, mut done: F) -> Result<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(started.elapsed())
}

/// Asks CSDS for every proxy's state, back to back, until told to stop: each answer's time,
/// and how many were refused.
async fn csds_loop(xds: SocketAddr, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(Vec<Duration>, usize)> {
    use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    let channel = Endpoint::from_shared(format!("http://{xds}"))?.connect().await?;
    let mut csds = ClientStatusDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (mut times, mut failed) = (Vec::new(), 0);
    while !*stop.borrow_and_update() {
        let request = ClientStatusRequest { exclude_resource_contents: true, ..Default::default() };
        let started = Instant::now();
        match csds.fetch_client_status(request).await {
            Ok(_) => times.push(started.elapsed()),
            Err(_) => failed += 1,
        }
    }
    Ok((times, failed))
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = options()?;
    let generated = tempfile::tempdir()?;
    let manifests = o.manifests.clone().unwrap_or_else(|| generated.path().to_owned());
    if o.manifests.is_none() || o.server.is_some() {
        generate(&manifests, o.services, o.endpoints, o.prefer_same_zone)?;
    }
    let kube = match o.kube {
        true => Some(ClusterSource::start(o.services, o.endpoints).await?),
        false => None,
    };
    let (_server, xds, pid, admin) = match (&o.server, o.xds) {
        (Some(binary), _) => {
            let port = free_port()?;
            let admin = free_port()?;
            let debug = free_port()?;
            let mut command = Command::new(binary);
            command.arg("serve");
            match &kube {
                Some(kube) => {
                    command.env("KUBECONFIG", &kube.cluster.kube.admin_kubeconfig).args(["--namespaces", "load"])
                }
                None => command.arg("--manifests").arg(&manifests),
            };
            let child = command
                .args(["--xds-addr", &format!("127.0.0.1:{port}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
                // Its own debug port too: the default one may be another server's.
                .args(["--debug-addr", &format!("127.0.0.1:{debug}")])
                .args(["--log-level", "warn"])
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let pid = child.id();
            let server = Server(child);
            let ready = format!("http://127.0.0.1:{admin}/readyz");
            let mut ok = false;
            for _ in 0..3000 {
                if edgexds_tests::http::get(&ready).await.is_ok_and(|r| r.status == 200) {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !ok {
                bail!("server did not become ready");
            }
            // For whoever watches the run from outside (a Prometheus scraping it, say).
            eprintln!("server admin: 127.0.0.1:{admin}");
            (Some(server), SocketAddr::from(([127, 0, 0, 1], port)), Some(pid), Some(admin))
        }
        (None, Some(xds)) => (None, xds, o.server_pid, None),
        (None, None) => bail!("give --server BINARY (started here) or --xds ADDR (already running)"),
    };
    let before = pid.and_then(proc_stats);
    // This process's own CPU: its clients decode on the same cores as the server.
    let own_before = proc_stats(std::process::id());

    let channels = connect(xds, o.connections).await?;
    let helds: Vec<Shared> = (0..o.clients).map(|_| Shared::default()).collect();
    let connect_started = Instant::now();
    let mut tasks: Vec<_> = helds
        .iter()
        .enumerate()
        .map(|(i, held)| {
            let channel = channels[i % channels.len()].clone();
            if o.sotw {
                tokio::spawn(run_sotw_client(channel, i, held.clone()))
            } else {
                tokio::spawn(run_client(channel, i, held.clone(), None))
            }
        })
        .collect();
    let expected = o.services;
    let synced = |helds: &[Shared]| {
        helds.iter().all(|h| {
            let h = lock(h);
            h.versions[0].len() >= expected && h.versions[1].len() >= expected
        })
    };
    let initial_sync = wait_until(Duration::from_secs(120), "initial sync", || synced(&helds)).await?;
    let _ = connect_started;
    // The initial sync's own share: the server's CPU and its peak RSS so far.
    let at_sync = pid.and_then(proc_stats);
    let sync_cpu = before.zip(at_sync).map(|(b, s)| s.0 - b.0);
    let clients_sync_cpu = own_before.zip(proc_stats(std::process::id())).map(|(b, s)| s.0 - b.0);

    // Churn: rewrite one slice at a time; each change must reach every client.
    let mut convergence = Vec::new();
    // With --kube, by kind of change: readiness flips (even changes), replacements (odd).
    let mut by_kind: [Vec<Duration>; 2] = Default::default();
    let bytes_before: usize = helds.iter().map(|h| lock(h).bytes).sum();
    let pushes_before = match admin {
        Some(admin) => push_latency_totals(admin).await,
        None => None,
    };
    let translation_before = match admin {
        Some(admin) => histogram_totals(admin, "edgexds_translation_duration_seconds").await,
        None => None,
    };
    let csds = o.csds_loop.then(|| {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        (stop, tokio::spawn(csds_loop(xds, stopped)))
    });
    let watch_events_before = kube.as_ref().map(ClusterSource::watch_events).transpose()?;
    for change in 1..=o.changes {
        let service = (change * 7919) % o.services;
        let name = format!("svc-{service}.load:80");
        let old: Vec<Option<String>> = helds.iter().map(|h| lock(h).versions[1].get(&name).cloned()).collect();
        let started = match &kube {
            Some(kube) => kube.change(change, service).await?,
            None => {
                let started = Instant::now();
                write_atomically(
                    &manifests.join(format!("svc-{service}-slice.yaml")),
                    &slice_yaml(service, o.endpoints, change),
                );
                started
            }
        };
        let arrived =
            |helds: &[Shared]| helds.iter().zip(&old).all(|(h, old)| lock(h).versions[1].get(&name) != old.as_ref());
        wait_until(Duration::from_secs(30), "change reaching every client", || arrived(&helds)).await?;
        // The time to the *last* client, from the receipt times the clients recorded.
        let last = helds
            .iter()
            .filter_map(|h| {
                let h = lock(h);
                let version = h.versions[1].get(&name)?.clone();
                h.received.get(&(name.clone(), version)).copied()
            })
            .max()
            .unwrap_or(started);
        convergence.push(last.saturating_duration_since(started));
        by_kind[change % 2].push(last.saturating_duration_since(started));
        tokio::time::sleep(o.interval).await;
    }
    let watch_events = match (&kube, watch_events_before) {
        (Some(kube), Some((all, slices))) => {
            let (all_after, slices_after) = kube.watch_events()?;
            let per = |n: f64| n / o.changes.max(1) as f64;
            Some((per(all_after - all), per(slices_after - slices)))
        }
        _ => None,
    };
    let csds = match csds {
        Some((stop, task)) => {
            let _ = stop.send(true);
            Some(task.await??)
        }
        None => None,
    };
    let bytes_after: usize = helds.iter().map(|h| lock(h).bytes).sum();
    // The server's own share of convergence: from a change observed to the responses
    // carrying it written, averaged over the pushes of the churn.
    let server_push_ms = match (admin, pushes_before) {
        (Some(admin), Some((sum, count))) => push_latency_totals(admin)
            .await
            .filter(|(_, after)| *after > count)
            .map(|(after_sum, after_count)| (after_sum - sum) / (after_count - count) * 1000.0),
        _ => None,
    };
    // The pipeline's own time per change (resolve, translate, encode, variants), and what
    // the place variants hold.
    let pipeline = match (admin, translation_before) {
        (Some(admin), Some((sum, count))) => {
            let translated = histogram_totals(admin, "edgexds_translation_duration_seconds").await;
            let reply = edgexds_tests::http::get(&format!("http://127.0.0.1:{admin}/metrics")).await.ok();
            let gauge = |name: &str| reply.as_ref().and_then(|r| metric(&r.body, name)).unwrap_or_default();
            translated.filter(|(_, after)| *after > count).map(|(after_sum, after_count)| {
                let per_change_ms = (after_sum - sum) / (after_count - count) * 1000.0;
                (per_change_ms, gauge("edgexds_place_variants"), gauge("edgexds_localized_assignments"))
            })
        }
        _ => None,
    };
    convergence.sort();
    for kind in &mut by_kind {
        kind.sort();
    }

    // Reconnect storm: drop everyone, come back at once with what each holds.
    for task in &tasks {
        task.abort();
    }
    // The old connections go first: with them the storm would exceed the per-peer limit.
    drop(channels);
    if let Some(admin) = admin {
        let metrics = format!("http://127.0.0.1:{admin}/metrics");
        for _ in 0..500 {
            let open = edgexds_tests::http::get(&metrics)
                .await
                .ok()
                .and_then(|reply| metric(&reply.body, "edgexds_xds_connections"));
            if open == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let holdings: Vec<[BTreeMap<String, String>; 2]> = helds.iter().map(|h| lock(h).versions.clone()).collect();
    let storm_helds: Vec<Shared> = (0..o.clients).map(|_| Shared::default()).collect();
    let storm_started = Instant::now();
    let channels = connect(xds, o.connections).await?;
    tasks = storm_helds
        .iter()
        .zip(holdings)
        .enumerate()
        .map(|(i, (held, initial))| {
            let channel = channels[i % channels.len()].clone();
            let (held, sotw) = (held.clone(), o.sotw);
            // The server may still count some of the dropped connections against the per-peer
            // limit and refuse a new one for a moment: a refused client tries again, as Envoy does.
            tokio::spawn(async move {
                for _ in 0..1500 {
                    let outcome = if sotw {
                        run_sotw_client(channel.clone(), i, held.clone()).await
                    } else {
                        run_client(channel.clone(), i, held.clone(), Some(initial.clone())).await
                    };
                    if outcome.is_ok() || lock(&held).responses > 0 {
                        return outcome;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                bail!("client {i} was refused for 30 s")
            })
        })
        .collect();
    // Served: every client has its CDS and EDS answers (two responses), whatever they carry.
    let served = wait_until(Duration::from_secs(60), "reconnect storm", || {
        storm_helds.iter().all(|h| lock(h).responses >= o.storm_responses)
    })
    .await;
    if let Err(error) = served {
        let short: Vec<usize> =
            storm_helds.iter().map(|h| lock(h).responses).filter(|r| *r < o.storm_responses).collect();
        bail!("{error}: {} clients short of {} responses: {short:?}", short.len(), o.storm_responses);
    }
    // From dropping every client, through reconnecting, to the last one served.
    let storm = storm_started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resent: usize = storm_helds.iter().map(|h| lock(h).resources).sum();
    for task in &tasks {
        task.abort();
    }
    let after = pid.and_then(proc_stats);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let per_change = if o.changes > 0 { (bytes_after - bytes_before) as f64 / o.changes as f64 } else { 0.0 };
    let cpu = before.zip(after).map(|(b, a)| a.0 - b.0);
    let rss = after.map(|a| a.1);
    let rss_now = after.map(|a| a.2);
    let report = json!({
        "flavour": if o.sotw { "sotw" } else { "delta" },
        "source": if o.kube { "kubernetes" } else { "manifests" },
        "clients": o.clients, "connections": o.connections, "services": o.services,
        "endpoints_per_service": o.endpoints, "changes": o.changes,
        "initial_sync_ms": ms(initial_sync),
        "server_cpu_initial_sync_seconds": sync_cpu,
        "clients_cpu_initial_sync_seconds": clients_sync_cpu,
        "server_push_latency_mean_ms": server_push_ms,
        "server_peak_rss_at_sync_kib": at_sync.map(|s| s.1),
        "convergence_ms": {"p50": ms(percentile(&convergence, 0.5)), "p99": ms(percentile(&convergence, 0.99)), "max": ms(percentile(&convergence, 1.0))},
        "bytes_per_change": per_change,
        "reconnect_storm_ms": ms(storm),
        "resources_resent_in_storm": resent,
        "server_cpu_seconds": cpu,
        "server_peak_rss_kib": rss,
        "server_rss_after_kib": rss_now,
        "apiserver_watch_events_per_change": watch_events.map(|(all, slices)| json!({"all": all, "endpointslices": slices})),
        "convergence_by_kind_ms": o.kube.then(|| json!({
            "readiness_flip": {"p50": ms(percentile(&by_kind[0], 0.5)), "p99": ms(percentile(&by_kind[0], 0.99))},
            "replacement": {"p50": ms(percentile(&by_kind[1], 0.5)), "p99": ms(percentile(&by_kind[1], 0.99))},
        })),
    });
    println!(
        "edgexds-load: {} {} clients over {} connections, {} services x {} endpoints",
        o.clients,
        if o.sotw { "state-of-the-world" } else { "delta" },
        o.connections,
        o.services,
        o.endpoints
    );
    println!("  initial sync (all clients, CDS+EDS)   {:>10.1} ms", ms(initial_sync));
    if let (Some(cpu), Some(at_sync)) = (sync_cpu, at_sync) {
        println!("    server CPU {cpu:.2} s and peak RSS {:.1} MiB by then", at_sync.1 as f64 / 1024.0);
    }
    if let Some(cpu) = clients_sync_cpu {
        println!("    the clients' own CPU by then {cpu:.2} s (same cores)");
    }
    println!(
        "  convergence change -> last client     p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} changes)",
        ms(percentile(&convergence, 0.5)),
        ms(percentile(&convergence, 0.99)),
        ms(percentile(&convergence, 1.0)),
        o.changes
    );
    if o.kube {
        for (kind, times) in [("readiness flips", &by_kind[0]), ("pod replacements", &by_kind[1])] {
            println!(
                "    {kind:<34} p50 {:.1} ms  p99 {:.1} ms",
                ms(percentile(times, 0.5)),
                ms(percentile(times, 0.99))
            );
        }
    }
    if let Some(mean) = server_push_ms {
        println!("    server's share: change observed -> response written, mean {mean:.1} ms");
    }
    if let Some((mut times, failed)) = csds {
        times.sort();
        println!(
            "  CSDS, back to back during the churn   p50 {:.1} ms  p99 {:.1} ms  ({} answers, {failed} refused)",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            times.len()
        );
    }
    if let Some((all, slices)) = watch_events {
        println!("  API server watch events per change    {all:>10.1}  ({slices:.1} of EndpointSlices)");
    }
    println!("  bytes on the wire per change          {:>10.0}", per_change);
    if let Some((per_change_ms, variants, assignments)) = pipeline {
        println!("  pipeline per change (translation)      {per_change_ms:>8.2} ms");
        println!("  place variants {variants:.0}, load assignments of their own {assignments:.0}");
    }
    println!("  reconnect storm, all clients served   {:>10.1} ms", ms(storm));
    println!("  resources resent in the storm         {:>10}", resent);
    match (cpu, rss, rss_now) {
        (Some(cpu), Some(rss), Some(now)) => println!(
            "  server CPU {:.2} s, peak RSS {:.1} MiB, RSS at the end {:.1} MiB",
            cpu,
            rss as f64 / 1024.0,
            now as f64 / 1024.0
        ),
        _ => println!("  server CPU / RSS: unknown (give --server or --server-pid)"),
    }
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        println!("  report: {}", path.display());
    }
    // State of the world has no initial versions: a reconnect resends everything by design.
    if resent != 0 && !o.sotw {
        bail!("{resent} resources were resent in a reconnect storm where nothing had changed");
    }
    Ok(())
}
