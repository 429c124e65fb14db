//! Turns source states into published snapshots: debounce, resolve, translate, encode,
//! publish. It also defines what a source publishes into, and what the pipeline publishes.
//!
//! Imports: none.

mod incremental;
mod variants;

pub use incremental::{SnapshotBuilder, Update};

use incremental::outbound_listener;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use prost::Message;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cache::{Encoded, ResourceType, Snapshot, SnapshotCache};
use crate::histograms;
use crate::model::{CheckVerdicts, Model, Place, SourceState, resolve};
use crate::shutdown::{Shutdown, Task};
use crate::translate::{self, TranslateOptions};

/// The pipeline's own metrics.
#[derive(Clone)]
pub struct PipelineMetrics {
    translation: Histogram,
    snapshot_clusters: Gauge,
    snapshot_endpoints: Gauge,
    /// Variants of the snapshot for client places, and the load assignments they hold of their own.
    place_variants: Gauge,
    localized_assignments: Gauge,
    /// When the last snapshot was published, Unix seconds: with `source_events` still
    /// rising, a stale one says the pipeline is stuck.
    snapshot_published: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for PipelineMetrics {
    /// Registered nowhere: for tests.
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl PipelineMetrics {
    pub fn register(root: &mut Registry) -> Self {
        let metrics = Self {
            translation: histograms::latency(),
            snapshot_clusters: Gauge::default(),
            snapshot_endpoints: Gauge::default(),
            place_variants: Gauge::default(),
            localized_assignments: Gauge::default(),
            snapshot_published: Gauge::default(),
        };
        root.register_with_unit(
            "translation_duration",
            "Resolve, translate and encode one snapshot",
            Unit::Seconds,
            metrics.translation.clone(),
        );
        root.register("snapshot_clusters", "Clusters in the current snapshot", metrics.snapshot_clusters.clone());
        root.register("snapshot_endpoints", "Endpoints in the current snapshot", metrics.snapshot_endpoints.clone());
        root.register(
            "place_variants",
            "Variants of the snapshot for the places of connected clients (Services with a trafficDistribution)",
            metrics.place_variants.clone(),
        );
        root.register(
            "localized_assignments",
            "Load assignments the place variants hold in place of the shared ones",
            metrics.localized_assignments.clone(),
        );
        root.register_with_unit(
            "snapshot_published_timestamp",
            "When the last snapshot was published, in seconds since the Unix epoch",
            Unit::Seconds,
            metrics.snapshot_published.clone(),
        );
        metrics
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// What every source counts, whichever it is.
#[derive(Clone)]
pub struct SourceMetrics {
    events: Family<KindLabel, Counter>,
    /// 1 while the source is in sync: every watch listed and none failing, or the manifests
    /// directory read; 0 before and while it is not (the last good state is served).
    synced: Gauge,
}

impl Default for SourceMetrics {
    /// Registered nowhere: for tests.
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl SourceMetrics {
    pub fn register(root: &mut Registry) -> Self {
        let metrics = Self { events: Family::default(), synced: Gauge::default() };
        root.register("source_events", "Changes seen from the source", metrics.events.clone());
        root.register(
            "source_synced",
            "1 while the source is in sync (every watch listed and none failing, or the manifests directory read), else 0",
            metrics.synced.clone(),
        );
        // Present at 0 from startup for every kind a source reports.
        for kind in
            crate::model::ObjectKind::ALL.map(crate::model::ObjectKind::label).into_iter().chain([MANIFESTS_EVENT])
        {
            metrics.events.get_or_create(&KindLabel { kind }).inc_by(0);
        }
        metrics
    }

    /// Whether the source is in sync now.
    pub fn synced(&self, synced: bool) {
        self.synced.set(i64::from(synced));
    }

    /// One change seen from the source, by kind of object (or `manifests`).
    pub fn event(&self, kind: &'static str) {
        self.events.get_or_create(&KindLabel { kind }).inc();
    }
}

/// The `source_events` kind of a manifests scan that changed something: it names no kind.
pub const MANIFESTS_EVENT: &str = "manifests";

/// What a source publishes: its whole current state, `None` until its first full one.
pub type StateSender = watch::Sender<Option<Arc<SourceState>>>;
pub type StateReceiver = watch::Receiver<Option<Arc<SourceState>>>;
/// Each resolved model, once per source change (verdicts are not in it); `None` before the first.
pub type ModelSender = watch::Sender<Option<Arc<Model>>>;
pub type ModelReceiver = watch::Receiver<Option<Arc<Model>>>;

/// However busy the source, a change is published at most this long after it was seen.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Quiet time to wait for after a change, so a burst becomes one push.
    pub debounce: Duration,
    pub translate: TranslateOptions,
}

/// Resolves, translates and encodes one state from nothing: the reference the incremental
/// [`SnapshotBuilder`] is checked against. Pure apart from allocation. The model is
/// resolved without `verdicts`; translation takes them as an overlay.
pub fn build_snapshot(
    state: &SourceState,
    options: &TranslateOptions,
    previous: Option<&Snapshot>,
    verdicts: &CheckVerdicts,
) -> (Snapshot, Model) {
    let model = resolve(state);
    let mut namespaces_of: HashMap<&str, usize> = HashMap::new();
    for key in model.services.keys() {
        *namespaces_of.entry(&*key.name).or_default() += 1;
    }
    let mut resources = vec![outbound_listener(options)];
    let mut virtual_hosts = Vec::new();
    for service in model.services.values() {
        let unique = namespaces_of.get(&*service.key.name) == Some(&1);
        let part = translate::contribution(service, options, verdicts, unique);
        resources.extend(part.resources);
        virtual_hosts.extend(part.virtual_hosts);
    }
    // Encoded whole, as prost does: the incremental builder assembles the same bytes from
    // per-Service parts, and this is what they are checked against.
    let routes = translate::outbound_routes(virtual_hosts);
    resources.push(Encoded::from((ResourceType::RouteConfiguration, routes.name.clone(), routes.encode_to_vec())));
    (Snapshot::new(previous, resources), model)
}

/// Active-check verdicts, when HDS is on.
pub type VerdictReceiver = watch::Receiver<Arc<CheckVerdicts>>;

/// What the pipeline reads, and where it publishes.
pub struct PipelineContext {
    pub config: PipelineConfig,
    pub states: StateReceiver,
    /// Active-check verdicts, when HDS is on.
    pub verdicts: Option<VerdictReceiver>,
    pub cache: Arc<SnapshotCache>,
    pub models: ModelSender,
    pub metrics: PipelineMetrics,
    pub shutdown: Shutdown,
}

/// Starts the pipeline: it runs until the source closes or shutdown is requested.
pub fn spawn(context: PipelineContext) -> Task {
    tokio::spawn(async move {
        run(context).await;
        Ok(())
    })
}

/// Publishes a snapshot per (debounced) source change, and sends each resolved model to
/// `models`. A change of `verdicts` alone is debounced like a source change and
/// re-translates only the clusters it flips.
async fn run(context: PipelineContext) {
    let PipelineContext { config, mut states, mut verdicts, cache, models, metrics, mut shutdown } = context;
    // Where connected clients are: variants are built for these places.
    let mut places = cache.places().subscribe();
    let mut reported = Model::default();
    // A state may already be waiting; otherwise wait for the first one.
    let mut pending = states.borrow_and_update().is_some();
    let mut builder = Some(SnapshotBuilder::new(config.translate.clone()));
    loop {
        if !pending {
            tokio::select! {
                changed = states.changed() => if changed.is_err() { return },
                changed = verdicts_changed(&mut verdicts) => if changed.is_err() { verdicts = None },
                // The cache, which holds the sender, outlives this task.
                _ = places.changed() => {},
                () = crate::shutdown::requested(&mut shutdown) => return,
            }
        }
        pending = false;
        let observed_at = Instant::now();
        debounce(config.debounce, &mut states).await;
        let Some(state) = states.borrow_and_update().clone() else { continue };
        let judged = verdicts.as_mut().map(|v| v.borrow_and_update().clone()).unwrap_or_default();
        let at: BTreeSet<Place> = places.borrow_and_update().keys().cloned().collect();
        // After a failed update nothing built before can be trusted: start again from nothing.
        let mut working = builder.take().unwrap_or_else(|| SnapshotBuilder::new(config.translate.clone()));
        let started = Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            let update = working.update(&state, &judged, &at);
            (working, update)
        })
        .await;
        let Ok((working, update)) = built else {
            warn!("translation task failed; keeping the last snapshot and rebuilding from scratch next time");
            continue;
        };
        histograms::observe(&metrics.translation, started.elapsed());
        let mut snapshot = working.snapshot().clone();
        snapshot.observed_at = Some(observed_at);
        let (clusters, endpoints) = (snapshot.len(ResourceType::Cluster), working.endpoints());
        metrics.snapshot_clusters.set(clusters as i64);
        metrics.snapshot_endpoints.set(endpoints as i64);
        let (assignments, variants) = working.localized();
        metrics.localized_assignments.set(assignments as i64);
        metrics.place_variants.set(variants as i64);
        let model = update.model_changed.then(|| working.model().clone());
        let diff = update.diff;
        let ((cds_changed, cds_removed), (eds_changed, eds_removed)) =
            (diff.count(ResourceType::Cluster), diff.count(ResourceType::ClusterLoadAssignment));
        let unchanged = diff.is_empty();
        cache.publish_diffed(snapshot, diff);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        metrics.snapshot_published.set(now.as_secs_f64());
        builder = Some(working);
        if let Some(model) = model {
            report_new_diagnostics(&reported, &model);
            reported = model.clone();
            models.send_replace(Some(Arc::new(model)));
        }
        if unchanged {
            debug!(elapsed = ?started.elapsed(), "source changed, resources did not");
        } else {
            info!(
                clusters,
                endpoints,
                cds_changed,
                cds_removed,
                eds_changed,
                eds_removed,
                elapsed = ?started.elapsed(),
                "snapshot published"
            );
        }
    }
}

/// Resolves when the verdicts change; never without a verdict source.
pub async fn verdicts_changed(verdicts: &mut Option<VerdictReceiver>) -> Result<(), watch::error::RecvError> {
    match verdicts {
        Some(verdicts) => verdicts.changed().await,
        None => std::future::pending().await,
    }
}

/// Waits until the source has been quiet for `quiet`, but never longer than [`MAX_DELAY`] in
/// total.
async fn debounce(quiet: Duration, states: &mut StateReceiver) {
    let deadline = tokio::time::Instant::now() + MAX_DELAY;
    loop {
        let wake = (tokio::time::Instant::now() + quiet).min(deadline);
        tokio::select! {
            changed = states.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(wake) => return,
        }
    }
}

/// Logs each object newly ignored since `before`, and again only if its reason changes
/// after it was fixed. Conflicting probes are among them: without the Kubernetes status they
/// would show nowhere else. Both maps are persistent, so this costs what changed.
fn report_new_diagnostics(before: &Model, now: &Model) {
    for item in before.diagnostics.diff(&now.diagnostics) {
        if let imbl::ordset::DiffItem::Add(diagnostic) = item {
            warn!(object = %diagnostic.object, "{}", diagnostic.message);
        }
    }
    for item in before.probes.diff(&now.probes) {
        let (was, (key, status)) = match item {
            imbl::ordmap::DiffItem::Add(key, status) => (None, (key, status)),
            imbl::ordmap::DiffItem::Update { old: (_, was), new } => (Some(was), new),
            imbl::ordmap::DiffItem::Remove(..) => continue,
        };
        let Some(message) = status.conflicted.as_ref() else { continue };
        if was.and_then(|w| w.conflicted.as_ref()) != Some(message) {
            warn!(object = %format!("HealthProbe {key}"), "probe ignored: {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> (StateSender, StateReceiver) {
        watch::channel(Some(Arc::new(SourceState::default())))
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_waits_for_the_quiet_time_after_the_last_change() {
        let (tx, mut rx) = source();
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                tx.send_replace(Some(Arc::new(SourceState::default())));
            }
            std::future::pending::<()>().await;
        });
        debounce(Duration::from_millis(100), &mut rx).await;
        assert_eq!(started.elapsed(), Duration::from_millis(220), "last change at 120ms + 100ms quiet");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_changes_is_never_delayed_more_than_one_second() {
        let (tx, mut rx) = source();
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.send_replace(Some(Arc::new(SourceState::default())));
            }
        });
        debounce(Duration::from_millis(100), &mut rx).await;
        assert_eq!(started.elapsed(), MAX_DELAY);
    }

    #[test]
    fn same_input_gives_same_versions_and_unchanged_resources_share_memory() {
        let mut state = SourceState::default();
        let service = crate::model::Service {
            key: crate::model::ObjectKey::new("shop", "web"),
            ports: vec![crate::model::ServicePort {
                name: String::new(),
                port: 80,
                protocol: crate::model::PortProtocol::Tcp,
                target_port: crate::model::TargetPort::Number(80),
                app_protocol: Default::default(),
            }],
            external_name: false,
            traffic_distribution: None,
        };
        state.services.insert(service.key.clone(), Arc::new(service));
        let options = TranslateOptions::default();
        let (first, _) = build_snapshot(&state, &options, None, &CheckVerdicts::default());
        let (second, _) = build_snapshot(&state, &options, Some(&first), &CheckVerdicts::default());
        assert_eq!(first, second);
        let name = "web.shop:80";
        let (a, b) = (&first.resources(ResourceType::Cluster)[name], &second.resources(ResourceType::Cluster)[name]);
        assert!(Arc::ptr_eq(a, b));
    }

    #[test]
    fn a_verdict_change_retranslates_only_the_flipped_clusters_load_assignment() {
        use crate::model::fixtures::{endpoint, probe, probe_spec, service, slice, state};
        let input = state(
            vec![service("shop", "web", &[("http", 80)]), service("shop", "api", &[("http", 81)])],
            vec![
                slice(
                    "shop",
                    "web-1",
                    "web",
                    &[("http", 8080)],
                    vec![endpoint("10.0.0.1", true, "a"), endpoint("10.0.0.2", true, "b")],
                ),
                slice("shop", "api-1", "api", &[("http", 8081)], vec![endpoint("10.0.1.1", true, "a")]),
            ],
            vec![probe("shop", "web", "2024-01-01T00:00:00Z", probe_spec("web", None))],
        );
        let options = TranslateOptions::default();
        let mut failing = CheckVerdicts::default();
        failing.insert("web.shop:80", "10.0.0.2:8080".parse().unwrap());
        let mut builder = SnapshotBuilder::new(options.clone());
        builder.update(&input, &Arc::default(), &BTreeSet::new());
        let before = builder.snapshot().clone();
        let update = builder.update(&input, &Arc::new(failing.clone()), &BTreeSet::new());
        assert!(!update.model_changed, "verdicts are an overlay, not part of the model");
        assert_eq!(update.diff.count(ResourceType::ClusterLoadAssignment), (1, 0));
        let (rebuilt, _) = build_snapshot(&input, &options, None, &failing);
        assert_eq!(builder.snapshot(), &rebuilt);
        let api = "api.shop:81";
        let (kept, shared) = (
            &before.resources(ResourceType::ClusterLoadAssignment)[api],
            &builder.snapshot().resources(ResourceType::ClusterLoadAssignment)[api],
        );
        assert!(Arc::ptr_eq(kept, shared), "untouched load assignments are not translated again");
    }
}
