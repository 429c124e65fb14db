//! A Service port's endpoints become one ClusterLoadAssignment, grouped by zone,
//! with the effective probe values as endpoint metadata.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use prost::Message;
use prost::bytes::Bytes;

use super::TranslateOptions;
use super::eds_wire::{
    Address, Any, ClusterLoadAssignment, Endpoint, Kind, LbEndpoint, Locality, LocalityLbEndpoints, Metadata,
    SocketAddress, Struct, UInt32Value, Value,
};
use crate::api::v1alpha1::EndpointExtension;
use crate::model::{CheckVerdicts, EndpointHealth, ObjectKey, ProbePolicy, ResolvedEndpoint, ResolvedPort};

/// The filter name under which endpoint metadata is published.
pub const METADATA_FILTER: &str = "edgexds";
const EXTENSION_TYPE_URL: &str = "type.googleapis.com/edgexds.v1alpha1.EndpointExtension";

/// `verdicts` is an overlay: the model itself is resolved without them, so a verdict change
/// re-translates only the load assignments it touches.
pub fn load_assignment(
    port: &ResolvedPort,
    options: &TranslateOptions,
    verdicts: &CheckVerdicts,
) -> ClusterLoadAssignment {
    let probe_key = port.probe.as_ref().map(|c| &c.probe.key);
    // Endpoints of a port mostly share a policy: encode each distinct one once.
    let mut encoded: Vec<(ProbePolicy, Bytes)> = Vec::new();
    let mut by_zone: BTreeMap<Option<&str>, Vec<LbEndpoint>> = BTreeMap::new();
    for endpoint in &port.endpoints {
        let failing =
            || verdicts.is_failing(&port.cluster_name, std::net::SocketAddr::new(endpoint.address, endpoint.port));
        let health_status = match endpoint.health {
            // Sent even without send_unhealthy_endpoints: the verdict should be visible in Envoy.
            EndpointHealth::Ready if failing() => HealthStatus::Unhealthy,
            EndpointHealth::Ready => HealthStatus::Healthy,
            EndpointHealth::Draining => HealthStatus::Draining,
            EndpointHealth::NotReady if options.send_unhealthy_endpoints => HealthStatus::Unhealthy,
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
        by_zone.entry(endpoint.zone.as_deref()).or_default().push(lb_endpoint(endpoint, health_status, metadata));
    }
    ClusterLoadAssignment {
        cluster_name: port.cluster_name.clone(),
        endpoints: by_zone
            .into_iter()
            .map(|(zone, lb_endpoints)| LocalityLbEndpoints {
                // Always present, if empty: gRPC refuses a locality without one.
                locality: Some(Locality { region: String::new(), zone: zone.unwrap_or_default().to_owned() }),
                // As many shares as endpoints, so a gRPC client that picks a locality first
                // still spreads calls evenly over endpoints.
                load_balancing_weight: Some(UInt32Value {
                    value: u32::try_from(lb_endpoints.len()).unwrap_or(u32::MAX),
                }),
                lb_endpoints,
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
