//! Support for end-to-end tests: a real Envoy, local upstreams, and edgexds in-process.
#![forbid(unsafe_code)]

pub mod binary;
pub mod careless_writer;
pub mod cluster;
pub mod control_plane;
pub mod envoy;
pub mod hds_client;
pub mod http;
pub mod kube_objects;
pub mod kube_server;
pub mod kube_session;
pub mod kubelet;
pub mod mesh;
pub mod pki;
pub mod proxied;
pub mod sotw;
pub mod supervised;
pub mod traffic;
pub mod traffic_policy;
pub mod upstream;
pub mod xds;

use std::future::Future;
use std::time::{Duration, Instant};

/// Sends the control plane's logs to the test output when `EDGEXDS_TEST_LOG` holds a filter,
/// e.g. `EDGEXDS_TEST_LOG=edgexds=debug,kube_runtime=debug`.
pub fn init_test_logs() {
    if let Ok(filter) = std::env::var("EDGEXDS_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Polls `check` until it yields a value or `limit` passes; returns the value and the time it took.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, started.elapsed());
        }
        if started.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sum of every sample of `series` in `edgexds`'s `/metrics` text; `series` may carry labels,
/// e.g. `edgexds_kube_lists_total{kind="service"}`.
pub fn metric(running: &edgexds::serve::Running, series: &str) -> f64 {
    running
        .metrics
        .encode()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(name, _)| *name == series || name.strip_prefix(series).is_some_and(|rest| rest.starts_with('{')))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}
