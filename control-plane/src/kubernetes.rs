//! Everything that speaks to the Kubernetes API: the HealthProbe CRD, conversion of API
//! objects into the model, the watches and their store, probe status conditions, and
//! the status writer.
//!
//! Imports: pipeline (the source interface it publishes into, and the models and verdicts
//! the status writer reports).

pub mod convert;
pub mod crd;
pub mod gateway;
pub mod metrics;
pub mod probe_conditions;
pub mod probe_spec;
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
    let (statuses, statuses_rx) = tokio::sync::watch::channel(Default::default());
    let writer =
        status_writer::run(config.client.clone(), models, verdicts, statuses_rx, metrics.clone(), shutdown.clone());
    let watching = watch::run(config, states, statuses, source_metrics, metrics, shutdown);
    tokio::spawn(async move {
        tokio::select! {
            watched = watching => watched,
            () = writer => Ok(()),
        }
    })
}
