//! Latency histograms shared by the subsystems that each register their own metrics.

use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// 1 ms .. ~16 s.
pub fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_secs_f64());
}
