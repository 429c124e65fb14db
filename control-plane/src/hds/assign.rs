//! Which checkers probe which endpoint: near first (same node, then same zone), evenly spread,
//! and sticky, so a change moves as few endpoints as it can.

use std::collections::{BTreeMap, HashMap};

use super::targets::{EndpointKey, Target};
use crate::model::CheckKind;

/// A checker connection; unique for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct CheckerId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checker {
    pub id: CheckerId,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub http: bool,
    pub tcp: bool,
}

impl Checker {
    fn can_run(&self, check: &CheckKind) -> bool {
        match check {
            CheckKind::Http { .. } => self.http,
            CheckKind::Tcp => self.tcp,
            CheckKind::Grpc { .. } => false,
        }
    }

    /// 0: same node, 1: same zone, 2: anywhere.
    fn distance(&self, target: &Target) -> u8 {
        let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
        if same(&self.node_name, &target.node_name) {
            0
        } else if same(&self.zone, &target.zone) {
            1
        } else {
            2
        }
    }
}

/// The checkers of each endpoint; an endpoint no checker can run is absent.
pub type Assignment = BTreeMap<EndpointKey, Vec<CheckerId>>;

/// Gives each target `per_endpoint` checkers (fewer if fewer can run its check).
///
/// A previous checker is kept while it is still as near as the nearest choices and under
/// its even share; the rest go to the nearest, least-loaded checkers.
pub fn assign(targets: &[Target], checkers: &[Checker], per_endpoint: usize, previous: &Assignment) -> Assignment {
    let mut assignment = Assignment::new();
    if checkers.is_empty() || per_endpoint == 0 {
        return assignment;
    }
    let by_id: HashMap<CheckerId, &Checker> = checkers.iter().map(|c| (c.id, c)).collect();
    let wanted = per_endpoint.min(checkers.len());
    let share = (targets.len() * wanted).div_ceil(checkers.len());
    let mut load: HashMap<CheckerId, usize> = HashMap::new();

    let mut pending = Vec::new();
    for target in targets {
        let mut eligible: Vec<(u8, CheckerId)> =
            checkers.iter().filter(|c| c.can_run(&target.group.check)).map(|c| (c.distance(target), c.id)).collect();
        if eligible.is_empty() {
            continue;
        }
        eligible.sort_unstable();
        let count = wanted.min(eligible.len());
        let farthest_useful = eligible[count - 1].0;
        let mut chosen = Vec::with_capacity(count);
        for id in previous.get(&target.endpoint).into_iter().flatten() {
            let Some(checker) = by_id.get(id) else { continue };
            if chosen.len() == count
                || !checker.can_run(&target.group.check)
                || checker.distance(target) > farthest_useful
            {
                continue;
            }
            let kept = load.entry(*id).or_default();
            if *kept < share {
                *kept += 1;
                chosen.push(*id);
            }
        }
        pending.push((target, eligible, count, chosen));
    }
    // Filling after every kept choice is counted keeps the spread even.
    for (target, eligible, count, mut chosen) in pending {
        while chosen.len() < count {
            let best = eligible
                .iter()
                .filter(|(_, id)| !chosen.contains(id))
                .min_by_key(|(distance, id)| (*distance, load.get(id).copied().unwrap_or(0), *id));
            let Some(&(_, id)) = best else { break };
            *load.entry(id).or_default() += 1;
            chosen.push(id);
        }
        chosen.sort_unstable();
        assignment.insert(target.endpoint.clone(), chosen);
    }
    assignment
}

#[cfg(test)]
#[path = "assign_tests.rs"]
mod tests;
