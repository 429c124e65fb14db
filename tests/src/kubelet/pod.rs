//! One pod's life on the test kubelet: its network namespace, its containers as processes,
//! their readiness probes and the status they make, and graceful deletion in the kubelet's
//! order (terminating, preStop, SIGTERM, the grace period, kill, final status, removal).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::process::ChildStdin;
use tokio::sync::{oneshot, watch};

use super::network::{NodeNet, PodNet};
use super::timeline::PodEvent;
use super::{Shared, chrono_now};

/// How often a probe-less wait looks again at the clock, and a restarted container's backoff.
const TICK: Duration = Duration::from_millis(100);

/// A container's process: killed (by its supervisor) when `stdin` closes.
struct Process {
    pid: u32,
    stdin: Option<ChildStdin>,
    exited: oneshot::Receiver<i32>,
}

impl Process {
    fn terminate(&self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).output();
    }
}

/// A container, its process, and what its readiness probe has seen.
struct Running {
    spec: Container,
    process: Option<Process>,
    exit_code: Option<i32>,
    restarts: u32,
    started_at: String,
    ready: bool,
    successes: i32,
    failures: i32,
    next_probe: Instant,
}

/// What a status write says, less its times: a write that would say the same is skipped.
#[derive(Clone, PartialEq)]
struct Written {
    phase: &'static str,
    ready: bool,
    /// Per container: ready, running, restarts.
    containers: Vec<(bool, bool, u32)>,
}

/// The pod as this kubelet runs it.
struct PodRun {
    shared: Arc<Shared>,
    api: Api<Pod>,
    key: String,
    name: String,
    namespace: String,
    uid: String,
    node: String,
    gateway: String,
    net: PodNet,
    containers: Vec<Running>,
    started_at: String,
    /// What was last written, and when each condition last changed.
    written: Option<Written>,
    transitions: BTreeMap<&'static str, (bool, String)>,
    logs: PathBuf,
}

/// Runs the pod `updates` holds (`None` once it is gone) on `node` until it is removed.
pub(crate) async fn run(shared: Arc<Shared>, node: NodeNet, mut updates: watch::Receiver<Option<Pod>>) {
    let Some(pod) = updates.borrow_and_update().clone() else { return };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let net = match shared.network.add_pod(&node).await {
        Ok(net) => net,
        Err(error) => {
            eprintln!("test kubelet: no network for pod {key}: {error:#}");
            return;
        }
    };
    let logs = std::env::temp_dir().join(format!("edgexds-kubelet-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&logs);
    let mut run = PodRun {
        api: Api::namespaced(shared.client.clone(), &namespace),
        shared: shared.clone(),
        key: key.clone(),
        name,
        namespace,
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        gateway: node.gateway.to_string(),
        net,
        containers: Vec::new(),
        started_at: chrono_now(),
        written: None,
        transitions: BTreeMap::new(),
        logs,
    };
    if let Err(error) = run.live(&pod, &mut updates).await {
        eprintln!("test kubelet: pod {key}: {error:#}");
    }
    run.stop_all();
    shared.network.remove_pod(&run.net).await;
    shared.timeline.record(&key, PodEvent::Removed);
}

impl PodRun {
    /// Starts the containers, keeps their status, and on deletion terminates in order.
    async fn live(&mut self, pod: &Pod, updates: &mut watch::Receiver<Option<Pod>>) -> Result<()> {
        let spec = pod.spec.clone().context("a pod without a spec")?;
        for container in spec.containers {
            let mut running = Running {
                spec: container,
                process: None,
                exit_code: None,
                restarts: 0,
                started_at: chrono_now(),
                ready: false,
                successes: 0,
                failures: 0,
                next_probe: Instant::now(),
            };
            running.next_probe = Instant::now() + probe_delay(running.spec.readiness_probe.as_ref());
            self.containers.push(running);
        }
        for index in 0..self.containers.len() {
            self.start(index, pod)?;
        }
        self.shared.timeline.record(&self.key, PodEvent::Started(self.net.ip));
        self.write_status(false).await;

        let mut latest = pod.clone();
        // Running, until the pod is deleted.
        loop {
            if latest.metadata.deletion_timestamp.is_some() {
                break;
            }
            tokio::select! {
                changed = updates.changed() => {
                    let current = updates.borrow_and_update().clone();
                    match current {
                        None => return Ok(()),
                        Some(pod) if changed.is_ok() => latest = pod,
                        Some(_) => return Ok(()),
                    }
                }
                () = tokio::time::sleep(TICK) => {
                    self.reap_and_restart(&latest);
                    self.probe().await;
                    self.write_status(false).await;
                }
            }
        }
        self.terminate(&latest, updates).await
    }

    /// Graceful deletion: preStop sleeps, SIGTERM, the rest of the grace period, kill; the
    /// final status; removal. Readiness is probed until the processes are gone.
    async fn terminate(&mut self, pod: &Pod, updates: &mut watch::Receiver<Option<Pod>>) -> Result<()> {
        self.shared.timeline.record(&self.key, PodEvent::Terminating);
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        let deadline = Instant::now() + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let pre_stop = self
            .containers
            .iter()
            .filter_map(|c| c.spec.lifecycle.as_ref()?.pre_stop.as_ref()?.sleep.as_ref().map(|s| s.seconds))
            .max()
            .unwrap_or(0);
        let signal_at = (Instant::now() + Duration::from_secs(u64::try_from(pre_stop).unwrap_or(0))).min(deadline);
        let mut signalled = false;
        loop {
            if !signalled && Instant::now() >= signal_at {
                for container in &self.containers {
                    if let Some(process) = &container.process {
                        process.terminate();
                    }
                }
                signalled = true;
                self.shared.timeline.record(&self.key, PodEvent::SigTerm);
            }
            self.reap();
            if signalled && self.containers.iter().all(|c| c.process.is_none()) {
                break;
            }
            if Instant::now() >= deadline {
                self.stop_all();
                break;
            }
            tokio::select! {
                changed = updates.changed() => {
                    // Removed by force: nothing more to write.
                    if changed.is_err() || updates.borrow_and_update().is_none() {
                        self.stop_all();
                        self.shared.timeline.record(&self.key, PodEvent::Exited);
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(TICK) => {
                    self.probe().await;
                    self.write_status(false).await;
                }
            }
        }
        self.shared.timeline.record(&self.key, PodEvent::Exited);
        for container in &mut self.containers {
            container.ready = false;
        }
        self.write_status(true).await;
        let delete = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match self.api.delete(&self.name, &delete).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Starts container `index`'s process in the pod's namespace.
    fn start(&mut self, index: usize, pod: &Pod) -> Result<()> {
        let container = &self.containers[index].spec;
        let command: Vec<String> = match &container.command {
            Some(command) if !command.is_empty() => command.clone(),
            _ => vec![container.image.clone().unwrap_or_default()],
        };
        let program = self.shared.programs.get(&command[0]).with_context(|| {
            format!("container {}: no program {:?} on the test kubelet", container.name, command[0])
        })?;
        let mut args =
            vec!["netns".to_owned(), "exec".to_owned(), self.net.netns.clone(), program.display().to_string()];
        args.extend(command[1..].iter().cloned());
        args.extend(container.args.clone().unwrap_or_default());
        let env = self.environment(container, pod);
        let log = self.logs.join(format!("{}_{}_{}.log", self.namespace, self.name, container.name));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut command = crate::supervised::command(std::path::Path::new("ip"), &args);
        command.envs(env).stdout(log.try_clone()?).stderr(log);
        let mut child = tokio::process::Command::from(command).spawn().context("starting the container's process")?;
        let stdin = child.stdin.take();
        let pid = child.id().context("the process has no pid")?;
        let (tell, exited) = oneshot::channel();
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(137);
            let _ = tell.send(code);
        });
        let running = &mut self.containers[index];
        running.process = Some(Process { pid, stdin, exited });
        running.exit_code = None;
        running.started_at = chrono_now();
        running.ready = false;
        running.successes = 0;
        running.failures = 0;
        running.next_probe = Instant::now() + probe_delay(running.spec.readiness_probe.as_ref());
        Ok(())
    }

    /// The container's environment: its `value`s and the downward API fields a kubelet resolves.
    fn environment(&self, container: &Container, pod: &Pod) -> Vec<(String, String)> {
        let mut env = vec![("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())];
        for var in container.env.clone().unwrap_or_default() {
            let value = match (&var.value, var.value_from.as_ref().and_then(|f| f.field_ref.as_ref())) {
                (Some(value), _) => value.clone(),
                (None, Some(field)) => match field.field_path.as_str() {
                    "metadata.name" => self.name.clone(),
                    "metadata.namespace" => self.namespace.clone(),
                    "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                    "status.podIP" => self.net.ip.to_string(),
                    "status.hostIP" => self.gateway.clone(),
                    "spec.nodeName" => self.node.clone(),
                    "spec.serviceAccountName" => {
                        pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default()
                    }
                    _ => String::new(),
                },
                (None, None) => String::new(),
            };
            env.push((var.name, value));
        }
        env
    }

    /// Notes processes that exited.
    fn reap(&mut self) {
        for container in &mut self.containers {
            let Some(process) = &mut container.process else { continue };
            match process.exited.try_recv() {
                Ok(code) => {
                    container.exit_code = Some(code);
                    container.process = None;
                    container.ready = false;
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    container.exit_code = Some(137);
                    container.process = None;
                    container.ready = false;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
    }

    /// Notes exits, and restarts what exited (restartPolicy Always) after a backoff.
    fn reap_and_restart(&mut self, pod: &Pod) {
        self.reap();
        for index in 0..self.containers.len() {
            if self.containers[index].process.is_none() {
                self.containers[index].restarts += 1;
                if let Err(error) = self.start(index, pod) {
                    eprintln!("test kubelet: pod {}: restarting: {error:#}", self.key);
                }
            }
        }
    }

    /// Runs the readiness probes that are due.
    async fn probe(&mut self) {
        let now = Instant::now();
        let ip = self.net.ip;
        for container in &mut self.containers {
            if container.process.is_none() || container.next_probe > now {
                continue;
            }
            let Some(probe) = container.spec.readiness_probe.clone() else {
                // No probe: ready once running, and until it stops (terminating or not).
                container.ready = true;
                continue;
            };
            container.next_probe = now + Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
            let passed = check(&probe, &container.spec, ip).await;
            if passed {
                container.successes += 1;
                container.failures = 0;
                if container.successes >= probe.success_threshold.unwrap_or(1) {
                    container.ready = true;
                }
            } else {
                container.failures += 1;
                container.successes = 0;
                if container.failures >= probe.failure_threshold.unwrap_or(3) {
                    container.ready = false;
                }
            }
        }
    }

    /// Writes the pod's status as a kubelet does, if it differs from what was last written.
    async fn write_status(&mut self, terminated: bool) {
        let ready = !self.containers.is_empty() && self.containers.iter().all(|c| c.ready && c.process.is_some());
        let exited = self.containers.iter().all(|c| c.process.is_none());
        let phase = match (terminated && exited, self.containers.iter().all(|c| c.exit_code == Some(0))) {
            (false, _) => "Running",
            (true, true) => "Succeeded",
            (true, false) => "Failed",
        };
        let now = chrono_now();
        let mut condition = |kind: &'static str, status: bool| {
            let since = match self.transitions.get(kind) {
                Some((was, since)) if *was == status => since.clone(),
                _ => now.clone(),
            };
            self.transitions.insert(kind, (status, since.clone()));
            json!({"type": kind, "status": if status { "True" } else { "False" }, "lastTransitionTime": since})
        };
        let conditions = vec![
            condition("PodReadyToStartContainers", !exited),
            condition("Initialized", true),
            condition("Ready", ready),
            condition("ContainersReady", ready),
            condition("PodScheduled", true),
        ];
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|c| {
                let state = match (&c.process, c.exit_code) {
                    (Some(_), _) => json!({"running": {"startedAt": c.started_at}}),
                    (None, code) => json!({"terminated": {"exitCode": code.unwrap_or(137), "startedAt": c.started_at, "finishedAt": now, "reason": if code == Some(0) { "Completed" } else { "Error" }}}),
                };
                json!({"name": c.spec.name, "image": c.spec.image, "imageID": "", "ready": c.ready && c.process.is_some(),
                       "started": c.process.is_some(), "restartCount": c.restarts, "state": state})
            })
            .collect();
        let status = json!({
            "phase": phase,
            "hostIP": self.gateway, "hostIPs": [{"ip": self.gateway}],
            "podIP": self.net.ip.to_string(), "podIPs": [{"ip": self.net.ip.to_string()}],
            "startTime": self.started_at,
            "conditions": conditions,
            "containerStatuses": statuses,
        });
        let written = Written {
            phase,
            ready,
            containers: self.containers.iter().map(|c| (c.ready, c.process.is_some(), c.restarts)).collect(),
        };
        if self.written.as_ref() == Some(&written) {
            return;
        }
        let patch = Patch::Merge(json!({"status": status}));
        match self.api.patch_status(&self.name, &PatchParams::default(), &patch).await {
            Ok(_) => {
                if self.written.as_ref().is_none_or(|w| w.ready != ready) {
                    self.shared.timeline.record(&self.key, PodEvent::Ready(ready));
                }
                self.written = Some(written);
            }
            Err(error) => eprintln!("test kubelet: pod {}: writing status: {error}", self.key),
        }
    }

    /// Kills every process at once (their supervisors do, as their stdin closes).
    fn stop_all(&mut self) {
        for container in &mut self.containers {
            if let Some(mut process) = container.process.take() {
                process.stdin.take();
                container.exit_code.get_or_insert(137);
            }
        }
    }
}

/// The delay before a container's first readiness probe.
fn probe_delay(probe: Option<&Probe>) -> Duration {
    Duration::from_secs(probe.and_then(|p| p.initial_delay_seconds).unwrap_or(0).max(0) as u64)
}

/// One readiness check against the pod at `ip`: an HTTP GET answered 200..399, or a TCP connect.
async fn check(probe: &Probe, container: &Container, ip: std::net::Ipv4Addr) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(get) = &probe.http_get {
            let port = resolve_port(&get.port, container)?;
            let path = get.path.clone().unwrap_or_else(|| "/".into());
            let reply = crate::http::get(&format!("http://{ip}:{port}{path}")).await?;
            if !(200..400).contains(&reply.status) {
                bail!("{}", reply.status);
            }
            return Ok(());
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = resolve_port(&tcp.port, container)?;
            tokio::net::TcpStream::connect((ip, port)).await?;
            return Ok(());
        }
        bail!("only httpGet and tcpSocket readiness probes are run")
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(())))
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16> {
    match port {
        IntOrString::Int(number) => Ok(u16::try_from(*number)?),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .with_context(|| format!("no container port named {name}")),
    }
}
