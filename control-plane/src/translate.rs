//! Pure translation of the resolved [`Model`] into Envoy resources.

mod cluster;
mod eds_wire;
mod endpoints;

pub use cluster::{cluster, hds_can_check, health_check};
pub use eds_wire::ClusterLoadAssignment;
pub use endpoints::{METADATA_FILTER, load_assignment};

use crate::model::{CheckVerdicts, Model};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;

/// Who runs the active health checks a HealthProbe asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ActiveHealthChecks {
    /// Every sidecar probes every endpoint of its clusters (CDS `health_checks`).
    #[default]
    Cds,
    /// Only assigned HDS checkers probe; sidecars learn the verdict from EDS `health_status`.
    Hds,
    /// Sidecars probe and HDS verdicts are published too.
    Both,
}

impl ActiveHealthChecks {
    pub fn uses_hds(self) -> bool {
        self != Self::Cds
    }
}

/// Switches that change what Envoy is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    pub active_health_checks: ActiveHealthChecks,
    /// Send not-ready endpoints as UNHEALTHY instead of leaving them out.
    pub send_unhealthy_endpoints: bool,
    /// Add `typed_filter_metadata["edgexds"]` beside the Struct metadata.
    pub typed_metadata: bool,
}

/// One Cluster per Service port, in model order.
pub fn clusters(model: &Model, options: TranslateOptions) -> impl Iterator<Item = Cluster> + '_ {
    model.ports().map(move |port| cluster(port, options.active_health_checks))
}

/// One ClusterLoadAssignment per Service port, in model order; Kubernetes-ready endpoints
/// that active checks found failing (`verdicts`) are sent UNHEALTHY.
pub fn load_assignments<'a>(
    model: &'a Model,
    options: TranslateOptions,
    verdicts: &'a CheckVerdicts,
) -> impl Iterator<Item = ClusterLoadAssignment> + 'a {
    model.ports().map(move |port| load_assignment(port, options, verdicts))
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
