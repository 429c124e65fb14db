//! One rule for every status condition edgexds writes: a condition keeps the
//! `lastTransitionTime` the API server holds for its type unless its status flips, so
//! replicas computing the same status never fight over timestamps.

use crate::kubernetes::crd::StatusCondition;

/// `wanted`, stamped with the transition time `held` gives its type, or `now` if it flipped.
pub fn stamped(mut wanted: StatusCondition, held: &[StatusCondition], now: &str) -> StatusCondition {
    let previous = held.iter().find(|c| c.type_ == wanted.type_);
    wanted.last_transition_time = match previous {
        Some(p) if p.status == wanted.status => p.last_transition_time.clone(),
        _ => Some(now.to_owned()),
    };
    wanted
}
