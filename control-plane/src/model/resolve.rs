//! Resolves what the sources saw into clusters, endpoints and probe coverage.
//!
//! Pure and deterministic: the same [`SourceState`] always gives the same [`Model`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};

use super::SourceState;
use super::object::{AddressType, EndpointSlice, ObjectKey, PortProtocol, Service, ServicePort};
use super::probe::{EndpointFacts, HealthProbe, ProbePolicy, ValidProbe};
use super::route::HttpRoute;

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
    pub hints: super::object::EndpointHints,
    /// The effective probe values for this endpoint, when a probe covers its port.
    pub probe: Option<ProbePolicy>,
}

/// Which probe covers a Service port.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeCoverage {
    pub probe: Arc<ValidProbe>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPort {
    pub cluster_name: String,
    pub port: ServicePort,
    pub probe: Option<ProbeCoverage>,
    /// Sorted by address then port; one entry per address even when slices repeat it.
    pub endpoints: Vec<ResolvedEndpoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedService {
    pub key: ObjectKey,
    pub ports: Vec<ResolvedPort>,
    pub traffic_distribution: Option<super::TrafficDistribution>,
    /// HTTPRoutes attached to it, oldest first.
    pub routes: Vec<super::AttachedRoute>,
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
    /// Ready in Kubernetes. Active-check verdicts are not in the model: see
    /// [`Model::probe_statuses`].
    pub healthy_endpoints: usize,
    /// Not ready in Kubernetes.
    pub unhealthy_endpoints: usize,
}

/// An object that was ignored, and why; sources log each one once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    pub object: String,
    pub message: String,
}

/// The resolved model. Persistent maps, so a copy is free and an incremental update
/// ([`super::ModelIndex`]) shares everything it did not touch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    /// Services that have endpoints to offer (not ExternalName), by key.
    pub services: OrdMap<ObjectKey, Arc<ResolvedService>>,
    pub probes: OrdMap<ObjectKey, ProbeStatus>,
    pub diagnostics: OrdSet<Diagnostic>,
    /// The Nodes, as the source has them.
    pub nodes: super::Nodes,
}

impl Model {
    pub fn ports(&self) -> impl Iterator<Item = &ResolvedPort> {
        self.services.values().flat_map(|s| s.ports.iter())
    }
}

/// The healthy and unhealthy endpoints of each probe-covered port of `service`, by probe.
fn count_health_of(service: &ResolvedService, mut add: impl FnMut(&ObjectKey, usize, usize)) {
    for port in &service.ports {
        let Some(coverage) = &port.probe else { continue };
        let (mut healthy, mut unhealthy) = (0, 0);
        for endpoint in &port.endpoints {
            match endpoint.health {
                EndpointHealth::Ready => healthy += 1,
                EndpointHealth::NotReady => unhealthy += 1,
                EndpointHealth::Draining => {}
            }
        }
        add(&coverage.probe.key, healthy, unhealthy);
    }
}

/// A Service port's cluster: `name.namespace:port`, with `/udp` for UDP.
pub fn cluster_name(service: &ObjectKey, port: &ServicePort) -> String {
    let suffix = match port.protocol {
        PortProtocol::Udp => "/udp",
        PortProtocol::Tcp | PortProtocol::Sctp => "",
    };
    format!("{}.{}:{}{}", service.name, service.namespace, port.port, suffix)
}

/// The Service a [`cluster_name`] belongs to. Service names and namespaces hold no dot
/// (DNS labels), so the first dot splits them.
pub fn cluster_service(cluster: &str) -> Option<ObjectKey> {
    let (name_and_namespace, _) = cluster.rsplit_once(':')?;
    let (name, namespace) = name_and_namespace.split_once('.')?;
    Some(ObjectKey::new(namespace, name))
}

/// Resolves a source state. Kubernetes conditions alone decide health here: active-check
/// verdicts are an overlay that translation (and [`Model::apply_verdicts`]) take separately.
///
/// Everything is resolved per Service key, from that Service, its slices and the probes
/// that target it: [`super::ModelIndex`] re-resolves one key the same way.
pub fn resolve(state: &SourceState) -> Model {
    let mut model = Model { diagnostics: state.refused.clone(), nodes: state.nodes.clone(), ..Model::default() };
    let mut slices_of: BTreeMap<ObjectKey, Vec<&EndpointSlice>> = BTreeMap::new();
    let mut probes_of: BTreeMap<ObjectKey, Vec<&HealthProbe>> = BTreeMap::new();
    let mut routes_of: BTreeMap<&ObjectKey, Vec<Arc<HttpRoute>>> = BTreeMap::new();
    for route in state.routes.values() {
        let parents: BTreeSet<&ObjectKey> = route.parent_services().collect();
        for parent in parents {
            routes_of.entry(parent).or_default().push(route.clone());
        }
    }
    for service in state.services.values() {
        model.diagnostics.extend(service_diagnostic(service));
    }
    for slice in state.slices.values() {
        match slice_target(slice) {
            Ok(target) => slices_of.entry(target).or_default().push(slice),
            Err(diagnostic) => {
                model.diagnostics.insert(diagnostic);
            }
        }
    }
    for probe in state.probes.values() {
        match probe_target(probe) {
            Some(target) => probes_of.entry(target).or_default().push(probe),
            None => {
                model.probes.insert(probe.key.clone(), invalid_status(probe));
                model.diagnostics.extend(probe_diagnostic(probe));
            }
        }
    }
    let targets: BTreeSet<&ObjectKey> = state.services.keys().chain(probes_of.keys()).collect();
    for key in targets {
        let slices = slices_of.get(key).map_or(&[][..], Vec::as_slice);
        let probes = probes_of.get(key).cloned().unwrap_or_default();
        let routes = routes_of.get(key).cloned().unwrap_or_default();
        let target = Target { key, service: state.services.get(key).map(|s| &**s), slices, routes };
        let (resolved, statuses) = resolve_target(target, probes, &state.services);
        if let Some(resolved) = resolved {
            model.services.insert(key.clone(), Arc::new(resolved));
        }
        model.probes.extend(statuses);
    }
    model
}

/// Older probes win a contested port: creation time first, then name.
fn age_order(probe: &HealthProbe) -> (Option<&str>, &ObjectKey) {
    (probe.created.as_deref(), &probe.key)
}

/// The Service a valid probe targets; `None` for an invalid one.
pub(super) fn probe_target(probe: &HealthProbe) -> Option<ObjectKey> {
    probe.valid.as_ref().ok().map(|v| ObjectKey::new(&probe.key.namespace, &v.service))
}

/// The Service a slice belongs to, or why it is ignored.
pub(super) fn slice_target(slice: &EndpointSlice) -> Result<ObjectKey, Diagnostic> {
    let problem =
        |message: &str| Diagnostic { object: format!("EndpointSlice {}", slice.key), message: message.into() };
    if slice.address_type == AddressType::Fqdn {
        return Err(problem("FQDN address type is not supported; ignored"));
    }
    match &slice.service_name {
        Some(service) => Ok(ObjectKey::new(&slice.key.namespace, service)),
        None => Err(problem("no kubernetes.io/service-name label; ignored")),
    }
}

pub(super) fn service_diagnostic(service: &Service) -> Option<Diagnostic> {
    service.external_name.then(|| Diagnostic {
        object: format!("Service {}", service.key),
        message: "ExternalName Services have no endpoints; ignored".into(),
    })
}

pub(super) fn probe_diagnostic(probe: &HealthProbe) -> Option<Diagnostic> {
    let err = probe.valid.as_ref().err()?;
    Some(Diagnostic { object: format!("HealthProbe {}", probe.key), message: format!("invalid, ignored: {err}") })
}

pub(super) fn invalid_status(probe: &HealthProbe) -> ProbeStatus {
    ProbeStatus { accepted: probe.valid.as_ref().map(|_| ()).map_err(ToString::to_string), ..base_status(probe) }
}

fn base_status(probe: &HealthProbe) -> ProbeStatus {
    ProbeStatus {
        generation: probe.generation,
        accepted: Ok(()),
        resolved_refs: None,
        conflicted: None,
        matched_endpoints: 0,
        healthy_endpoints: 0,
        unhealthy_endpoints: 0,
    }
}

/// One Service key and what attaches to it: the Service itself (nothing when it is absent
/// or ExternalName), its slices and the routes whose parent it is.
pub(super) struct Target<'a> {
    pub key: &'a ObjectKey,
    pub service: Option<&'a Service>,
    pub slices: &'a [&'a EndpointSlice],
    pub routes: Vec<Arc<HttpRoute>>,
}

/// Resolves one Service key, and the status of each valid probe targeting it (`probes`, any
/// order). `services`: every Service, for the backends of its routes.
pub(super) fn resolve_target(
    target: Target<'_>,
    mut probes: Vec<&HealthProbe>,
    services: &super::ObjectMap<Service>,
) -> (Option<ResolvedService>, BTreeMap<ObjectKey, ProbeStatus>) {
    let Target { key, service, slices, routes } = target;
    probes.sort_by(|a, b| age_order(a).cmp(&age_order(b)));
    let valid: Vec<Arc<ValidProbe>> = probes.iter().filter_map(|p| p.valid.as_ref().ok().cloned()).collect();
    let mut statuses: BTreeMap<ObjectKey, ProbeStatus> =
        probes.iter().map(|probe| (probe.key.clone(), base_status(probe))).collect();
    for probe in &valid {
        if let Some(status) = statuses.get_mut(&probe.key) {
            status.resolved_refs = Some(resolve_ref(key, service, probe));
        }
    }
    let resolved = service.filter(|s| !s.external_name).map(|service| {
        let ports = service
            .ports
            .iter()
            .filter(|port| port.protocol != PortProtocol::Sctp)
            .map(|port| resolve_port(service, port, slices, &valid, &mut statuses))
            .collect();
        ResolvedService {
            key: key.clone(),
            ports,
            traffic_distribution: service.traffic_distribution,
            routes: attach(routes, services),
        }
    });
    if let Some(resolved) = &resolved {
        count_health_of(resolved, |key, healthy, unhealthy| {
            if let Some(status) = statuses.get_mut(key) {
                status.healthy_endpoints += healthy;
                status.unhealthy_endpoints += unhealthy;
            }
        });
    }
    (resolved, statuses)
}

/// The routes attached to a Service, oldest first, each with its backends' clusters.
fn attach(mut routes: Vec<Arc<HttpRoute>>, services: &super::ObjectMap<Service>) -> Vec<super::AttachedRoute> {
    routes.sort_by(|a, b| a.age_order().cmp(&b.age_order()));
    routes
        .into_iter()
        .map(|route| {
            let mut clusters = BTreeMap::new();
            for backend in route.backend_refs() {
                if let Ok((service, port)) = super::route_status::resolve_backend(&route, backend, services) {
                    clusters.insert((backend.service.clone(), port.port), cluster_name(&service.key, port));
                }
            }
            super::AttachedRoute { route, clusters }
        })
        .collect()
}

/// `probes`: the valid probes targeting this Service, oldest first.
fn resolve_port(
    service: &Service,
    port: &ServicePort,
    slices: &[&EndpointSlice],
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
fn merge_endpoints(port: &ServicePort, slices: &[&EndpointSlice]) -> Vec<ResolvedEndpoint> {
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
                hints: endpoint.hints.clone(),
                probe: None,
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

fn resolve_ref(target: &ObjectKey, service: Option<&Service>, probe: &ValidProbe) -> Result<(), RefProblem> {
    let problem = |reason, message| Err(RefProblem { reason, message });
    match service {
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
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
