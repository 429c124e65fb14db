//! Pure translation of the resolved [`Model`] into Envoy resources.

mod cluster;
mod contribution;
mod eds_wire;
mod endpoints;
mod http_routes;
mod listeners;
mod routes;

pub use cluster::{cluster, hds_can_check, health_check};
pub use contribution::{Contribution, contribution, localized};
pub use eds_wire::ClusterLoadAssignment;
pub use endpoints::{METADATA_FILTER, load_assignment, load_assignment_at};
pub use listeners::{OUTBOUND, grpc_listener, outbound_listener};
pub use routes::{grpc_names, grpc_routes, outbound_routes, virtual_hosts};

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::model::{ResolvedPort, ResolvedService};

/// Who runs the active health checks a HealthProbe asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// Switches that change what clients are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    pub active_health_checks: ActiveHealthChecks,
    /// Send not-ready endpoints as UNHEALTHY instead of leaving them out.
    pub send_unhealthy_endpoints: bool,
    /// Add `typed_filter_metadata["edgexds"]` beside the Struct metadata.
    pub typed_metadata: bool,
    /// Where a sidecar's outbound listener listens.
    pub outbound_listener: SocketAddr,
    /// The cluster's DNS domain, for Service names and gRPC targets.
    pub cluster_domain: Arc<str>,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            active_health_checks: ActiveHealthChecks::default(),
            send_unhealthy_endpoints: false,
            typed_metadata: false,
            outbound_listener: SocketAddr::from((Ipv4Addr::LOCALHOST, 15001)),
            cluster_domain: Arc::from("cluster.local"),
        }
    }
}

/// Each name a gRPC client dials one Service by, with the port it leads to.
fn grpc_targets<'a>(
    service: &'a ResolvedService,
    options: &'a TranslateOptions,
) -> impl Iterator<Item = (String, &'a ResolvedPort)> + 'a {
    routes::http_ports_of(service).flat_map(move |port| {
        grpc_names(&service.key, port.port.port, &options.cluster_domain).map(move |name| (name, port))
    })
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "translate/routing_tests.rs"]
mod routing_tests;

#[cfg(test)]
#[path = "translate/locality_tests.rs"]
mod locality_tests;

#[cfg(test)]
#[path = "translate/http_routes_tests.rs"]
mod http_routes_tests;
