//! Health Discovery Service: Envoys designated as checkers run the probes a
//! HealthProbe asks for, per endpoint, and report back; the verdicts are folded
//! into EDS `health_status` for every sidecar.
//!
//! Pure parts (targets, assignment, specifiers, verdicts) are apart from the
//! stateful [`HdsHub`] and the gRPC stream that feeds it.
//!
//! Imports: port (the limits a checker's stream is under), auth (who may check), pipeline
//! (the models it schedules from).

mod assign;
mod hub;
pub mod metrics;
mod reports;
mod service;
mod specifier;
mod targets;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Access;
use crate::pipeline::ModelReceiver;
use crate::shutdown::{Shutdown, Task};

pub use assign::{Assignment, Checker, CheckerId, assign};
pub use hub::{HdsHub, HubView, run};
pub use reports::{ReportBook, Verdict};
pub use service::{CheckerStream, HdsServer};
pub use specifier::specifier_for;
pub use targets::{EndpointKey, Group, Target, targets};

/// How checkers are used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HdsConfig {
    /// How many checkers probe each endpoint (fewer when fewer are connected).
    pub checkers_per_endpoint: usize,
    /// How often checkers report; also how often staleness is re-evaluated.
    pub report_interval: Duration,
    /// Who may open an HDS stream, when clients authenticate.
    pub checkers: Access,
    /// Checkers alone never take more than this share of a cluster's ready endpoints out:
    /// beyond it, HDS verdicts for that cluster are ignored (fail open), like Envoy's
    /// panic threshold, so that a bad or compromised checker cannot empty a service.
    pub max_unhealthy_percent: u8,
}

impl Default for HdsConfig {
    fn default() -> Self {
        Self {
            checkers_per_endpoint: 2,
            report_interval: Duration::from_millis(500),
            checkers: Access::default(),
            max_unhealthy_percent: 50,
        }
    }
}

/// What HDS needs to run.
pub struct HdsContext {
    pub config: HdsConfig,
    pub metrics: metrics::HdsMetrics,
    /// The models whose endpoints it schedules checks for.
    pub models: ModelReceiver,
    pub shutdown: Shutdown,
}

/// Starts the hub that schedules checks and judges reports; its checkers connect through
/// [`HdsServer`] on the xDS port.
pub fn spawn(context: HdsContext) -> (Arc<HdsHub>, Task) {
    let hub = HdsHub::new(context.config, context.metrics);
    let task = tokio::spawn({
        let hub = hub.clone();
        async move {
            run(hub, context.models, context.shutdown).await;
            Ok(())
        }
    });
    (hub, task)
}
