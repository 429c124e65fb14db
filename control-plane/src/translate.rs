//! Pure translation of the resolved [`Model`] into Envoy resources.

mod cluster;
mod eds_wire;
mod endpoints;
mod listeners;
mod routes;

pub use cluster::{cluster, hds_can_check, health_check};
pub use eds_wire::ClusterLoadAssignment;
pub use endpoints::{METADATA_FILTER, load_assignment};
pub use listeners::{OUTBOUND, grpc_listener, outbound_listener};
pub use routes::{grpc_names, grpc_routes, outbound_routes, virtual_hosts};

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::model::{CheckVerdicts, Model, ResolvedService};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

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

/// One Cluster per Service port, in model order.
pub fn clusters<'a>(model: &'a Model, options: &TranslateOptions) -> impl Iterator<Item = Cluster> + 'a {
    let mode = options.active_health_checks;
    model.ports().map(move |port| cluster(port, mode))
}

/// A Listener, and whether only clients that name it get it (gRPC api_listeners: an Envoy
/// asking for every listener could not take them).
pub struct TranslatedListener {
    pub listener: Listener,
    pub named_only: bool,
}

/// The sidecar's outbound listener, then two gRPC listeners per HTTP port.
pub fn listeners<'a>(model: &'a Model, options: &'a TranslateOptions) -> impl Iterator<Item = TranslatedListener> + 'a {
    let outbound = TranslatedListener { listener: outbound_listener(options.outbound_listener), named_only: false };
    std::iter::once(outbound).chain(model.services.values().flat_map(move |s| grpc_listeners(s, options)))
}

/// The two gRPC listeners of each HTTP port of one Service.
pub fn grpc_listeners<'a>(
    service: &'a ResolvedService,
    options: &'a TranslateOptions,
) -> impl Iterator<Item = TranslatedListener> + 'a {
    grpc_targets(service, options)
        .map(|(name, _)| TranslatedListener { listener: grpc_listener(&name), named_only: true })
}

/// Each name a gRPC client dials one Service by, with the cluster it leads to.
fn grpc_targets<'a>(
    service: &'a ResolvedService,
    options: &'a TranslateOptions,
) -> impl Iterator<Item = (String, &'a str)> + 'a {
    routes::http_ports_of(service).flat_map(move |port| {
        grpc_names(&service.key, port.port.port, &options.cluster_domain)
            .map(move |name| (name, port.cluster_name.as_str()))
    })
}

/// The outbound routes, then the routes of each gRPC listener, under the listener's name.
pub fn route_configurations<'a>(
    model: &'a Model,
    options: &'a TranslateOptions,
) -> impl Iterator<Item = RouteConfiguration> + 'a {
    let outbound = outbound_routes(model, &options.cluster_domain);
    std::iter::once(outbound).chain(model.services.values().flat_map(move |s| grpc_route_configurations(s, options)))
}

/// The routes of each gRPC listener of one Service.
pub fn grpc_route_configurations<'a>(
    service: &'a ResolvedService,
    options: &'a TranslateOptions,
) -> impl Iterator<Item = RouteConfiguration> + 'a {
    grpc_targets(service, options).map(|(name, cluster)| grpc_routes(&name, cluster))
}

/// One ClusterLoadAssignment per Service port, in model order; Kubernetes-ready endpoints
/// that active checks found failing (`verdicts`) are sent UNHEALTHY.
pub fn load_assignments<'a>(
    model: &'a Model,
    options: &'a TranslateOptions,
    verdicts: &'a CheckVerdicts,
) -> impl Iterator<Item = ClusterLoadAssignment> + 'a {
    model.ports().map(move |port| load_assignment(port, options, verdicts))
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "translate/routing_tests.rs"]
mod routing_tests;
