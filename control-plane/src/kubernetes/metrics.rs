//! The Kubernetes source's metrics, registered under `edgexds_kube_`: lists and re-lists,
//! failing watches and status writes, so that an RBAC gap or an API server outage shows
//! as a number an operator can alert on, not only as a log line.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::pipeline::KindLabel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub kind: &'static str,
    /// The API server's HTTP status (403 for a missing RBAC rule, 410 for a compacted
    /// resourceVersion), or `none` when no answer came.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Default)]
pub struct KubeMetrics {
    pub lists: Family<KindLabel, Counter>,
    pub watch_failures: Family<FailureLabel, Counter>,
    pub watches_failing: Gauge,
    pub status_writes: Family<ResultLabel, Counter>,
    pub route_status_writes: Family<ResultLabel, Counter>,
}

impl KubeMetrics {
    pub fn register(root: &mut Registry) -> Self {
        let metrics = Self::default();
        let kube = root.sub_registry_with_prefix("kube");
        kube.register(
            "lists",
            "Lists per kind: the first is the initial list, any more are re-lists after a watch could not resume",
            metrics.lists.clone(),
        );
        kube.register(
            "watch_failures",
            "Failed list or watch requests, by kind and HTTP status",
            metrics.watch_failures.clone(),
        );
        kube.register(
            "watches_failing",
            "Watches failing right now; the last good state is served meanwhile",
            metrics.watches_failing.clone(),
        );
        kube.register("status_writes", "HealthProbe status writes, by result", metrics.status_writes.clone());
        kube.register(
            "route_status_writes",
            "HTTPRoute and GRPCRoute status writes, by result (a conflict: someone wrote the route meanwhile)",
            metrics.route_status_writes.clone(),
        );
        // Present at 0 from startup, so alerts and panels read 0, not "no data".
        for kind in crate::model::ObjectKind::ALL.map(crate::model::ObjectKind::label) {
            let _ = metrics.lists.get_or_create(&KindLabel { kind });
            let _ = metrics.watch_failures.get_or_create(&FailureLabel { kind, code: "none".into() });
        }
        for result in ["written", "failed"] {
            let _ = metrics.status_writes.get_or_create(&ResultLabel { result });
        }
        for result in ["written", "conflict", "failed"] {
            let _ = metrics.route_status_writes.get_or_create(&ResultLabel { result });
        }
        metrics
    }

    pub fn failure(&self, kind: &'static str, error: &kube::runtime::watcher::Error) {
        use kube::runtime::watcher::Error;
        let code = match error {
            Error::InitialListFailed(e) | Error::WatchStartFailed(e) | Error::WatchFailed(e) => match e {
                kube::Error::Api(status) => status.code.to_string(),
                _ => "none".to_owned(),
            },
            Error::WatchError(status) => status.code.to_string(),
            _ => "none".to_owned(),
        };
        self.watch_failures.get_or_create(&FailureLabel { kind, code }).inc();
    }

    pub fn status_write(&self, result: &'static str) {
        self.status_writes.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn route_status_write(&self, result: &'static str) {
        self.route_status_writes.get_or_create(&ResultLabel { result }).inc();
    }
}
