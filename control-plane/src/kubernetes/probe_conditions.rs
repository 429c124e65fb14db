//! The HealthProbe status edgexds writes back: conditions from a resolved [`ProbeStatus`].
//!
//! Pure and deterministic, so every replica computes the same status from the
//! same input (transition times as [`super::conditions::stamped`] keeps them).

use crate::kubernetes::crd::{HealthProbeStatus, StatusCondition};
use crate::model::ProbeStatus;

pub const ACCEPTED: &str = "Accepted";
pub const RESOLVED_REFS: &str = "ResolvedRefs";
pub const CONFLICTED: &str = "Conflicted";

/// The status to write, or `None` when the API server already holds it.
pub fn desired(status: &ProbeStatus, current: Option<&HealthProbeStatus>, now: &str) -> Option<HealthProbeStatus> {
    let held = current.map_or(&[][..], |c| &c.conditions[..]);
    let condition = |type_: &str, state: &str, reason: &str, message: String| {
        let wanted = StatusCondition {
            type_: type_.to_owned(),
            status: state.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: status.generation,
            last_transition_time: None,
        };
        super::conditions::stamped(wanted, held, now)
    };
    let accepted = match &status.accepted {
        Ok(()) => condition(ACCEPTED, "True", "Accepted", "spec is valid".into()),
        Err(e) => condition(ACCEPTED, "False", "Invalid", e.clone()),
    };
    let resolved = match &status.resolved_refs {
        Some(Ok(())) => condition(RESOLVED_REFS, "True", "Resolved", "the target Service and port exist".into()),
        Some(Err(problem)) => condition(RESOLVED_REFS, "False", problem.reason, problem.message.clone()),
        None => condition(RESOLVED_REFS, "Unknown", "InvalidSpec", "not resolved: the spec is invalid".into()),
    };
    let conflicted = match &status.conflicted {
        Some(message) => condition(CONFLICTED, "True", "Conflicted", message.clone()),
        None => condition(CONFLICTED, "False", "NoConflict", "no other probe covers the same Service port".into()),
    };
    let desired = HealthProbeStatus {
        observed_generation: status.generation,
        conditions: vec![accepted, resolved, conflicted],
        matched_endpoints: count(status.matched_endpoints),
        healthy_endpoints: count(status.healthy_endpoints),
        unhealthy_endpoints: count(status.unhealthy_endpoints),
    };
    (current != Some(&desired)).then_some(desired)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RefProblem;

    fn status() -> ProbeStatus {
        ProbeStatus {
            generation: Some(2),
            accepted: Ok(()),
            resolved_refs: Some(Ok(())),
            conflicted: None,
            matched_endpoints: 3,
            healthy_endpoints: 2,
            unhealthy_endpoints: 1,
        }
    }

    fn by_type<'a>(status: &'a HealthProbeStatus, type_: &str) -> &'a StatusCondition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn valid_probe_is_accepted_resolved_and_not_conflicted() {
        let s = desired(&status(), None, "t1").unwrap();
        assert_eq!((s.observed_generation, s.matched_endpoints), (Some(2), 3));
        assert_eq!((s.healthy_endpoints, s.unhealthy_endpoints), (2, 1));
        let summary: Vec<_> = s.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
        assert_eq!(summary, [(ACCEPTED, "True"), (RESOLVED_REFS, "True"), (CONFLICTED, "False")]);
        assert!(s.conditions.iter().all(|c| c.last_transition_time.as_deref() == Some("t1")));
    }

    #[test]
    fn invalid_unresolved_and_conflicting_probes_say_why() {
        let invalid =
            ProbeStatus { accepted: Err("spec.intervalMs: 1 is out of range".into()), resolved_refs: None, ..status() };
        let s = desired(&invalid, None, "t").unwrap();
        assert_eq!(by_type(&s, ACCEPTED).message, "spec.intervalMs: 1 is out of range");
        assert_eq!(
            (by_type(&s, RESOLVED_REFS).status.as_str(), by_type(&s, RESOLVED_REFS).reason.as_str()),
            ("Unknown", "InvalidSpec")
        );
        let unresolved = ProbeStatus {
            resolved_refs: Some(Err(RefProblem { reason: "ServiceNotFound", message: "Service a/b not found".into() })),
            ..status()
        };
        let s = desired(&unresolved, None, "t").unwrap();
        assert_eq!(by_type(&s, RESOLVED_REFS).reason, "ServiceNotFound");
        let conflicting =
            ProbeStatus { conflicted: Some("HealthProbe a/old already covers Service port web:80".into()), ..status() };
        let s = desired(&conflicting, None, "t").unwrap();
        assert_eq!(by_type(&s, CONFLICTED).status, "True");
        assert!(by_type(&s, CONFLICTED).message.contains("a/old"));
    }

    #[test]
    fn nothing_is_written_when_the_server_already_holds_the_status() {
        let first = desired(&status(), None, "t1").unwrap();
        assert_eq!(desired(&status(), Some(&first), "t2"), None, "same content at a later time is not a change");
    }

    #[test]
    fn transition_time_changes_only_for_the_condition_that_flips() {
        let first = desired(&status(), None, "t1").unwrap();
        let flipped = ProbeStatus { conflicted: Some("x".into()), ..status() };
        let s = desired(&flipped, Some(&first), "t2").unwrap();
        assert_eq!(by_type(&s, ACCEPTED).last_transition_time.as_deref(), Some("t1"));
        assert_eq!(by_type(&s, CONFLICTED).last_transition_time.as_deref(), Some("t2"));
    }
}
