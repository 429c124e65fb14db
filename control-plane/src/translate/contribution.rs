//! What one Service puts into a snapshot: each resource of its own, encoded, and its
//! virtual hosts of the shared outbound route. The incremental builder and the full
//! rebuild both take a Service's part from here, so the two cannot drift apart.

use envoy_types::pb::envoy::config::route::v3::VirtualHost;
use prost::Message;

use super::{TranslateOptions, cluster, grpc_targets, listeners, load_assignment, load_assignment_at, routes};
use crate::cache::{Encoded, ResourceType};
use crate::model::{CheckVerdicts, Place, ResolvedService};

/// One Service's part of a snapshot.
#[derive(Debug, Default)]
pub struct Contribution {
    /// Its clusters, load assignments, and gRPC listeners with their routes.
    pub resources: Vec<Encoded>,
    /// Its virtual hosts of the outbound RouteConfiguration, one per HTTP port.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Endpoints across its ports.
    pub endpoints: usize,
}

/// What `service` contributes. `unique_name`: no other namespace has a Service of this
/// name, so `svc` alone may name it in the outbound route. `verdicts` is an overlay: the
/// model is resolved without it, so a verdict change re-translates only what it touches.
pub fn contribution(
    service: &ResolvedService,
    options: &TranslateOptions,
    verdicts: &CheckVerdicts,
    unique_name: bool,
) -> Contribution {
    let mut resources = Vec::new();
    for port in &service.ports {
        let cluster = cluster(port, options.active_health_checks);
        resources.push(Encoded::from((ResourceType::Cluster, cluster.name.clone(), cluster.encode_to_vec())));
    }
    for port in &service.ports {
        let assignment = load_assignment(port, options, verdicts, service.traffic_distribution);
        let body = assignment.encode_to_vec();
        resources.push(Encoded::from((ResourceType::ClusterLoadAssignment, assignment.cluster_name, body)));
    }
    for (name, port) in grpc_targets(service, options) {
        let listener = listeners::grpc_listener(&name);
        // An Envoy asking for every listener could not take a gRPC api_listener: only
        // clients that name it get it.
        resources.push(Encoded {
            ty: ResourceType::Listener,
            body: listener.encode_to_vec(),
            name: name.clone(),
            named_only: true,
        });
        let routes = routes::grpc_routes(&name, service, port);
        resources.push(Encoded::from((ResourceType::RouteConfiguration, name, routes.encode_to_vec())));
    }
    Contribution {
        resources,
        virtual_hosts: routes::virtual_hosts(service, &options.cluster_domain, unique_name),
        endpoints: service.ports.iter().map(|p| p.endpoints.len()).sum(),
    }
}

/// The load assignments `service` sends clients at `place` in place of its shared ones: none
/// for a Service without a preference, nor for a port where the place changes nothing.
pub fn localized(
    service: &ResolvedService,
    options: &TranslateOptions,
    verdicts: &CheckVerdicts,
    place: &Place,
) -> Vec<Encoded> {
    let Some(preference) = service.traffic_distribution else { return Vec::new() };
    service
        .ports
        .iter()
        .filter_map(|port| load_assignment_at(port, options, verdicts, preference, place))
        .map(|assignment| {
            let body = assignment.encode_to_vec();
            Encoded::from((ResourceType::ClusterLoadAssignment, assignment.cluster_name, body))
        })
        .collect()
}
