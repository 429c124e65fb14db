use std::sync::Arc;

use super::*;
use crate::hds::targets::Group;
use crate::model::ProbePolicy;

fn policy() -> ProbePolicy {
    ProbePolicy { interval_ms: 1000, timeout_ms: 500, failure_threshold: 2, success_threshold: 1 }
}

fn target(i: u8, node: &str, zone: &str) -> Target {
    let cluster: Arc<str> = Arc::from("web.shop:80");
    Target {
        endpoint: EndpointKey { cluster: cluster.clone(), address: format!("10.0.0.{i}:8080").parse().unwrap() },
        group: Arc::new(Group {
            name: "g".into(),
            cluster,
            check: CheckKind::Http { path: "/healthz".into(), host: None },
            policy: policy(),
        }),
        zone: Some(zone.into()),
        node_name: Some(node.into()),
    }
}

fn checker(id: u64, node: &str, zone: &str) -> Checker {
    Checker { id: CheckerId(id), node_name: Some(node.into()), zone: Some(zone.into()), http: true, tcp: true }
}

fn load(assignment: &Assignment, id: u64) -> usize {
    assignment.values().filter(|c| c.contains(&CheckerId(id))).count()
}

#[test]
fn each_endpoint_gets_the_requested_number_of_distinct_checkers() {
    let targets: Vec<_> = (1..=6).map(|i| target(i, "n9", "z9")).collect();
    let checkers = [checker(1, "a", "za"), checker(2, "b", "zb"), checker(3, "c", "zc")];
    let assignment = assign(&targets, &checkers, 2, &Assignment::new());
    assert_eq!(assignment.len(), 6);
    assert!(assignment.values().all(|c| c.len() == 2 && c[0] != c[1]));
    assert_eq!([load(&assignment, 1), load(&assignment, 2), load(&assignment, 3)], [4, 4, 4]);
}

#[test]
fn fewer_checkers_than_requested_means_every_checker_checks_everything() {
    let targets: Vec<_> = (1..=3).map(|i| target(i, "n", "z")).collect();
    let assignment = assign(&targets, &[checker(1, "a", "za")], 2, &Assignment::new());
    assert!(assignment.values().all(|c| c == &[CheckerId(1)]));
}

#[test]
fn a_checker_on_the_same_node_then_the_same_zone_is_preferred() {
    let targets = [target(1, "n1", "z1"), target(2, "n2", "z2")];
    let checkers = [checker(1, "far", "z3"), checker(2, "n2", "z2"), checker(3, "other", "z1"), checker(4, "n1", "z1")];
    let assignment = assign(&targets, &checkers, 2, &Assignment::new());
    assert_eq!(assignment[&targets[0].endpoint], [CheckerId(3), CheckerId(4)], "same node, then same zone");
    assert!(assignment[&targets[1].endpoint].contains(&CheckerId(2)));
}

#[test]
fn two_checkers_split_endpoints_evenly_and_one_takes_over_when_the_other_leaves() {
    let targets: Vec<_> = (1..=10).map(|i| target(i, "n", "z")).collect();
    let both = [checker(1, "a", "z0"), checker(2, "b", "z0")];
    let split = assign(&targets, &both, 1, &Assignment::new());
    assert_eq!((load(&split, 1), load(&split, 2)), (5, 5));
    let alone = assign(&targets, &both[1..], 1, &split);
    assert_eq!(load(&alone, 2), 10, "no endpoint is left unchecked");
    let back = assign(&targets, &both, 1, &alone);
    assert_eq!((load(&back, 1), load(&back, 2)), (5, 5), "a returning checker gets its share back");
}

#[test]
fn unchanged_inputs_move_nothing_and_a_new_endpoint_moves_nothing_else() {
    let mut targets: Vec<_> = (2..=9).map(|i| target(i, "n", "z")).collect();
    let checkers = [checker(1, "a", "z0"), checker(2, "b", "z0"), checker(3, "c", "z0")];
    let first = assign(&targets, &checkers, 1, &Assignment::new());
    assert_eq!(assign(&targets, &checkers, 1, &first), first);
    targets.insert(0, target(1, "n", "z"));
    let second = assign(&targets, &checkers, 1, &first);
    let moved = first.iter().filter(|(endpoint, checkers)| &second[*endpoint] != *checkers).count();
    assert_eq!(moved, 0);
}

#[test]
fn a_check_no_checker_can_run_is_left_to_the_sidecars() {
    let mut grpc = target(1, "n", "z");
    let mut group = (*grpc.group).clone();
    group.check = CheckKind::Grpc { service_name: None };
    grpc.group = Arc::new(group);
    let tcp_only = Checker { http: false, ..checker(1, "a", "z") };
    let assignment = assign(&[grpc, target(2, "n", "z")], &[tcp_only], 2, &Assignment::new());
    assert!(assignment.is_empty());
}
