//! The HDS state as JSON for `/debug/hds`: checkers, and per endpoint its checkers,
//! their last reports and the verdict.

use std::net::SocketAddr;
use std::time::Instant;

use serde::Serialize;

use super::{CheckerId, HdsHub, Verdict, lock};

impl HdsHub {
    pub fn view(&self, now: Instant) -> HubView {
        let state = lock(&self.state);
        let node_of = |id: &CheckerId| state.checkers.get(id).map(|s| s.node_id.clone());
        let age_ms = |at: Instant| now.saturating_duration_since(at).as_millis() as u64;
        HubView {
            max_unhealthy_percent: self.config.max_unhealthy_percent,
            failed_open_clusters: state.failed_open.iter().cloned().collect(),
            checkers_per_endpoint: self.config.checkers_per_endpoint,
            report_interval_ms: self.config.report_interval.as_millis() as u64,
            checkers: state
                .checkers
                .values()
                .map(|slot| CheckerView {
                    id: slot.info.id,
                    node: slot.node_id.clone(),
                    node_name: slot.info.node_name.clone(),
                    zone: slot.info.zone.clone(),
                    endpoints: slot.since.len(),
                    silent: slot.silent,
                    reports: slot.reports,
                    last_report_ms_ago: slot.last_report.map(age_ms),
                })
                .collect(),
            endpoints: state
                .targets
                .iter()
                .map(|target| EndpointView {
                    cluster: target.endpoint.cluster.to_string(),
                    address: target.endpoint.address,
                    group: target.group.name.clone(),
                    interval_ms: target.group.policy.interval_ms,
                    failure_threshold: target.group.policy.failure_threshold,
                    checkers: state
                        .assignment
                        .get(&target.endpoint)
                        .into_iter()
                        .flatten()
                        .filter_map(|id| node_of(id).map(|node| AssignedView { id: *id, node }))
                        .collect(),
                    reports: state
                        .book
                        .all(&target.endpoint)
                        .map(|(id, report)| ReportView {
                            checker: id,
                            node: node_of(&id),
                            healthy: report.healthy,
                            age_ms: age_ms(report.at),
                            fresh: report.fresh_until > now,
                        })
                        .collect(),
                    verdict: state.verdicts.get(&target.endpoint).copied().unwrap_or(Verdict::Unknown),
                })
                .collect(),
        }
    }
}

/// The whole HDS state, for `/debug/hds`.
#[derive(Debug, Serialize)]
pub struct HubView {
    /// Clusters whose HDS verdicts are ignored: checkers judged more than
    /// `max_unhealthy_percent` of their ready endpoints unhealthy.
    pub failed_open_clusters: Vec<String>,
    pub max_unhealthy_percent: u8,
    pub checkers_per_endpoint: usize,
    pub report_interval_ms: u64,
    pub checkers: Vec<CheckerView>,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize)]
pub struct CheckerView {
    pub id: CheckerId,
    pub node: String,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub endpoints: usize,
    /// Connected but not reporting for three report periods: it has no endpoints until it reports.
    pub silent: bool,
    pub reports: u64,
    pub last_report_ms_ago: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub cluster: String,
    pub address: SocketAddr,
    pub group: String,
    pub interval_ms: u32,
    pub failure_threshold: u32,
    pub checkers: Vec<AssignedView>,
    pub reports: Vec<ReportView>,
    pub verdict: Verdict,
}

#[derive(Debug, Serialize)]
pub struct AssignedView {
    pub id: CheckerId,
    pub node: String,
}

#[derive(Debug, Serialize)]
pub struct ReportView {
    pub checker: CheckerId,
    /// `None` once the checker has disconnected.
    pub node: Option<String>,
    pub healthy: bool,
    pub age_ms: u64,
    pub fresh: bool,
}
