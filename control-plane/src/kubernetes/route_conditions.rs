//! A route's `status.parents` as edgexds writes it: its own entries (controllerName
//! [`CONTROLLER_NAME`], one per Service parent) beside the entries of every other controller,
//! which are kept as the API server holds them. The list is atomic in the CRD, so a write
//! carries the whole list and is made conditional on the resourceVersion it was built from:
//! another controller's entry is never lost to a race.
//!
//! Pure and deterministic, like HealthProbe status: replicas compute the same list, and
//! nothing is written when the API server already holds edgexds's entries as they should be.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kubernetes::conditions::stamped;
use crate::kubernetes::crd::StatusCondition;
use crate::model::{ParentRef, ParentStatus, RouteCondition};

/// The controller edgexds writes route status as (a domain-prefixed path, as the spec asks).
pub const CONTROLLER_NAME: &str = "edgexds.io/mesh";
/// The CRD's bound on `status.parents`.
const MAX_PARENTS: usize = 32;

/// What the API server holds of a route's status, as the watch last saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeldRouteStatus {
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub parents: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParentEntry {
    parent_ref: StatusParentRef,
    controller_name: String,
    conditions: Vec<StatusCondition>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StatusParentRef {
    group: String,
    kind: String,
    namespace: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

impl From<&ParentRef> for StatusParentRef {
    fn from(parent: &ParentRef) -> Self {
        Self {
            group: String::new(),
            kind: "Service".into(),
            namespace: parent.service.namespace.to_string(),
            name: parent.service.name.to_string(),
            port: parent.port,
        }
    }
}

fn is_ours(entry: &Value) -> bool {
    entry.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME)
}

/// The whole `status.parents` list to write, or `None` when the API server already holds
/// edgexds's entries as `statuses` says they should be.
pub fn desired(
    statuses: &[ParentStatus],
    generation: Option<i64>,
    held: &HeldRouteStatus,
    now: &str,
) -> Option<Vec<Value>> {
    let ours_held: Vec<ParentEntry> =
        held.parents.iter().filter(|e| is_ours(e)).filter_map(|e| serde_json::from_value(e.clone()).ok()).collect();
    let others: Vec<&Value> = held.parents.iter().filter(|e| !is_ours(e)).collect();
    let room = MAX_PARENTS.saturating_sub(others.len());
    let ours: Vec<ParentEntry> = statuses
        .iter()
        .take(room)
        .map(|status| {
            let parent_ref = StatusParentRef::from(&status.parent);
            let held_conditions =
                ours_held.iter().find(|e| e.parent_ref == parent_ref).map_or(&[][..], |e| &e.conditions[..]);
            let condition = |type_: &str, c: &RouteCondition| {
                let wanted = StatusCondition {
                    type_: type_.into(),
                    status: if c.holds { "True" } else { "False" }.into(),
                    reason: c.reason.into(),
                    message: c.message.clone(),
                    observed_generation: generation,
                    last_transition_time: None,
                };
                stamped(wanted, held_conditions, now)
            };
            ParentEntry {
                parent_ref,
                controller_name: CONTROLLER_NAME.into(),
                conditions: vec![
                    condition("Accepted", &status.accepted),
                    condition("ResolvedRefs", &status.resolved_refs),
                ],
            }
        })
        .collect();
    if ours == ours_held {
        return None;
    }
    let ours = ours.iter().filter_map(|e| serde_json::to_value(e).ok());
    Some(others.into_iter().cloned().chain(ours).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectKey;
    use serde_json::json;

    fn status(accepted: bool) -> ParentStatus {
        let condition = |holds, reason: &'static str| RouteCondition { holds, reason, message: reason.into() };
        ParentStatus {
            parent: ParentRef { service: ObjectKey::new("shop", "web"), port: Some(80) },
            accepted: if accepted { condition(true, "Accepted") } else { condition(false, "NoMatchingParent") },
            resolved_refs: condition(true, "ResolvedRefs"),
        }
    }

    fn gateway_entry() -> Value {
        json!({
            "parentRef": {"name": "gw"},
            "controllerName": "example.com/gateway",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        })
    }

    fn held(parents: Vec<Value>) -> HeldRouteStatus {
        HeldRouteStatus { resource_version: Some("7".into()), generation: Some(2), parents }
    }

    #[test]
    fn another_controllers_entry_is_kept_as_held_beside_ours() {
        let list = desired(&[status(true)], Some(2), &held(vec![gateway_entry()]), "t1").unwrap();
        assert_eq!(list[0], gateway_entry());
        assert_eq!(list[1]["controllerName"], CONTROLLER_NAME);
        assert_eq!(
            list[1]["parentRef"],
            json!({"group": "", "kind": "Service", "namespace": "shop", "name": "web", "port": 80})
        );
        assert_eq!(list[1]["conditions"][0]["observedGeneration"], 2);
    }

    #[test]
    fn nothing_is_written_when_our_entries_are_held_as_they_should_be() {
        let list = desired(&[status(true)], Some(2), &held(vec![gateway_entry()]), "t1").unwrap();
        assert_eq!(desired(&[status(true)], Some(2), &held(list), "t2"), None);
    }

    #[test]
    fn a_flip_stamps_only_its_condition_and_a_gone_parent_loses_its_entry() {
        let first = desired(&[status(true)], Some(2), &held(vec![]), "t1").unwrap();
        let flipped = desired(&[status(false)], Some(3), &held(first.clone()), "t2").unwrap();
        assert_eq!(flipped[0]["conditions"][0]["lastTransitionTime"], "t2");
        assert_eq!(flipped[0]["conditions"][1]["lastTransitionTime"], "t1");
        let gone = desired(&[], Some(4), &held([vec![gateway_entry()], first].concat()), "t3").unwrap();
        assert_eq!(gone, vec![gateway_entry()]);
    }
}
