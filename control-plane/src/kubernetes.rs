//! Everything that speaks to the Kubernetes API: the HealthProbe CRD, conversion of API
//! objects into the model, the watches and their store, and the status writers (HealthProbe
//! conditions, and the route `status.parents` entries for Service parents).
//!
//! Imports: pipeline (the source interface it publishes into, and the models and verdicts
//! the status writer reports).

mod conditions;
pub mod convert;
pub mod crd;
pub mod gateway;
pub mod metrics;
pub mod probe_conditions;
pub mod probe_spec;
pub mod route_conditions;
pub mod route_status_writer;
pub mod status_writer;
pub mod store;
pub mod watch;

pub use watch::KubernetesConfig;

use crate::pipeline::{ModelReceiver, SourceMetrics, StateSender, VerdictReceiver};
use crate::shutdown::{Shutdown, Task};

/// What the Kubernetes source needs: where to watch, where to publish, and what it reports
/// probe status from.
pub struct KubernetesContext {
    pub config: KubernetesConfig,
    pub states: StateSender,
    /// The resolved models, whose probe outcomes become HealthProbe status.
    pub models: ModelReceiver,
    /// Active-check verdicts, counted into each probe's healthy and unhealthy endpoints.
    pub verdicts: Option<VerdictReceiver>,
    pub source_metrics: SourceMetrics,
    pub metrics: metrics::KubeMetrics,
    pub shutdown: Shutdown,
}

/// Starts the watches and the status writer; the task ends when either does.
pub fn spawn(context: KubernetesContext) -> Task {
    let KubernetesContext { config, states, models, verdicts, source_metrics, metrics, shutdown } = context;
    let (probes, probes_rx) = tokio::sync::watch::channel(Default::default());
    let (routes, routes_rx) = tokio::sync::watch::channel(Default::default());
    let client = config.client.clone();
    let writer = status_writer::run(client.clone(), models, verdicts, probes_rx, metrics.clone(), shutdown.clone());
    let route_writer =
        route_status_writer::run(client, states.subscribe(), routes_rx, metrics.clone(), shutdown.clone());
    let held = watch::HeldSenders { probes, routes };
    let watching = watch::run(config, states, held, source_metrics, metrics, shutdown);
    tokio::spawn(async move {
        tokio::select! {
            watched = watching => watched,
            () = writer => Ok(()),
            () = route_writer => Ok(()),
        }
    })
}
