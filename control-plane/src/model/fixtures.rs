//! Builders for model inputs, shared by the tests of every layer.

use std::sync::Arc;

use super::{
    AddressType, EndpointConditions, EndpointSlice, HealthProbe, ObjectKey, PortProtocol, Service, ServicePort,
    SliceEndpoint, SlicePort, SourceState, TargetPort,
};
// Probes are built the way every source builds them, through the CRD's validation.
use crate::kubernetes::crd::{HealthProbeSpec, TargetRef};
use crate::kubernetes::probe_spec;

pub(crate) fn service(ns: &str, name: &str, ports: &[(&str, u16)]) -> Service {
    Service {
        key: ObjectKey::new(ns, name),
        ports: ports
            .iter()
            .map(|(n, p)| ServicePort {
                name: n.to_string(),
                port: *p,
                protocol: PortProtocol::Tcp,
                target_port: TargetPort::Number(p + 8000),
                app_protocol: Default::default(),
            })
            .collect(),
        external_name: false,
        traffic_distribution: None,
    }
}

pub(crate) fn endpoint(ip: &str, ready: bool, zone: &str) -> SliceEndpoint {
    SliceEndpoint {
        address: ip.parse().unwrap(),
        conditions: EndpointConditions { ready: Some(ready), serving: None, terminating: None },
        zone: Some(zone.to_string()),
        node_name: Some(format!("node-{zone}")),
        pod_name: Some(format!("pod-{ip}")),
        hostname: None,
        hints: Default::default(),
    }
}

pub(crate) fn slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: Vec<SliceEndpoint>,
) -> EndpointSlice {
    EndpointSlice {
        key: ObjectKey::new(ns, name),
        service_name: Some(service.to_string()),
        address_type: AddressType::Ipv4,
        ports: ports
            .iter()
            .map(|(n, p)| SlicePort { name: n.to_string(), port: *p, protocol: PortProtocol::Tcp })
            .collect(),
        endpoints,
    }
}

pub(crate) fn probe(ns: &str, name: &str, created: &str, spec: HealthProbeSpec) -> HealthProbe {
    let key = ObjectKey::new(ns, name);
    let valid = probe_spec::validate(&key, &spec).map(Arc::new);
    HealthProbe { key, created: Some(created.to_string()), generation: Some(1), valid }
}

pub(crate) fn probe_spec(service: &str, port: Option<i64>) -> HealthProbeSpec {
    HealthProbeSpec {
        target_ref: TargetRef { kind: "Service".into(), name: service.into() },
        port,
        ..Default::default()
    }
}

pub(crate) fn state(services: Vec<Service>, slices: Vec<EndpointSlice>, probes: Vec<HealthProbe>) -> SourceState {
    SourceState {
        services: services.into_iter().map(|s| (s.key.clone(), Arc::new(s))).collect(),
        slices: slices.into_iter().map(|s| (s.key.clone(), Arc::new(s))).collect(),
        probes: probes.into_iter().map(|p| (p.key.clone(), Arc::new(p))).collect(),
        nodes: Default::default(),
        routes: Default::default(),
        refused: Default::default(),
    }
}
