//! Endpoints that active health checks found failing, folded into a resolved [`Model`].
//!
//! The verdicts come from outside the sources (HDS checkers); folding them in is
//! pure, so the same state and verdicts always give the same model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::resolve::{EndpointHealth, Model};

/// The endpoints judged unhealthy, by cluster name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckVerdicts {
    failing: BTreeMap<String, BTreeSet<SocketAddr>>,
}

impl CheckVerdicts {
    pub fn insert(&mut self, cluster: &str, address: SocketAddr) {
        self.failing.entry(cluster.to_owned()).or_default().insert(address);
    }

    pub fn is_failing(&self, cluster: &str, address: SocketAddr) -> bool {
        self.failing.get(cluster).is_some_and(|set| set.contains(&address))
    }

    pub fn len(&self) -> usize {
        self.failing.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.failing.is_empty()
    }
}

impl Model {
    /// Marks the Kubernetes-ready endpoints that failing checks cover, and recounts each probe's
    /// healthy and unhealthy endpoints. Kubernetes not-ready always stays not-ready.
    pub fn apply_verdicts(&mut self, verdicts: &CheckVerdicts) {
        for status in self.probes.values_mut() {
            (status.healthy_endpoints, status.unhealthy_endpoints) = (0, 0);
        }
        for service in &mut self.services {
            for port in &mut service.ports {
                let probe = port.probe.as_ref().map(|c| c.probe.key.clone());
                let mut counts = (0, 0);
                for endpoint in &mut port.endpoints {
                    let address = SocketAddr::new(endpoint.address, endpoint.port);
                    endpoint.failing_check =
                        endpoint.health == EndpointHealth::Ready && verdicts.is_failing(&port.cluster_name, address);
                    match (endpoint.health, endpoint.failing_check) {
                        (EndpointHealth::Ready, false) => counts.0 += 1,
                        (EndpointHealth::NotReady, _) | (_, true) => counts.1 += 1,
                        (EndpointHealth::Draining, false) => {}
                    }
                }
                if let Some(status) = probe.and_then(|key| self.probes.get_mut(&key)) {
                    status.healthy_endpoints += counts.0;
                    status.unhealthy_endpoints += counts.1;
                }
            }
        }
    }
}
