//! The webhook's own metrics: reviews by outcome and how long each took, every series
//! present from startup.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::xds::ProxyRegistry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was injected.
    Injected,
    /// Nothing to do: injected already, labelled false, or not a pod creation.
    Left,
    /// Refused with a reason: a bad annotation, or a pod that cannot take the sidecar.
    Refused,
    /// Not an AdmissionReview of a Pod.
    Invalid,
}

impl Outcome {
    const ALL: [Outcome; 4] = [Outcome::Injected, Outcome::Left, Outcome::Refused, Outcome::Invalid];

    fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Left => "left",
            Outcome::Refused => "refused",
            Outcome::Invalid => "invalid",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone)]
pub struct InjectMetrics {
    reviews: Family<OutcomeLabel, Counter>,
    duration: Histogram,
    /// Connections closed unserved: past the connection limit, or a failed TLS handshake.
    pub connections_refused: Counter,
}

impl Default for InjectMetrics {
    /// Registered nowhere: for tests.
    fn default() -> Self {
        Self::register(&mut Registry::default(), Arc::default())
    }
}

/// Sidecars injected from an older template, counted from the connected streams at each scrape.
struct OutdatedSidecars(Arc<ProxyRegistry>);

impl std::fmt::Debug for OutdatedSidecars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutdatedSidecars")
    }
}

impl Collector for OutdatedSidecars {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(i64::try_from(self.0.outdated_sidecars()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "inject_outdated_sidecars",
            "Connected sidecars injected from another template or edgexds version than this one injects: restart their workloads",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

impl InjectMetrics {
    pub fn register(root: &mut Registry, proxies: Arc<ProxyRegistry>) -> Self {
        let metrics = Self {
            reviews: Family::default(),
            duration: crate::histograms::latency(),
            connections_refused: Counter::default(),
        };
        for outcome in Outcome::ALL {
            let _ = metrics.reviews.get_or_create(&OutcomeLabel { outcome: outcome.label() });
        }
        let inject = root.sub_registry_with_prefix("inject");
        inject.register(
            "reviews",
            "Pod admission reviews the injection webhook answered, by outcome",
            metrics.reviews.clone(),
        );
        inject.register_with_unit(
            "review_duration",
            "Time to answer one admission review",
            prometheus_client::registry::Unit::Seconds,
            metrics.duration.clone(),
        );
        inject.register(
            "connections_refused",
            "Webhook connections closed unserved: past the 64 open at once, or a TLS handshake that failed or took over 5 s",
            metrics.connections_refused.clone(),
        );
        root.register_collector(Box::new(OutdatedSidecars(proxies)));
        metrics
    }

    pub fn count(&self, outcome: Outcome) {
        self.reviews.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
    }

    pub fn observe(&self, elapsed: Duration) {
        crate::histograms::observe(&self.duration, elapsed);
    }
}
