//! Checker reports and the verdict they add up to, per endpoint.
//!
//! A report counts while fresh (younger than three report periods of its
//! endpoint's probe); a checker keeps its vote after losing an endpoint until
//! that vote goes stale, so handing an endpoint over never flips its verdict.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::assign::CheckerId;
use super::targets::EndpointKey;

/// How many periods a report stays fresh.
pub const FRESH_PERIODS: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Unhealthy,
    /// No fresh report: Kubernetes readiness alone decides.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub healthy: bool,
    pub at: Instant,
    /// After this the report is stale.
    pub fresh_until: Instant,
}

#[derive(Debug, Default)]
pub struct ReportBook {
    reports: HashMap<EndpointKey, BTreeMap<CheckerId, Report>>,
}

impl ReportBook {
    /// `period`: the longer of the endpoint's probe interval and the report interval.
    pub fn record(&mut self, endpoint: &EndpointKey, checker: CheckerId, healthy: bool, at: Instant, period: Duration) {
        let report = Report { healthy, at, fresh_until: at + period * FRESH_PERIODS };
        match self.reports.get_mut(endpoint) {
            Some(by_checker) => {
                by_checker.insert(checker, report);
            }
            None => {
                self.reports.insert(endpoint.clone(), BTreeMap::from([(checker, report)]));
            }
        }
    }

    /// UNHEALTHY only when a strict majority of fresh reports say so.
    pub fn verdict(&self, endpoint: &EndpointKey, now: Instant) -> Verdict {
        let fresh = self.fresh(endpoint, now);
        let (mut total, mut failing) = (0usize, 0usize);
        for (_, report) in fresh {
            total += 1;
            failing += usize::from(!report.healthy);
        }
        match total {
            0 => Verdict::Unknown,
            _ if failing * 2 > total => Verdict::Unhealthy,
            _ => Verdict::Healthy,
        }
    }

    pub fn fresh(&self, endpoint: &EndpointKey, now: Instant) -> impl Iterator<Item = (CheckerId, &Report)> {
        self.all(endpoint).filter(move |(_, r)| r.fresh_until > now)
    }

    pub fn all(&self, endpoint: &EndpointKey) -> impl Iterator<Item = (CheckerId, &Report)> {
        self.reports.get(endpoint).into_iter().flatten().map(|(id, report)| (*id, report))
    }

    /// Drops stale reports and endpoints that are no longer targets.
    pub fn prune(&mut self, now: Instant, keep: impl Fn(&EndpointKey) -> bool) {
        self.reports.retain(|endpoint, by_checker| {
            by_checker.retain(|_, r| r.fresh_until > now);
            !by_checker.is_empty() && keep(endpoint)
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const PERIOD: Duration = Duration::from_millis(500);

    fn endpoint() -> EndpointKey {
        EndpointKey { cluster: Arc::from("web.shop:80"), address: "10.0.0.1:8080".parse().unwrap() }
    }

    #[test]
    fn no_fresh_report_leaves_the_verdict_to_kubernetes() {
        let (mut book, now) = (ReportBook::default(), Instant::now());
        assert_eq!(book.verdict(&endpoint(), now), Verdict::Unknown);
        book.record(&endpoint(), CheckerId(1), false, now, PERIOD);
        assert_eq!(book.verdict(&endpoint(), now + PERIOD * 2), Verdict::Unhealthy);
        assert_eq!(book.verdict(&endpoint(), now + PERIOD * 3), Verdict::Unknown, "stale after three periods");
    }

    #[test]
    fn unhealthy_needs_a_strict_majority_of_fresh_reports() {
        let (mut book, now) = (ReportBook::default(), Instant::now());
        book.record(&endpoint(), CheckerId(1), false, now, PERIOD);
        book.record(&endpoint(), CheckerId(2), true, now, PERIOD);
        assert_eq!(book.verdict(&endpoint(), now), Verdict::Healthy, "a tie is not a majority");
        book.record(&endpoint(), CheckerId(3), false, now, PERIOD);
        assert_eq!(book.verdict(&endpoint(), now), Verdict::Unhealthy);
    }

    #[test]
    fn a_stale_dissent_no_longer_counts() {
        let (mut book, now) = (ReportBook::default(), Instant::now());
        book.record(&endpoint(), CheckerId(1), true, now, PERIOD);
        let later = now + PERIOD * 4;
        book.record(&endpoint(), CheckerId(2), false, later, PERIOD);
        assert_eq!(book.verdict(&endpoint(), later), Verdict::Unhealthy);
        book.prune(later, |_| true);
        assert_eq!(book.all(&endpoint()).count(), 1);
    }
}
