//! Resolves what the sources saw into clusters, endpoints and probe coverage.
//!
//! Pure and deterministic: the same [`SourceState`] always gives the same [`Model`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::SourceState;
use super::object::{AddressType, ObjectKey, PortProtocol, Service, ServicePort, Slice};
use super::probe::{EndpointFacts, ProbePolicy, ValidProbe};

/// What Envoy should think of an endpoint, from Kubernetes conditions alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointHealth {
    Ready,
    /// Serving but terminating: finish in-flight work, take no new connections.
    Draining,
    NotReady,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    pub address: IpAddr,
    pub port: u16,
    pub health: EndpointHealth,
    pub zone: Option<String>,
    pub node_name: Option<String>,
    pub pod_name: Option<String>,
    pub hostname: Option<String>,
    /// The effective probe values for this endpoint, when a probe covers its port.
    pub probe: Option<ProbePolicy>,
    /// Ready in Kubernetes, but active health checks find it failing.
    pub failing_check: bool,
}

/// Which probe covers a Service port.
#[derive(Clone, Debug)]
pub struct ProbeCoverage {
    pub probe: Arc<ValidProbe>,
}

#[derive(Clone, Debug)]
pub struct ResolvedPort {
    pub cluster_name: String,
    pub port: ServicePort,
    pub probe: Option<ProbeCoverage>,
    /// Sorted by address then port; one entry per address even when slices repeat it.
    pub endpoints: Vec<ResolvedEndpoint>,
}

#[derive(Clone, Debug)]
pub struct ResolvedService {
    pub key: ObjectKey,
    pub ports: Vec<ResolvedPort>,
}

/// Why a probe's target could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefProblem {
    /// A CamelCase condition reason.
    pub reason: &'static str,
    pub message: String,
}

/// The outcome of one HealthProbe, as its status conditions will say.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeStatus {
    pub generation: Option<i64>,
    /// `Err` holds the precise validation error.
    pub accepted: Result<(), String>,
    /// `None` when the spec was not valid enough to look for its target.
    pub resolved_refs: Option<Result<(), RefProblem>>,
    /// The message naming the probe that already covers a port this one targets.
    pub conflicted: Option<String>,
    pub matched_endpoints: usize,
    /// Ready and passing active checks (or unchecked).
    pub healthy_endpoints: usize,
    /// Not ready in Kubernetes, or failing active checks.
    pub unhealthy_endpoints: usize,
}

/// An object that was ignored, and why; sources log each one once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    pub object: String,
    pub message: String,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub services: Vec<ResolvedService>,
    pub probes: BTreeMap<ObjectKey, ProbeStatus>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Model {
    pub fn ports(&self) -> impl Iterator<Item = &ResolvedPort> {
        self.services.iter().flat_map(|s| s.ports.iter())
    }

    /// Each probe's healthy and unhealthy endpoints, from readiness and any failing checks marked.
    pub(super) fn count_health(&mut self) {
        for status in self.probes.values_mut() {
            (status.healthy_endpoints, status.unhealthy_endpoints) = (0, 0);
        }
        for service in &self.services {
            for port in &service.ports {
                let Some(status) = port.probe.as_ref().and_then(|c| self.probes.get_mut(&c.probe.key)) else {
                    continue;
                };
                for endpoint in &port.endpoints {
                    match (endpoint.health, endpoint.failing_check) {
                        (EndpointHealth::Ready, false) => status.healthy_endpoints += 1,
                        (EndpointHealth::NotReady, _) | (_, true) => status.unhealthy_endpoints += 1,
                        (EndpointHealth::Draining, false) => {}
                    }
                }
            }
        }
    }
}

pub fn cluster_name(service: &ObjectKey, port: &ServicePort) -> String {
    let suffix = match port.protocol {
        PortProtocol::Udp => "/udp",
        PortProtocol::Tcp | PortProtocol::Sctp => "",
    };
    format!("{}.{}:{}{}", service.name, service.namespace, port.port, suffix)
}

/// Resolves a source state. Kubernetes conditions alone decide health here: active-check
/// verdicts are an overlay that translation (and [`Model::apply_verdicts`]) take separately.
pub fn resolve(state: &SourceState) -> Model {
    let mut diagnostics = Vec::new();
    let mut statuses = BTreeMap::new();
    let probes = validate_probes(state, &mut statuses, &mut diagnostics);
    // By target Service, keeping age order: each port then looks only at its own Service's probes.
    let mut by_target: BTreeMap<ObjectKey, Vec<Arc<ValidProbe>>> = BTreeMap::new();
    for probe in &probes {
        by_target.entry(ObjectKey::new(&probe.key.namespace, &probe.service)).or_default().push(probe.clone());
    }
    let slices_by_service = group_slices(state, &mut diagnostics);

    let mut services = Vec::with_capacity(state.services.len());
    for service in state.services.values() {
        if service.external_name {
            diagnostics.push(Diagnostic {
                object: format!("Service {}", service.key),
                message: "ExternalName Services have no endpoints; ignored".into(),
            });
            continue;
        }
        let slices = slices_by_service.get(&service.key).map_or(&[][..], Vec::as_slice);
        let ports = service
            .ports
            .iter()
            .filter(|port| port.protocol != PortProtocol::Sctp)
            .map(|port| {
                let probes = by_target.get(&service.key).map_or(&[][..], Vec::as_slice);
                resolve_port(service, port, slices, probes, &mut statuses)
            })
            .collect();
        services.push(ResolvedService { key: service.key.clone(), ports });
    }
    resolve_refs(state, &probes, &mut statuses);
    diagnostics.sort();
    diagnostics.dedup();
    let mut model = Model { services, probes: statuses, diagnostics };
    model.count_health();
    model
}

fn validate_probes(
    state: &SourceState,
    statuses: &mut BTreeMap<ObjectKey, ProbeStatus>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Arc<ValidProbe>> {
    let mut ordered: Vec<_> = state.probes.values().collect();
    // Older probes win a contested port: creation time first, then name.
    ordered.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
    let mut valid = Vec::new();
    for probe in ordered {
        let accepted = match &probe.valid {
            Ok(v) => {
                valid.push(v.clone());
                Ok(())
            }
            Err(err) => {
                diagnostics.push(Diagnostic {
                    object: format!("HealthProbe {}", probe.key),
                    message: format!("invalid, ignored: {err}"),
                });
                Err(err.to_string())
            }
        };
        statuses.insert(
            probe.key.clone(),
            ProbeStatus {
                generation: probe.generation,
                accepted,
                resolved_refs: None,
                conflicted: None,
                matched_endpoints: 0,
                healthy_endpoints: 0,
                unhealthy_endpoints: 0,
            },
        );
    }
    valid
}

fn group_slices<'a>(state: &'a SourceState, diagnostics: &mut Vec<Diagnostic>) -> BTreeMap<ObjectKey, Vec<&'a Slice>> {
    let mut by_service: BTreeMap<ObjectKey, Vec<&Slice>> = BTreeMap::new();
    for slice in state.slices.values() {
        let object = || format!("EndpointSlice {}", slice.key);
        if slice.address_type == AddressType::Fqdn {
            diagnostics
                .push(Diagnostic { object: object(), message: "FQDN address type is not supported; ignored".into() });
            continue;
        }
        match &slice.service_name {
            Some(service) => by_service.entry(ObjectKey::new(&slice.key.namespace, service)).or_default().push(slice),
            None => diagnostics
                .push(Diagnostic { object: object(), message: "no kubernetes.io/service-name label; ignored".into() }),
        }
    }
    by_service
}

/// `probes`: the valid probes targeting this Service, oldest first.
fn resolve_port(
    service: &Service,
    port: &ServicePort,
    slices: &[&Slice],
    probes: &[Arc<ValidProbe>],
    statuses: &mut BTreeMap<ObjectKey, ProbeStatus>,
) -> ResolvedPort {
    let mut covering = probes.iter().filter(|p| p.covers_port(port.port));
    let winner = covering.next().cloned();
    for loser in covering {
        if let (Some(winner), Some(status)) = (&winner, statuses.get_mut(&loser.key)) {
            status.conflicted = Some(format!(
                "HealthProbe {} already covers Service port {}:{}",
                winner.key, service.key.name, port.port
            ));
        }
    }

    let mut endpoints = merge_endpoints(port, slices);
    if let Some(probe) = &winner {
        for endpoint in &mut endpoints {
            endpoint.probe = Some(probe.policy_for(&EndpointFacts {
                address: endpoint.address,
                zone: endpoint.zone.as_deref(),
                node_name: endpoint.node_name.as_deref(),
                pod_name: endpoint.pod_name.as_deref(),
            }));
        }
        if let Some(status) = statuses.get_mut(&probe.key) {
            status.matched_endpoints += endpoints.len();
        }
    }
    ResolvedPort {
        cluster_name: cluster_name(&service.key, port),
        port: port.clone(),
        probe: winner.map(|probe| ProbeCoverage { probe }),
        endpoints,
    }
}

/// One endpoint per address: the same pod may appear in several slices while they are rebalanced.
fn merge_endpoints(port: &ServicePort, slices: &[&Slice]) -> Vec<ResolvedEndpoint> {
    let mut merged: BTreeMap<(IpAddr, u16), ResolvedEndpoint> = BTreeMap::new();
    for slice in slices {
        let Some(slice_port) = slice.ports.iter().find(|p| p.name == port.name && p.protocol == port.protocol) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let c = endpoint.conditions;
            let health = if c.is_ready() {
                EndpointHealth::Ready
            } else if c.is_serving() && c.is_terminating() {
                EndpointHealth::Draining
            } else {
                EndpointHealth::NotReady
            };
            let candidate = ResolvedEndpoint {
                address: endpoint.address,
                port: slice_port.port,
                health,
                zone: endpoint.zone.clone(),
                node_name: endpoint.node_name.clone(),
                pod_name: endpoint.pod_name.clone(),
                hostname: endpoint.hostname.clone(),
                probe: None,
                failing_check: false,
            };
            merged
                .entry((endpoint.address, slice_port.port))
                .and_modify(|existing| {
                    // The healthiest report wins: a pod that is ready in any slice is ready.
                    if candidate.health < existing.health {
                        *existing = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
    }
    merged.into_values().collect()
}

fn resolve_refs(state: &SourceState, probes: &[Arc<ValidProbe>], statuses: &mut BTreeMap<ObjectKey, ProbeStatus>) {
    for probe in probes {
        let target = ObjectKey::new(&probe.key.namespace, &probe.service);
        let problem = |reason, message| Err(RefProblem { reason, message });
        let resolved = match state.services.get(&target) {
            None => problem("ServiceNotFound", format!("Service {target} not found")),
            Some(service) if service.external_name => {
                problem("ExternalNameService", format!("Service {target} is of type ExternalName and has no endpoints"))
            }
            Some(service) => match probe.port {
                Some(port) if !service.ports.iter().any(|p| p.port == port) => {
                    let ports: BTreeSet<u16> = service.ports.iter().map(|p| p.port).collect();
                    problem("PortNotFound", format!("Service {target} has no port {port} (ports: {ports:?})"))
                }
                _ => Ok(()),
            },
        };
        if let Some(status) = statuses.get_mut(&probe.key) {
            status.resolved_refs = Some(resolved);
        }
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
