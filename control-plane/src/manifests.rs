//! The manifests directory source: files parsed and validated as the API server
//! would, watched for changes, with each file's last good content kept.
//!
//! Imports: kubernetes (the API types and their conversion, so a manifest is read as the
//! API server reads it), pipeline (the source interface it publishes into).

pub mod dir;
mod file_events;
pub mod parse;

use std::path::PathBuf;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::pipeline::{SourceMetrics, StateSender};
use crate::shutdown::{Shutdown, Task};

/// The manifests source's own metrics.
#[derive(Clone, Default)]
pub struct ManifestMetrics {
    /// Scans of the directory (none while nothing changes).
    pub scans: Counter,
}

impl ManifestMetrics {
    pub fn register(root: &mut Registry) -> Self {
        let metrics = Self::default();
        root.register(
            "manifest_scans",
            "Scans of the manifests directory (none while nothing changes)",
            metrics.scans.clone(),
        );
        metrics
    }
}

/// What the manifests source needs: the directory, and where to publish what it holds.
pub struct ManifestsContext {
    pub dir: PathBuf,
    pub states: StateSender,
    pub metrics: SourceMetrics,
    pub scans: ManifestMetrics,
    pub shutdown: Shutdown,
}

/// Starts watching the directory; the task ends on shutdown, or when the directory cannot
/// be read before anything was loaded.
pub fn spawn(context: ManifestsContext) -> Task {
    tokio::spawn(dir::run(context))
}
