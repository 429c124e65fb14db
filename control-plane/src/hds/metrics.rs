//! HDS's metrics, registered by the hub itself under `edgexds_hds_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// The verdict an endpoint flipped to: healthy or unhealthy.
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IgnoredLabel {
    /// unassigned: the endpoint was never given to that checker; warm_up: too soon after it was.
    pub reason: &'static str,
}

#[derive(Clone, Default)]
pub struct HdsMetrics {
    pub reports_ignored: Family<IgnoredLabel, Counter>,
    pub failed_open_clusters: Gauge,
    pub checkers: Gauge,
    pub reports: Counter,
    pub schedules_sent: Counter,
    pub verdict_flips: Family<VerdictLabel, Counter>,
    pub unchecked_endpoints: Gauge,
    pub unhealthy_endpoints: Gauge,
}

impl HdsMetrics {
    pub fn register(root: &mut Registry) -> Self {
        let metrics = Self::default();
        let hds = root.sub_registry_with_prefix("hds");
        hds.register("checkers", "Connected HDS checker streams", metrics.checkers.clone());
        hds.register("reports", "Endpoint health reports received from checkers", metrics.reports.clone());
        hds.register(
            "failed_open_clusters",
            "Clusters whose HDS verdicts are ignored because checkers judged more than --hds-max-unhealthy-percent unhealthy",
            metrics.failed_open_clusters.clone(),
        );
        hds.register(
            "reports_ignored",
            "Endpoint results in checker reports that were not counted, by reason",
            metrics.reports_ignored.clone(),
        );
        hds.register("schedules_sent", "HealthCheckSpecifiers sent to checkers", metrics.schedules_sent.clone());
        hds.register("verdict_flips", "Endpoints whose active-check verdict flipped", metrics.verdict_flips.clone());
        hds.register(
            "unchecked_endpoints",
            "Endpoints HDS should check but no connected checker can; Kubernetes readiness alone decides",
            metrics.unchecked_endpoints.clone(),
        );
        hds.register(
            "unhealthy_endpoints",
            "Endpoints judged unhealthy by HDS checkers",
            metrics.unhealthy_endpoints.clone(),
        );
        metrics
    }
}
