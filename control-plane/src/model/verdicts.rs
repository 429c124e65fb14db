//! Endpoints that active health checks found failing: an overlay on the resolved [`Model`],
//! kept apart from it so a verdict never changes the model, and counted into probe status
//! on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use imbl::OrdMap;

use super::object::ObjectKey;
use super::resolve::{EndpointHealth, Model, ProbeStatus, cluster_service};

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

    /// Each cluster with the addresses failing in it.
    pub fn clusters(&self) -> impl Iterator<Item = (&str, &BTreeSet<SocketAddr>)> {
        self.failing.iter().map(|(cluster, failing)| (cluster.as_str(), failing))
    }

    pub fn len(&self) -> usize {
        self.failing.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.failing.is_empty()
    }

    /// The clusters whose failing endpoints differ between `self` and `other`.
    pub fn clusters_differing<'a>(&'a self, other: &'a CheckVerdicts) -> BTreeSet<&'a str> {
        let names = self.failing.keys().chain(other.failing.keys());
        names.filter(|name| self.failing.get(*name) != other.failing.get(*name)).map(String::as_str).collect()
    }
}

impl Model {
    /// Each probe's status with `verdicts` counted in: a Kubernetes-ready endpoint that
    /// active checks find failing moves from healthy to unhealthy. Kubernetes not-ready
    /// stays not-ready. Costs the failing endpoints, not the model: the verdicts are an
    /// overlay, never stored in the model itself.
    pub fn probe_statuses(&self, verdicts: &CheckVerdicts) -> OrdMap<ObjectKey, ProbeStatus> {
        let mut statuses = self.probes.clone();
        for (cluster, failing) in verdicts.clusters() {
            let Some(service) = cluster_service(cluster).and_then(|key| self.services.get(&key)) else { continue };
            let Some(port) = service.ports.iter().find(|p| p.cluster_name == cluster) else { continue };
            let Some(coverage) = &port.probe else { continue };
            let Some(status) = statuses.get_mut(&coverage.probe.key) else { continue };
            let judged = port
                .endpoints
                .iter()
                .filter(|e| e.health == EndpointHealth::Ready)
                .filter(|e| failing.contains(&SocketAddr::new(e.address, e.port)))
                .count();
            status.healthy_endpoints -= judged;
            status.unhealthy_endpoints += judged;
        }
        statuses
    }
}
