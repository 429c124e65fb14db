//! The one metrics registry behind `/metrics`. Each subsystem registers its own
//! metrics into it (xDS, HDS, sources, pipeline); this file adds only what belongs
//! to the process: build information, dropped log lines, and the standard `process_*`
//! series (unprefixed, as every dashboard names them).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

pub struct MetricsRegistry {
    registry: Mutex<Registry>,
    /// Holds the `process_*` collector, outside the `edgexds_` prefix.
    process: Registry,
    log_lines_dropped: Counter,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new(Registry::with_prefix("edgexds"))
    }
}

impl MetricsRegistry {
    /// Where subsystems register, before [`MetricsRegistry::new`] seals it.
    pub fn root() -> Registry {
        Registry::with_prefix("edgexds")
    }

    pub fn new(mut registry: Registry) -> Self {
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log output was not being read",
            log_lines_dropped.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "edgexds build information", build_info);
        let mut process = Registry::default();
        process.register_collector(Box::new(super::process_metrics::ProcessCollector));
        Self { registry: Mutex::new(registry), process, log_lines_dropped }
    }

    pub fn encode(&self) -> String {
        let dropped = crate::ops::telemetry::dropped_lines();
        self.log_lines_dropped.inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.process);
        let _ = prometheus_client::encoding::text::encode(&mut text, &crate::lock::lock(&self.registry));
        text
    }
}
