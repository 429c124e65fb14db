//! Steady traffic while a cluster changes, and what it saw: every request's times and the pod
//! that answered, or why it failed. Through a sidecar Envoy ([`HttpLoad`]) or through
//! grpcio's own xDS resolver in a Python process ([`GrpcLoad`]); [`Report`] sums them up and
//! checks them against the test kubelet's [`Timeline`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::kubelet::Timeline;

/// One request: when it was sent and answered, and the pod that answered or the failure.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sent: Instant,
    pub done: Instant,
    pub pod: Result<String, String>,
}

/// HTTP requests through a proxy (a sidecar's outbound listener) at a steady rate.
pub struct HttpLoad {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl HttpLoad {
    /// `per_second` requests for `url` through `proxy`, each on its own schedule slot.
    pub fn start(proxy: SocketAddr, url: &str, per_second: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, running) = (url.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let (tx, mut rx) = mpsc::channel(1024);
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !running.load(Ordering::Relaxed) {
                ticks.tick().await;
                let (tx, url) = (tx.clone(), url.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let pod = match crate::http::through_proxy(proxy, &url).await {
                        Some((200, body)) => Ok(body),
                        Some((status, body)) => Err(format!("{status}: {body}")),
                        None => Err("no answer".to_owned()),
                    };
                    let _ = tx.send(Sample { sent, done: Instant::now(), pod }).await;
                });
            }
            drop(tx);
            let mut samples = Vec::new();
            while let Some(sample) = rx.recv().await {
                samples.push(sample);
            }
            samples
        });
        Self { stop, task }
    }

    /// Stops sending; every request's sample once the last is answered.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the load task")
    }
}

/// The Python interpreter of the tests' virtualenv (where `tests/run` installs grpcio).
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEXDS_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(venv.exists(), "no {}: run `tests/run` (it installs grpcio there) or set EDGEXDS_PYTHON", venv.display());
    venv
}

/// An xDS bootstrap for grpcio, written into `dir`: `servers` in order (gRPC uses the first,
/// and the next ones as fallbacks), and the node `node_id` in `zone`.
pub fn grpc_bootstrap(dir: &Path, servers: &[SocketAddr], node_id: &str, zone: &str) -> Result<PathBuf> {
    let servers: Vec<serde_json::Value> = servers
        .iter()
        .map(|server| {
            serde_json::json!({"server_uri": server.to_string(), "channel_creds": [{"type": "insecure"}],
                               "server_features": ["xds_v3"]})
        })
        .collect();
    let bootstrap = serde_json::json!({
        "xds_servers": servers,
        "node": {"id": node_id, "cluster": "proxyless", "locality": {"zone": zone}},
    });
    let path = dir.join(format!("{node_id}-bootstrap.json"));
    std::fs::write(&path, bootstrap.to_string())?;
    Ok(path)
}

/// gRPC calls through grpcio's xDS resolver (`tests/py/xds_load.py`) at a steady rate.
pub struct GrpcLoad {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// The same moment on both clocks: the script's wall-clock times become `Instant`s.
    epoch: (Instant, SystemTime),
    /// Calls read so far.
    samples: Vec<Sample>,
}

impl GrpcLoad {
    /// Starts calling `target` (`xds:///name:port`) with the xDS bootstrap `bootstrap`, once
    /// the channel is ready.
    pub async fn start(bootstrap: &Path, target: &str, per_second: u32) -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/xds_load.py");
        let mut child = tokio::process::Command::new(python())
            .arg(script)
            .arg(target)
            .arg(per_second.to_string())
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .stdin(std::process::Stdio::piped())
            .env("GRPC_VERBOSITY", "ERROR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the grpcio client")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await;
        if !matches!(first, Ok(Ok(Some(ref line))) if line == "ready") {
            bail!("the grpcio client did not get ready ({first:?}); its stderr is above");
        }
        Ok(Self { child, lines, epoch: (Instant::now(), SystemTime::now()), samples: Vec::new() })
    }

    /// Reads calls as they complete until one satisfies `done`, within `limit`.
    pub async fn until(&mut self, limit: Duration, what: &str, done: impl Fn(&Sample) -> bool) -> Result<()> {
        let waited = tokio::time::timeout(limit, async {
            while let Some(sample) = self.next().await? {
                let matched = done(&sample);
                self.samples.push(sample);
                if matched {
                    return Ok(());
                }
            }
            bail!("the grpcio client ended before {what}")
        })
        .await;
        waited.with_context(|| format!("not within {limit:?}: {what}"))?
    }

    /// Stops calling; every call's sample, in the order they completed.
    pub async fn stop(mut self) -> Result<Vec<Sample>> {
        drop(self.child.stdin.take());
        while let Some(sample) = self.next().await? {
            self.samples.push(sample);
        }
        self.child.wait().await?;
        Ok(self.samples)
    }

    /// The next completed call, `None` once the client has ended.
    async fn next(&mut self) -> Result<Option<Sample>> {
        let Some(line) = self.lines.next_line().await? else { return Ok(None) };
        let call: serde_json::Value = serde_json::from_str(&line).with_context(|| line.clone())?;
        let at = |field: &str| -> Instant {
            let wall = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(call[field].as_f64().unwrap_or_default());
            match wall.duration_since(self.epoch.1) {
                Ok(after) => self.epoch.0 + after,
                Err(before) => self.epoch.0.checked_sub(before.duration()).unwrap_or(self.epoch.0),
            }
        };
        let pod = match call["pod"].as_str() {
            Some(pod) => Ok(pod.to_owned()),
            None => Err(call["error"].as_str().unwrap_or("unknown").to_owned()),
        };
        Ok(Some(Sample { sent: at("sent"), done: at("done"), pod }))
    }
}

/// What a load saw: requests sent, the failures, and the answers per pod.
#[derive(Debug)]
pub struct Report {
    pub sent: usize,
    pub failed: Vec<Sample>,
    pub per_pod: BTreeMap<String, usize>,
}

impl Report {
    pub fn of(samples: &[Sample]) -> Self {
        let mut per_pod = BTreeMap::new();
        let mut failed = Vec::new();
        for sample in samples {
            match &sample.pod {
                Ok(pod) => *per_pod.entry(pod.clone()).or_insert(0) += 1,
                Err(_) => failed.push(sample.clone()),
            }
        }
        Self { sent: samples.len(), failed, per_pod }
    }

    /// One line for the test's output: sent, failed, and per pod.
    pub fn summary(&self, label: &str) -> String {
        let pods: Vec<String> = self.per_pod.iter().map(|(pod, n)| format!("{pod}={n}")).collect();
        format!("{label}: {} sent, {} failed; per pod: {}", self.sent, self.failed.len(), pods.join(" "))
    }
}

/// The samples that landed on a pod the kubelet had not written Ready, or had seen exit, at
/// any moment while they were in flight.
pub fn landed_on_unready(samples: &[Sample], timeline: &Timeline, namespace: &str) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| match &s.pod {
            Ok(pod) => {
                let key = format!("{namespace}/{pod}");
                !timeline.ready_at(&key, s.sent) && !timeline.ready_at(&key, s.done)
            }
            Err(_) => false,
        })
        .cloned()
        .collect()
}

/// Watches a sidecar's view of one cluster while traffic runs: for each address, when it was
/// first and last seen `DRAINING` (polled every 100 ms).
pub struct DrainWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<BTreeMap<String, (Instant, Instant)>>,
}

impl DrainWatch {
    pub fn start(envoy_admin: &str, cluster: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (admin, cluster, stopping) = (envoy_admin.to_owned(), cluster.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let mut draining: BTreeMap<String, (Instant, Instant)> = BTreeMap::new();
            while !stopping.load(Ordering::Relaxed) {
                if let Ok(states) = crate::envoy::endpoint_states(&admin, &cluster).await {
                    let now = Instant::now();
                    for (address, _) in states.iter().filter(|(_, health)| *health == "DRAINING") {
                        draining.entry(address.clone()).or_insert((now, now)).1 = now;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            draining
        });
        Self { stop, task }
    }

    /// Per address: first and last seen DRAINING.
    pub async fn stop(self) -> BTreeMap<String, (Instant, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the drain watch")
    }
}
