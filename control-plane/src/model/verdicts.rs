//! Endpoints that active health checks found failing, folded into a resolved [`Model`].
//!
//! The verdicts come from outside the sources (HDS checkers); folding them in is
//! pure, so the same state and verdicts always give the same model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use std::sync::Arc;

use super::resolve::{EndpointHealth, Model, ResolvedService};

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
    /// Marks the Kubernetes-ready endpoints that failing checks cover, and recounts each probe's
    /// healthy and unhealthy endpoints. Kubernetes not-ready always stays not-ready. The
    /// pipeline never calls this: translation takes verdicts as an overlay. It serves the
    /// probe status counts and the debug view.
    pub fn apply_verdicts(&mut self, verdicts: &CheckVerdicts) {
        let services = self.services.clone();
        for (key, service) in &services {
            let mut service = ResolvedService::clone(service);
            for port in &mut service.ports {
                for endpoint in &mut port.endpoints {
                    let address = SocketAddr::new(endpoint.address, endpoint.port);
                    endpoint.failing_check =
                        endpoint.health == EndpointHealth::Ready && verdicts.is_failing(&port.cluster_name, address);
                }
            }
            self.services.insert(key.clone(), Arc::new(service));
        }
        self.count_health();
    }
}
