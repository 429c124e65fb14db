//! The HDS state: connected checkers, their schedules and reports, and the verdicts.
//!
//! Every change (a checker joining or leaving, a new model, a report, time
//! passing) goes through one lock, recomputes what it affects and publishes:
//! schedules to each checker's watch channel, verdicts to the pipeline's.

use crate::port::node_facts;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Node};
use envoy_types::pb::envoy::service::health::v3::{
    EndpointHealth as ReportedEndpoint, EndpointHealthResponse, HealthCheckSpecifier,
};
use tokio::sync::watch;
use tracing::{info, warn};

use super::HdsConfig;
use super::assign::{Assignment, Checker, CheckerId, assign};
use super::metrics::{HdsMetrics, IgnoredLabel, VerdictLabel};
use super::reports::{ReportBook, Verdict};
use super::specifier::specifier_for;
use super::targets::{EndpointKey, Group, Target, targets};
use crate::lock::lock;
use crate::model::{CheckVerdicts, Model};
use crate::pipeline::ModelReceiver;
use crate::shutdown::Shutdown;

#[path = "hub_view.rs"]
mod view;
pub use view::HubView;

/// Added to the probe timeout: how long after an endpoint is handed to a checker its first
/// result can take to arrive. Envoy reports new hosts unhealthy until their first check ends.
const WARM_UP_MARGIN: Duration = Duration::from_millis(200);
/// Report periods without a report after which a connected checker counts as hung.
const SILENT_PERIODS: u32 = 3;

pub type Schedule = watch::Receiver<Option<Arc<HealthCheckSpecifier>>>;

struct CheckerSlot {
    info: Checker,
    node_id: String,
    schedule: watch::Sender<Option<Arc<HealthCheckSpecifier>>>,
    /// Since when each assigned endpoint has been this checker's.
    since: HashMap<EndpointKey, Instant>,
    connected_at: Instant,
    reports: u64,
    last_report: Option<Instant>,
    /// Connected but not reporting: its endpoints go to others until it reports again.
    silent: bool,
}

impl CheckerSlot {
    fn heard_within(&self, now: Instant, limit: Duration) -> bool {
        now.saturating_duration_since(self.last_report.unwrap_or(self.connected_at)) <= limit
    }
}

#[derive(Default)]
struct HubState {
    targets: Vec<Target>,
    groups: HashMap<String, Arc<Group>>,
    checkers: BTreeMap<CheckerId, CheckerSlot>,
    assignment: Assignment,
    book: ReportBook,
    verdicts: HashMap<EndpointKey, Verdict>,
    warned_unchecked: bool,
    /// Clusters whose HDS verdicts are ignored: checkers judged too many of them unhealthy.
    failed_open: BTreeSet<String>,
}

pub struct HdsHub {
    config: HdsConfig,
    state: Mutex<HubState>,
    verdicts: watch::Sender<Arc<CheckVerdicts>>,
    metrics: HdsMetrics,
    next_id: AtomicU64,
}

impl HdsHub {
    pub fn new(config: HdsConfig, metrics: HdsMetrics) -> Arc<Self> {
        let (verdicts, _) = watch::channel(Arc::default());
        Arc::new(Self { config, state: Mutex::default(), verdicts, metrics, next_id: AtomicU64::new(1) })
    }

    /// The endpoints judged unhealthy; changes whenever a verdict flips.
    /// Who may open an HDS stream.
    pub fn access(&self) -> &crate::auth::Access {
        &self.config.checkers
    }

    pub fn verdicts(&self) -> watch::Receiver<Arc<CheckVerdicts>> {
        self.verdicts.subscribe()
    }

    /// Registers a checker; its schedule arrives on the returned channel.
    pub fn connect(&self, node: &Node, http: bool, tcp: bool, now: Instant) -> (CheckerId, Schedule) {
        let id = CheckerId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let info = Checker { id, node_name: node_facts::node_name(node), zone: node_facts::zone(node), http, tcp };
        info!(node = %node.id, zone = ?info.zone, node_name = ?info.node_name, "HDS checker connected");
        let (schedule, receiver) = watch::channel(None);
        let slot = CheckerSlot {
            info,
            node_id: node.id.clone(),
            schedule,
            since: HashMap::new(),
            connected_at: now,
            reports: 0,
            last_report: None,
            silent: false,
        };
        let mut state = lock(&self.state);
        state.checkers.insert(id, slot);
        self.rebalance(&mut state, now);
        (id, receiver)
    }

    /// Its endpoints go to the others at once; its last reports count until they go stale.
    pub fn disconnect(&self, id: CheckerId, now: Instant) {
        let mut state = lock(&self.state);
        if let Some(slot) = state.checkers.remove(&id) {
            info!(node = %slot.node_id, "HDS checker disconnected");
        }
        self.rebalance(&mut state, now);
    }

    pub fn set_model(&self, model: &Model, now: Instant) {
        let targets = targets(model);
        let mut state = lock(&self.state);
        if state.targets == targets {
            return;
        }
        state.groups = targets.iter().map(|t| (t.group.name.clone(), t.group.clone())).collect();
        state.targets = targets;
        self.rebalance(&mut state, now);
    }

    pub fn record(&self, id: CheckerId, response: &EndpointHealthResponse, now: Instant) {
        let mut state = lock(&self.state);
        let HubState { groups, checkers, book, .. } = &mut *state;
        let Some(slot) = checkers.get_mut(&id) else { return };
        slot.reports += 1;
        slot.last_report = Some(now);
        let revived = std::mem::take(&mut slot.silent);
        self.metrics.reports.inc();
        for cluster in &response.cluster_endpoints_health {
            let Some(group) = groups.get(&cluster.cluster_name) else { continue };
            let warm_up = Duration::from_millis(u64::from(group.policy.timeout_ms)) + WARM_UP_MARGIN;
            let period = Duration::from_millis(u64::from(group.policy.interval_ms)).max(self.config.report_interval);
            for reported in cluster.locality_endpoints_health.iter().flat_map(|l| &l.endpoints_health) {
                let (Some(address), Some(healthy)) = (address_of(reported), healthy(reported)) else { continue };
                let key = EndpointKey { cluster: group.cluster.clone(), address };
                // Only results for endpoints this checker has had long enough to have checked:
                // a checker cannot vote on endpoints it was not given.
                let ignored = match slot.since.get(&key) {
                    Some(since) if now >= *since + warm_up => {
                        book.record(&key, id, healthy, now, period);
                        continue;
                    }
                    Some(_) => "warm_up",
                    None => "unassigned",
                };
                self.metrics.reports_ignored.get_or_create(&IgnoredLabel { reason: ignored }).inc();
            }
        }
        if revived {
            info!(node = %slot.node_id, "HDS checker reports again; giving it endpoints");
            self.rebalance(&mut state, now);
        } else {
            self.reevaluate(&mut state, now);
        }
    }

    /// Lets reports go stale and takes endpoints from checkers that stopped reporting
    /// (a hung Envoy whose connection stays open); call about once per report interval.
    pub fn tick(&self, now: Instant) {
        let mut state = lock(&self.state);
        let limit = self.config.report_interval * SILENT_PERIODS;
        let mut changed = false;
        for slot in state.checkers.values_mut() {
            let silent = !slot.heard_within(now, limit);
            if silent && !slot.silent {
                warn!(node = %slot.node_id, ?limit, "HDS checker stopped reporting; its endpoints go to others");
            }
            changed |= silent != slot.silent;
            slot.silent = silent;
        }
        if changed {
            self.rebalance(&mut state, now);
        } else {
            self.reevaluate(&mut state, now);
        }
    }

    fn rebalance(&self, state: &mut HubState, now: Instant) {
        let checkers: Vec<Checker> = state.checkers.values().filter(|s| !s.silent).map(|s| s.info.clone()).collect();
        state.assignment = assign(&state.targets, &checkers, self.config.checkers_per_endpoint, &state.assignment);
        // Each checker's targets, in target order, found with one lookup per target.
        let mut mine: HashMap<CheckerId, Vec<&Target>> = HashMap::new();
        for target in &state.targets {
            for id in state.assignment.get(&target.endpoint).into_iter().flatten() {
                mine.entry(*id).or_default().push(target);
            }
        }
        for (id, slot) in &mut state.checkers {
            let targets = mine.remove(id).unwrap_or_default();
            let previous = std::mem::take(&mut slot.since);
            slot.since = targets
                .iter()
                .map(|t| (t.endpoint.clone(), previous.get(&t.endpoint).copied().unwrap_or(now)))
                .collect();
            let specifier = specifier_for(targets, self.config.report_interval);
            let sent = slot.schedule.send_if_modified(|current| {
                let changed = current.as_deref() != Some(&specifier);
                if changed {
                    *current = Some(Arc::new(specifier));
                }
                changed
            });
            if sent {
                self.metrics.schedules_sent.inc();
            }
        }
        self.metrics.checkers.set(state.checkers.len() as i64);
        self.reevaluate(state, now);
    }

    fn reevaluate(&self, state: &mut HubState, now: Instant) {
        let targets = &state.targets;
        state.book.prune(now, |e| targets.binary_search_by(|t| t.endpoint.cmp(e)).is_ok());
        let mut verdicts = CheckVerdicts::default();
        let mut current = HashMap::with_capacity(targets.len());
        for target in targets {
            let verdict = state.book.verdict(&target.endpoint, now);
            let was_unhealthy = state.verdicts.get(&target.endpoint) == Some(&Verdict::Unhealthy);
            if was_unhealthy != (verdict == Verdict::Unhealthy) {
                let to = if verdict == Verdict::Unhealthy { "unhealthy" } else { "healthy" };
                info!(cluster = %target.endpoint.cluster, address = %target.endpoint.address, to, "HDS verdict flipped");
                self.metrics.verdict_flips.get_or_create(&VerdictLabel { to }).inc();
            }
            if verdict == Verdict::Unhealthy {
                verdicts.insert(&target.endpoint.cluster, target.endpoint.address);
            }
            current.insert(target.endpoint.clone(), verdict);
        }
        state.verdicts = current;
        let ready = targets_by_cluster(&state.targets);
        let verdicts = self.limit_damage(state, ready, verdicts);
        let targets = &state.targets;
        let unchecked = targets.iter().filter(|t| !state.assignment.contains_key(&t.endpoint)).count();
        self.metrics.unchecked_endpoints.set(unchecked as i64);
        self.metrics.unhealthy_endpoints.set(verdicts.len() as i64);
        let unchecked_now = unchecked > 0;
        if unchecked_now && !state.warned_unchecked {
            warn!(unchecked, "no connected HDS checker can probe these endpoints; Kubernetes readiness alone decides");
        }
        state.warned_unchecked = unchecked_now;
        self.verdicts.send_if_modified(|published| {
            let changed = **published != verdicts;
            if changed {
                *published = Arc::new(verdicts);
            }
            changed
        });
    }
}

impl HdsHub {
    /// Drops the verdicts of every cluster where checkers judged more than
    /// `max_unhealthy_percent` of its ready endpoints unhealthy, and says so once per episode.
    fn limit_damage(
        &self,
        state: &mut HubState,
        ready: BTreeMap<String, usize>,
        verdicts: CheckVerdicts,
    ) -> CheckVerdicts {
        let limit = usize::from(self.config.max_unhealthy_percent);
        let mut kept = CheckVerdicts::default();
        let mut failed_open = BTreeSet::new();
        for (cluster, failing) in verdicts.clusters() {
            let total = ready.get(cluster).copied().unwrap_or(0);
            if failing.len() * 100 > limit * total {
                if !state.failed_open.contains(cluster) {
                    warn!(
                        %cluster, unhealthy = failing.len(), ready = total, limit_percent = limit,
                        "HDS checkers judge too many endpoints unhealthy; ignoring them for this cluster (fail open: Kubernetes readiness decides)"
                    );
                }
                failed_open.insert(cluster.to_owned());
                continue;
            }
            for address in failing {
                kept.insert(cluster, *address);
            }
        }
        for cluster in state.failed_open.difference(&failed_open) {
            info!(%cluster, "HDS verdicts count again for this cluster");
        }
        self.metrics.failed_open_clusters.set(failed_open.len() as i64);
        state.failed_open = failed_open;
        kept
    }
}

/// Ready endpoints per cluster: HDS targets only those.
fn targets_by_cluster(targets: &[Target]) -> BTreeMap<String, usize> {
    let mut ready = BTreeMap::new();
    for target in targets {
        *ready.entry(target.endpoint.cluster.to_string()).or_default() += 1;
    }
    ready
}

fn address_of(reported: &ReportedEndpoint) -> Option<SocketAddr> {
    let address = reported.endpoint.as_ref()?.address.as_ref()?;
    let Some(AddressKind::SocketAddress(socket)) = &address.address else { return None };
    let ip: IpAddr = socket.address.parse().ok()?;
    let Some(PortSpecifier::PortValue(port)) = socket.port_specifier else { return None };
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

/// Envoy reports HEALTHY, UNHEALTHY or TIMEOUT; anything else says nothing.
fn healthy(reported: &ReportedEndpoint) -> Option<bool> {
    match HealthStatus::try_from(reported.health_status).ok()? {
        HealthStatus::Healthy | HealthStatus::Degraded => Some(true),
        HealthStatus::Unhealthy | HealthStatus::Timeout => Some(false),
        HealthStatus::Unknown | HealthStatus::Draining => None,
    }
}

/// Feeds the hub new models and the passing of time until shutdown.
pub async fn run(hub: Arc<HdsHub>, mut models: ModelReceiver, mut shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(hub.config.report_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut model = models.borrow_and_update().clone();
    loop {
        if let Some(model) = model.take() {
            hub.set_model(&model, Instant::now());
        }
        tokio::select! {
            changed = models.changed() => {
                if changed.is_err() {
                    return;
                }
                model = models.borrow_and_update().clone();
            }
            _ = ticks.tick() => hub.tick(Instant::now()),
            () = crate::shutdown::requested(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
