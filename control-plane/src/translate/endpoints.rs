//! A Service port's endpoints become one ClusterLoadAssignment, grouped by zone,
//! with the effective probe values as endpoint metadata; for a Service that asks to keep
//! traffic close, one per client place, with the client's node, zone and the rest as
//! priorities.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use prost::Message;
use prost::bytes::Bytes;

use super::TranslateOptions;
use super::eds_wire::{
    Address, Any, ClusterLoadAssignment, Endpoint, Kind, LbEndpoint, Locality, LocalityLbEndpoints, Metadata,
    SocketAddress, Struct, UInt32Value, Value,
};
use crate::api::v1alpha1::EndpointExtension;
use crate::model::{
    CheckVerdicts, EndpointHealth, ObjectKey, Place, ProbePolicy, ResolvedEndpoint, ResolvedPort, TrafficDistribution,
};

/// The filter name under which endpoint metadata is published.
pub const METADATA_FILTER: &str = "edgexds";
const EXTENSION_TYPE_URL: &str = "type.googleapis.com/edgexds.v1alpha1.EndpointExtension";

/// The assignment every client gets, whatever its place: every endpoint at priority 0.
/// `verdicts` is an overlay: the model itself is resolved without them, so a verdict change
/// re-translates only the load assignments it touches.
pub fn load_assignment(
    port: &ResolvedPort,
    options: &TranslateOptions,
    verdicts: &CheckVerdicts,
    preference: Option<TrafficDistribution>,
) -> ClusterLoadAssignment {
    assemble(port, options, verdicts, preference.is_some(), |_| 0)
}

/// The assignment for clients at `place` of a Service that asks for `preference`, or
/// `None` when it would be the shared one (every endpoint in one tier): then clients at
/// `place` share it, and no variant is kept.
///
/// Tiers, as `trafficDistribution` defines them: for `PreferSameZone`, the client's zone,
/// then the rest; for `PreferSameNode`, its node, its zone, then the rest. Where the
/// EndpointSlice controller hinted every endpoint, the hints decide what is "the client's"
/// as kube-proxy reads them; otherwise each endpoint's own zone and node do. Empty tiers are
/// skipped, so priorities are contiguous from 0, as gRPC requires.
pub fn load_assignment_at(
    port: &ResolvedPort,
    options: &TranslateOptions,
    verdicts: &CheckVerdicts,
    preference: TrafficDistribution,
    place: &Place,
) -> Option<ClusterLoadAssignment> {
    let zone_hinted = port.endpoints.iter().all(|e| !e.hints.for_zones.is_empty());
    let node_hinted = port.endpoints.iter().all(|e| !e.hints.for_nodes.is_empty());
    let is = |mine: Option<&str>, own: Option<&str>, hinted: bool, hints: &[String]| match mine {
        None => false,
        Some(mine) if hinted => hints.iter().any(|h| h == mine),
        Some(mine) => own == Some(mine),
    };
    let tier = |e: &ResolvedEndpoint| {
        let same_zone = is(place.zone.as_deref(), e.zone.as_deref(), zone_hinted, &e.hints.for_zones);
        let same_node = is(place.node.as_deref(), e.node_name.as_deref(), node_hinted, &e.hints.for_nodes);
        match preference {
            TrafficDistribution::PreferSameZone => u32::from(!same_zone),
            TrafficDistribution::PreferSameNode if same_node => 0,
            TrafficDistribution::PreferSameNode => 1 + u32::from(!same_zone),
        }
    };
    let tiers: BTreeSet<u32> = port.endpoints.iter().map(tier).collect();
    if tiers.len() < 2 {
        return None;
    }
    // Contiguous from 0: the n-th tier present is priority n.
    let priority = |e: &ResolvedEndpoint| tiers.range(..tier(e)).count() as u32;
    Some(assemble(port, options, verdicts, true, priority))
}

/// `all_endpoints`: not-ready endpoints go out as UNHEALTHY instead of being left out, so
/// a priority's health (what Envoy's spill-over follows) counts them. `priority` gives
/// each endpoint's priority.
fn assemble(
    port: &ResolvedPort,
    options: &TranslateOptions,
    verdicts: &CheckVerdicts,
    all_endpoints: bool,
    priority: impl Fn(&ResolvedEndpoint) -> u32,
) -> ClusterLoadAssignment {
    let probe_key = port.probe.as_ref().map(|c| &c.probe.key);
    // Endpoints of a port mostly share a policy: encode each distinct one once.
    let mut encoded: Vec<(ProbePolicy, Bytes)> = Vec::new();
    let mut by_zone: BTreeMap<(u32, Option<&str>), Vec<LbEndpoint>> = BTreeMap::new();
    for endpoint in &port.endpoints {
        let failing =
            || verdicts.is_failing(&port.cluster_name, std::net::SocketAddr::new(endpoint.address, endpoint.port));
        let health_status = match endpoint.health {
            // Sent even without send_unhealthy_endpoints: the verdict should be visible in Envoy.
            EndpointHealth::Ready if failing() => HealthStatus::Unhealthy,
            EndpointHealth::Ready => HealthStatus::Healthy,
            EndpointHealth::Draining => HealthStatus::Draining,
            EndpointHealth::NotReady if options.send_unhealthy_endpoints || all_endpoints => HealthStatus::Unhealthy,
            EndpointHealth::NotReady => continue,
        };
        let metadata = match (probe_key, endpoint.probe) {
            (Some(key), Some(policy)) => match encoded.iter().find(|(p, _)| *p == policy) {
                Some((_, bytes)) => bytes.clone(),
                None => {
                    let bytes = Bytes::from(metadata(key, &policy, options.typed_metadata).encode_to_vec());
                    encoded.push((policy, bytes.clone()));
                    bytes
                }
            },
            _ => Bytes::new(),
        };
        let key = (priority(endpoint), endpoint.zone.as_deref());
        by_zone.entry(key).or_default().push(lb_endpoint(endpoint, health_status, metadata));
    }
    ClusterLoadAssignment {
        cluster_name: port.cluster_name.clone(),
        endpoints: by_zone
            .into_iter()
            .map(|((priority, zone), lb_endpoints)| LocalityLbEndpoints {
                // Always present, if empty: gRPC refuses a locality without one.
                locality: Some(Locality { region: String::new(), zone: zone.unwrap_or_default().to_owned() }),
                // As many shares as endpoints, so a gRPC client that picks a locality first
                // still spreads calls evenly over endpoints.
                load_balancing_weight: Some(UInt32Value {
                    value: u32::try_from(lb_endpoints.len()).unwrap_or(u32::MAX),
                }),
                lb_endpoints,
                priority,
            })
            .collect(),
    }
}

fn lb_endpoint(endpoint: &ResolvedEndpoint, health_status: HealthStatus, metadata: Bytes) -> LbEndpoint {
    LbEndpoint {
        endpoint: Some(Endpoint {
            address: Some(Address {
                socket_address: Some(SocketAddress {
                    address: endpoint.address.to_string(),
                    port_value: u32::from(endpoint.port),
                }),
            }),
            hostname: endpoint.hostname.clone().unwrap_or_default(),
        }),
        health_status: health_status as i32,
        metadata,
    }
}

fn metadata(probe: &ObjectKey, policy: &ProbePolicy, typed: bool) -> Metadata {
    let number = |n: u32| Value { kind: Some(Kind::Number(f64::from(n))) };
    let fields = BTreeMap::from([
        ("probe".to_owned(), Value { kind: Some(Kind::String(probe.to_string())) }),
        ("probe_interval_ms".to_owned(), number(policy.interval_ms)),
        ("failure_threshold".to_owned(), number(policy.failure_threshold)),
        ("success_threshold".to_owned(), number(policy.success_threshold)),
        ("timeout_ms".to_owned(), number(policy.timeout_ms)),
    ]);
    let mut metadata = Metadata {
        filter_metadata: BTreeMap::from([(METADATA_FILTER.to_owned(), Struct { fields })]),
        typed_filter_metadata: BTreeMap::new(),
    };
    if typed {
        let extension = EndpointExtension {
            probe: probe.to_string(),
            probe_interval_ms: policy.interval_ms,
            failure_threshold: policy.failure_threshold,
            success_threshold: policy.success_threshold,
            timeout_ms: policy.timeout_ms,
        };
        metadata.typed_filter_metadata.insert(
            METADATA_FILTER.to_owned(),
            Any { type_url: EXTENSION_TYPE_URL.to_owned(), value: prost::Message::encode_to_vec(&extension) },
        );
    }
    metadata
}
