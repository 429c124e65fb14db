//! Prometheus metrics. Label values are bounded: types, methods and kinds, never node ids.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cache::ResourceType;
use crate::xds::StreamKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// ads, cds or eds: which delta method the stream uses.
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    /// Which per-client limit refused or cut an input (see the README's limits table).
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// The verdict an endpoint flipped to: healthy or unhealthy.
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The per-type series a stream touches on every response, resolved once.
#[derive(Clone, Default)]
pub struct TypeSeries {
    pub responses: Counter,
    pub resources_sent: Counter,
    pub resources_removed: Counter,
    pub bytes_sent: Counter,
}

pub struct Metrics {
    registry: Registry,
    per_type: [TypeSeries; 2],
    pub streams: Family<MethodLabel, Gauge>,
    pub responses: Family<TypeLabel, Counter>,
    pub resources_sent: Family<TypeLabel, Counter>,
    pub resources_removed: Family<TypeLabel, Counter>,
    pub bytes_sent: Family<TypeLabel, Counter>,
    pub acks: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
    pub push_latency: Histogram,
    pub convergence: Family<TypeLabel, Histogram>,
    pub source_events: Family<KindLabel, Counter>,
    pub manifest_scans: Counter,
    pub limit_hits: Family<LimitLabel, Counter>,
    pub xds_connections: Gauge,
    pub xds_stuck_streams: Gauge,
    log_lines_dropped: Counter,
    pub translation: Histogram,
    pub snapshot_clusters: Gauge,
    pub snapshot_endpoints: Gauge,
    pub hds_checkers: Gauge,
    pub hds_reports: Counter,
    pub hds_schedules_sent: Counter,
    pub hds_verdict_flips: Family<VerdictLabel, Counter>,
    pub hds_unchecked_endpoints: Gauge,
    pub hds_unhealthy_endpoints: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgexds");
        let metrics = Self {
            streams: Family::default(),
            responses: Family::default(),
            resources_sent: Family::default(),
            resources_removed: Family::default(),
            bytes_sent: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            push_latency: latency_histogram(),
            convergence: Family::new_with_constructor(latency_histogram),
            source_events: Family::default(),
            manifest_scans: Counter::default(),
            limit_hits: Family::default(),
            xds_connections: Gauge::default(),
            xds_stuck_streams: Gauge::default(),
            log_lines_dropped: Counter::default(),
            translation: latency_histogram(),
            snapshot_clusters: Gauge::default(),
            snapshot_endpoints: Gauge::default(),
            hds_checkers: Gauge::default(),
            hds_reports: Counter::default(),
            hds_schedules_sent: Counter::default(),
            hds_verdict_flips: Family::default(),
            hds_unchecked_endpoints: Gauge::default(),
            hds_unhealthy_endpoints: Gauge::default(),
            registry: Registry::default(),
            per_type: Default::default(),
        };
        registry.register("xds_streams", "Connected delta xDS streams", metrics.streams.clone());
        registry.register("xds_responses", "Delta xDS responses sent", metrics.responses.clone());
        registry.register(
            "xds_resources_sent",
            "Resources sent in delta xDS responses",
            metrics.resources_sent.clone(),
        );
        registry.register(
            "xds_resources_removed",
            "Names sent in removed_resources",
            metrics.resources_removed.clone(),
        );
        registry.register_with_unit(
            "xds_sent",
            "Encoded delta xDS response bytes",
            Unit::Bytes,
            metrics.bytes_sent.clone(),
        );
        registry.register("xds_acks", "Responses acknowledged by clients", metrics.acks.clone());
        registry.register("xds_nacks", "Responses rejected by clients", metrics.nacks.clone());
        registry.register_with_unit(
            "push_latency",
            "From a source change being observed to a response carrying it being written",
            Unit::Seconds,
            metrics.push_latency.clone(),
        );
        registry.register_with_unit(
            "convergence",
            "From a response being written to its ACK",
            Unit::Seconds,
            metrics.convergence.clone(),
        );
        registry.register("source_events", "Changes seen from the source", metrics.source_events.clone());
        registry.register(
            "manifest_scans",
            "Scans of the manifests directory (none while nothing changes)",
            metrics.manifest_scans.clone(),
        );
        registry.register(
            "limit_hits",
            "Inputs refused or cut by a per-client limit, by limit",
            metrics.limit_hits.clone(),
        );
        registry.register("xds_connections", "Open connections on the xDS port", metrics.xds_connections.clone());
        registry.register(
            "xds_stuck_streams",
            "Streams whose last response has gone unwritten for 2 s: clients that stopped reading",
            metrics.xds_stuck_streams.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log output was not being read",
            metrics.log_lines_dropped.clone(),
        );
        registry.register_with_unit(
            "translation_duration",
            "Resolve, translate and encode one snapshot",
            Unit::Seconds,
            metrics.translation.clone(),
        );
        registry.register("snapshot_clusters", "Clusters in the current snapshot", metrics.snapshot_clusters.clone());
        registry.register(
            "snapshot_endpoints",
            "Endpoints in the current snapshot",
            metrics.snapshot_endpoints.clone(),
        );
        registry.register("hds_checkers", "Connected HDS checker streams", metrics.hds_checkers.clone());
        registry.register("hds_reports", "Endpoint health reports received from checkers", metrics.hds_reports.clone());
        registry.register(
            "hds_schedules_sent",
            "HealthCheckSpecifiers sent to checkers",
            metrics.hds_schedules_sent.clone(),
        );
        registry.register(
            "hds_verdict_flips",
            "Endpoints whose active-check verdict flipped",
            metrics.hds_verdict_flips.clone(),
        );
        registry.register(
            "hds_unchecked_endpoints",
            "Endpoints HDS should check but no connected checker can; Kubernetes readiness alone decides",
            metrics.hds_unchecked_endpoints.clone(),
        );
        registry.register(
            "hds_unhealthy_endpoints",
            "Endpoints judged unhealthy by HDS checkers",
            metrics.hds_unhealthy_endpoints.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "edgexds build information", build_info);
        let per_type = ResourceType::ALL.map(|ty| {
            let label = Self::of(ty);
            TypeSeries {
                responses: metrics.responses.get_or_create(&label).clone(),
                resources_sent: metrics.resources_sent.get_or_create(&label).clone(),
                resources_removed: metrics.resources_removed.get_or_create(&label).clone(),
                bytes_sent: metrics.bytes_sent.get_or_create(&label).clone(),
            }
        });
        Self { registry, per_type, ..metrics }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let dropped = crate::ops::telemetry::dropped_lines();
        self.log_lines_dropped.inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counters of one type, without a lookup: streams use them on every response.
    pub fn series(&self, ty: ResourceType) -> &TypeSeries {
        &self.per_type[ty.index()]
    }

    pub fn of(ty: ResourceType) -> TypeLabel {
        TypeLabel { r#type: ty.short_name() }
    }

    pub fn method(kind: StreamKind) -> MethodLabel {
        MethodLabel {
            method: match kind {
                StreamKind::Aggregated => "ads",
                StreamKind::Single(ty) => ty.short_name(),
            },
        }
    }

    /// Counts one input refused or cut by `limit`.
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&LimitLabel { limit }).inc();
    }

    pub fn observe(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }
}
