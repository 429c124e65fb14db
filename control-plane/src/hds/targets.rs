//! What checkers probe: one target per Kubernetes-ready endpoint whose probe HDS can run,
//! grouped by Service port and effective probe policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::model::{CheckKind, EndpointHealth, Model, ProbePolicy};
use crate::translate::hds_can_check;

/// One endpoint of one cluster: the unit that is assigned, reported and judged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    pub cluster: Arc<str>,
    pub address: SocketAddr,
}

/// Endpoints of one Service port probed the same way: one `ClusterHealthCheck` on a checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Stable while the policy is, so Envoy updates the group in place and keeps host state.
    pub name: String,
    pub cluster: Arc<str>,
    pub check: CheckKind,
    pub policy: ProbePolicy,
}

impl Group {
    fn name_for(cluster: &str, policy: &ProbePolicy) -> String {
        format!(
            "hds/{cluster}/{}ms-{}ms-{}f-{}s",
            policy.interval_ms, policy.timeout_ms, policy.failure_threshold, policy.success_threshold
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub endpoint: EndpointKey,
    pub group: Arc<Group>,
    pub zone: Option<String>,
    pub node_name: Option<String>,
}

/// Targets sorted by endpoint. Not-ready endpoints are skipped: Kubernetes already rules them out.
pub fn targets(model: &Model) -> Vec<Target> {
    let mut targets = Vec::new();
    for port in model.ports() {
        let Some(coverage) = &port.probe else { continue };
        if !hds_can_check(&coverage.probe.check) {
            continue;
        }
        let cluster: Arc<str> = Arc::from(port.cluster_name.as_str());
        let mut groups: BTreeMap<ProbePolicy, Arc<Group>> = BTreeMap::new();
        for endpoint in &port.endpoints {
            let (Some(policy), false) = (endpoint.probe, endpoint.health == EndpointHealth::NotReady) else {
                continue;
            };
            let group = groups.entry(policy).or_insert_with(|| {
                Arc::new(Group {
                    name: Group::name_for(&cluster, &policy),
                    cluster: cluster.clone(),
                    check: coverage.probe.check.clone(),
                    policy,
                })
            });
            targets.push(Target {
                endpoint: EndpointKey {
                    cluster: cluster.clone(),
                    address: SocketAddr::new(endpoint.address, endpoint.port),
                },
                group: group.clone(),
                zone: endpoint.zone.clone(),
                node_name: endpoint.node_name.clone(),
            });
        }
    }
    // Unique already: a port's endpoints are one per address, and each port is its own cluster.
    targets.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    targets
}
