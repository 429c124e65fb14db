use std::collections::BTreeSet;
use std::sync::Arc;

use super::ModelIndex;
use crate::model::fixtures::{endpoint, probe, probe_spec, service, slice, state};
use crate::model::{ObjectKey, resolve};

fn keys(names: &[(&str, &str)]) -> BTreeSet<ObjectKey> {
    names.iter().map(|(ns, name)| ObjectKey::new(*ns, *name)).collect()
}

fn three_services() -> crate::model::SourceState {
    state(
        vec![service("a", "web", &[("http", 80)]), service("a", "api", &[("http", 80)]), service("b", "db", &[])],
        vec![
            slice("a", "web-1", "web", &[("http", 8080)], vec![endpoint("10.0.0.1", true, "z1")]),
            slice("a", "api-1", "api", &[("http", 8080)], vec![endpoint("10.0.0.2", true, "z1")]),
        ],
        vec![probe("a", "p", "2024-01-01T00:00:00Z", probe_spec("web", None))],
    )
}

#[test]
fn a_slice_change_resolves_only_its_service_and_shares_the_others() {
    let mut state = three_services();
    let mut index = ModelIndex::default();
    index.update(&state);
    let before = index.model().clone();
    let moved = slice("a", "api-1", "api", &[("http", 8080)], vec![endpoint("10.0.0.9", true, "z1")]);
    state.slices.insert(moved.key.clone(), Arc::new(moved));
    assert_eq!(index.update(&state), keys(&[("a", "api")]));
    let web = ObjectKey::new("a", "web");
    assert!(Arc::ptr_eq(&before.services[&web], &index.model().services[&web]));
    assert_eq!(index.model(), &resolve(&state));
}

#[test]
fn a_relabelled_slice_touches_the_service_it_left_and_the_one_it_joined() {
    let mut state = three_services();
    let mut index = ModelIndex::default();
    index.update(&state);
    let moved = slice("a", "api-1", "web", &[("http", 8080)], vec![endpoint("10.0.0.2", true, "z1")]);
    state.slices.insert(moved.key.clone(), Arc::new(moved));
    assert_eq!(index.update(&state), keys(&[("a", "api"), ("a", "web")]));
    assert_eq!(index.model(), &resolve(&state));
}

#[test]
fn a_retargeted_probe_touches_its_old_and_new_target_and_nothing_else() {
    let mut state = three_services();
    let mut index = ModelIndex::default();
    index.update(&state);
    let retargeted = probe("a", "p", "2024-01-01T00:00:00Z", probe_spec("api", None));
    state.probes.insert(retargeted.key.clone(), Arc::new(retargeted));
    assert_eq!(index.update(&state), keys(&[("a", "api"), ("a", "web")]));
    assert_eq!(index.model(), &resolve(&state));
}

#[test]
fn an_unchanged_state_touches_nothing() {
    let state = three_services();
    let mut index = ModelIndex::default();
    assert_eq!(index.update(&state), keys(&[("a", "api"), ("a", "web"), ("b", "db")]));
    assert!(index.update(&state.clone()).is_empty());
}
