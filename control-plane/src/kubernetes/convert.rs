//! Converts Kubernetes API objects into model objects; every source goes through here.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::discovery::v1::EndpointSlice as KubeEndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use std::sync::Arc;

use crate::kubernetes::crd::{HealthProbe as KubeHealthProbe, HealthProbeSpec, HealthProbeStatus};
use crate::kubernetes::probe_spec;
use crate::model::{
    AddressType, AppProtocol, EndpointConditions, EndpointHints, EndpointSlice, FieldError, HealthProbe, Node,
    ObjectKey, PortProtocol, Service, ServicePort, SliceEndpoint, SlicePort, TargetPort, TrafficDistribution,
};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The zone a Node is in, as the kubelet or the cloud provider labels it.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Topology Aware Routing's switch (`Auto`): the controller's zone hints, which
/// kube-proxy follows as it follows `trafficDistribution: PreferSameZone`.
const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";

fn error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

/// The name rules the API server applies to an object's name (apimachinery's validation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1035 label: Services.
    Dns1035Label,
    /// RFC 1123 subdomain: EndpointSlices and custom resources.
    Dns1123Subdomain,
}

/// The object's key; `default_namespace` stands in where a manifest leaves it out, as kubectl does.
/// Names and namespaces must pass the rules the API server enforces, so a manifest cannot
/// hold what a cluster could not.
pub fn object_key(meta: &ObjectMeta, default_namespace: &str, rule: NameRule) -> Result<ObjectKey, FieldError> {
    let name = meta.name.as_deref().filter(|n| !n.is_empty()).ok_or_else(|| error("metadata.name", "is required"))?;
    let namespace = meta.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(default_namespace);
    check_name("metadata.namespace", namespace, NameRule::Dns1035Label, 63, true)?;
    match rule {
        NameRule::Dns1035Label => check_name("metadata.name", name, rule, 63, false)?,
        NameRule::Dns1123Subdomain => check_name("metadata.name", name, rule, 253, false)?,
    }
    Ok(ObjectKey::new(namespace, name))
}

const SHOWN_BYTES: usize = 64;

/// A value for a message, cut short so hostile input cannot flood logs.
pub fn shorten(value: &str) -> String {
    if value.len() > SHOWN_BYTES {
        format!("{:?}... ({} bytes)", crate::model::limits::text_prefix(value, SHOWN_BYTES), value.len())
    } else {
        value.to_owned()
    }
}

fn quoted(value: &str) -> String {
    if value.len() > SHOWN_BYTES { shorten(value) } else { format!("{value:?}") }
}

/// Checks `value` as a DNS subdomain (RFC 1123, at most 253 characters): a hostname a route
/// rewrites or redirects to, say.
pub fn dns_subdomain(field: &str, value: &str) -> Result<(), FieldError> {
    check_name(field, value, NameRule::Dns1123Subdomain, 253, false)
}

/// Checks `value` against a DNS name rule; `digit_first` allows RFC 1123 label starts (namespaces).
fn check_name(field: &str, value: &str, rule: NameRule, max: usize, digit_first: bool) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(error(field, format!("{} must be no more than {max} characters", quoted(value))));
    }
    let label_ok = |label: &str, first_letter: bool| {
        let bytes = label.as_bytes();
        let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes.iter().all(inner)
            && (bytes[0].is_ascii_lowercase() || (!first_letter && bytes[0].is_ascii_digit()))
            && bytes[bytes.len() - 1] != b'-'
    };
    let ok = match rule {
        NameRule::Dns1035Label => label_ok(value, !digit_first),
        NameRule::Dns1123Subdomain => value.split('.').all(|label| label_ok(label, false)),
    };
    if ok {
        Ok(())
    } else {
        let what = match rule {
            NameRule::Dns1035Label if digit_first => "an RFC 1123 label (lower-case letters, digits and '-')",
            NameRule::Dns1035Label => "an RFC 1035 label (lower-case letters, digits and '-', starting with a letter)",
            NameRule::Dns1123Subdomain => "an RFC 1123 subdomain (lower-case letters, digits, '-' and '.')",
        };
        Err(error(field, format!("{} must be {what}", quoted(value))))
    }
}

fn port_number(field: &str, value: i32) -> Result<u16, FieldError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| error(field, format!("{value} is not a port number (1..=65535)")))
}

fn protocol(field: &str, value: Option<&str>) -> Result<PortProtocol, FieldError> {
    PortProtocol::parse(value).ok_or_else(|| error(field, format!("unknown protocol {value:?}")))
}

pub fn service(object: &KubeService, default_namespace: &str) -> Result<Service, FieldError> {
    let key = object_key(&object.metadata, default_namespace, NameRule::Dns1035Label)?;
    let spec = object.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = |f: &str| format!("spec.ports[{i}].{f}");
            let port = port_number(&field("port"), p.port)?;
            let target_port = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => TargetPort::Number(port_number(&field("targetPort"), *n)?),
                Some(IntOrString::String(name)) => TargetPort::Name(name.clone()),
            };
            Ok(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port,
                protocol: protocol(&field("protocol"), p.protocol.as_deref())?,
                target_port,
                app_protocol: AppProtocol::parse(p.app_protocol.as_deref()),
            })
        })
        .collect::<Result<Vec<_>, FieldError>>()?;
    check_ports(&ports)?;
    let annotations = object.metadata.annotations.as_ref();
    let topology_mode = annotations.and_then(|a| a.get(TOPOLOGY_MODE_ANNOTATION)).map(String::as_str);
    let traffic_distribution = match (spec.traffic_distribution.as_deref(), topology_mode) {
        (Some(value), _) => TrafficDistribution::parse(value),
        (None, Some("Auto" | "auto")) => Some(TrafficDistribution::PreferSameZone),
        (None, _) => None,
    };
    Ok(Service { key, ports, external_name: spec.type_.as_deref() == Some("ExternalName"), traffic_distribution })
}

/// A Node's name and zone label: all of a Node that matters here, so its metadata suffices.
pub fn node(meta: &ObjectMeta) -> Result<Node, FieldError> {
    let name = meta.name.as_deref().filter(|n| !n.is_empty()).ok_or_else(|| error("metadata.name", "is required"))?;
    check_name("metadata.name", name, NameRule::Dns1123Subdomain, 253, false)?;
    let key = ObjectKey::new("", name);
    let zone = meta.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).filter(|z| !z.is_empty());
    Ok(Node { key, zone: zone.map(|z| Arc::from(z.as_str())) })
}

/// The rules the API server applies across a Service's ports: names required when there
/// are several, each a DNS label, no name or (port, protocol) twice, and a named target port
/// an IANA service name. A Service breaking them would claim one route domain twice, which
/// makes Envoy reject the shared outbound route for every Service.
fn check_ports(ports: &[ServicePort]) -> Result<(), FieldError> {
    let mut names = std::collections::BTreeSet::new();
    let mut numbers = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}]{f}");
        if port.name.is_empty() && ports.len() > 1 {
            return Err(error(field(".name"), "Required value: each port needs a name when there are several"));
        }
        if !port.name.is_empty() {
            check_name(&field(".name"), &port.name, NameRule::Dns1035Label, 63, true)?;
            if !names.insert(port.name.as_str()) {
                return Err(error(field(".name"), format!("Duplicate value: {:?}", port.name)));
            }
        }
        let protocol = match port.protocol {
            PortProtocol::Tcp => "TCP",
            PortProtocol::Udp => "UDP",
            PortProtocol::Sctp => "SCTP",
        };
        if !numbers.insert((port.port, port.protocol)) {
            return Err(error(field(""), format!("Duplicate value: port {} protocol {protocol}", port.port)));
        }
        if let TargetPort::Name(name) = &port.target_port
            && !is_iana_service_name(name)
        {
            return Err(error(
                field(".targetPort"),
                format!(
                    "{} must be an IANA service name (at most 15 lower-case letters, digits and '-', with a letter)",
                    quoted(name)
                ),
            ));
        }
    }
    Ok(())
}

/// An IANA service name, as Kubernetes checks a named port.
fn is_iana_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 15
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.iter().any(u8::is_ascii_lowercase)
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--")
}

pub fn slice(object: &KubeEndpointSlice, default_namespace: &str) -> Result<EndpointSlice, FieldError> {
    let key = object_key(&object.metadata, default_namespace, NameRule::Dns1123Subdomain)?;
    let address_type = match object.address_type.as_str() {
        "IPv4" => AddressType::Ipv4,
        "IPv6" => AddressType::Ipv6,
        "FQDN" => AddressType::Fqdn,
        other => return Err(error("addressType", format!("unknown address type {other:?}"))),
    };
    let ports = object
        .ports
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, p)| {
            // A port without a number means "all ports" (headless, no ports): nothing to route.
            let number = p.port?;
            Some((|| {
                Ok(SlicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: port_number(&format!("ports[{i}].port"), number)?,
                    protocol: protocol(&format!("ports[{i}].protocol"), p.protocol.as_deref())?,
                })
            })())
        })
        .collect::<Result<_, FieldError>>()?;
    let endpoints = if address_type == AddressType::Fqdn {
        Vec::new()
    } else {
        object
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let first = e
                    .addresses
                    .first()
                    .ok_or_else(|| error(format!("endpoints[{i}].addresses"), "must hold at least one address"))?;
                let address: IpAddr = first.parse().map_err(|_| {
                    error(format!("endpoints[{i}].addresses[0]"), format!("{first:?} is not an IP address"))
                })?;
                // The API server refuses an address of the other family than the slice's.
                let family_agrees = match address_type {
                    AddressType::Ipv4 => address.is_ipv4(),
                    AddressType::Ipv6 => address.is_ipv6(),
                    AddressType::Fqdn => true,
                };
                if !family_agrees {
                    return Err(error(
                        format!("endpoints[{i}].addresses[0]"),
                        format!("{first:?} is not an address of the slice's addressType {}", object.address_type),
                    ));
                }
                let conditions = e.conditions.as_ref().map_or_else(EndpointConditions::default, |c| {
                    EndpointConditions { ready: c.ready, serving: c.serving, terminating: c.terminating }
                });
                let pod_name = e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Pod"))
                    .and_then(|r| r.name.clone());
                Ok(SliceEndpoint {
                    address,
                    conditions,
                    zone: e.zone.clone(),
                    node_name: e.node_name.clone(),
                    pod_name,
                    hostname: e.hostname.clone(),
                    hints: e.hints.as_ref().map_or_else(EndpointHints::default, |h| EndpointHints {
                        for_zones: h.for_zones.iter().flatten().map(|z| z.name.clone()).collect(),
                        for_nodes: h.for_nodes.iter().flatten().map(|n| n.name.clone()).collect(),
                    }),
                })
            })
            .collect::<Result<_, FieldError>>()?
    };
    Ok(EndpointSlice {
        service_name: object.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).cloned(),
        key,
        address_type,
        ports,
        endpoints,
    })
}

/// The probe, validated; its spec's problems are kept in it, for its status to report.
pub fn probe(object: &KubeHealthProbe, default_namespace: &str) -> Result<HealthProbe, FieldError> {
    let key = object_key(&object.metadata, default_namespace, NameRule::Dns1123Subdomain)?;
    let valid = probe_spec::validate(&key, &object.spec).map(Arc::new);
    Ok(HealthProbe {
        key,
        created: object.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        generation: object.metadata.generation,
        valid,
    })
}

/// HealthProbes are watched untyped, so one object that does not fit the Rust type is
/// reported on its own instead of failing the whole list.
/// Also returns the status the API server holds, for the status writer to compare with.
pub fn probe_from_dynamic(
    object: &kube::api::DynamicObject,
    default_namespace: &str,
) -> Result<(HealthProbe, Option<HealthProbeStatus>), FieldError> {
    let spec: HealthProbeSpec = serde_json::from_value(object.data.get("spec").cloned().unwrap_or_default())
        .map_err(|e| error("spec", e.to_string()))?;
    // A status we cannot read is simply rewritten.
    let status = object.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok());
    let key = object_key(&object.metadata, default_namespace, NameRule::Dns1123Subdomain)?;
    let valid = probe_spec::validate(&key, &spec).map(Arc::new);
    let probe = HealthProbe {
        key,
        created: object.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        generation: object.metadata.generation,
        valid,
    };
    Ok((probe, status))
}
