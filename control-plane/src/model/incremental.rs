//! The resolved model kept up to date change by change: only the Service keys a change
//! touches are resolved again, the same way [`super::resolve`] resolves every key.
//!
//! A Service touches itself; a slice touches the Service it belongs to (before and after
//! the change, since its label can move it); a probe touches the Service it targets; a route
//! touches its parent Services (before and after). One thing crosses Service keys: a route's
//! backends, so a Service that appears, goes or changes its ports also touches the parents of
//! every route naming it as a backend. The rest of the model stays shared with the previous one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::ordmap::DiffItem;

use super::resolve::{
    Target, invalid_status, probe_diagnostic, probe_target, resolve_target, service_diagnostic, slice_target,
};
use super::{EndpointSlice, HealthProbe, HttpRoute, Model, ObjectKey, RouteId, SourceState};

/// The model of the last state applied, with what it takes to re-resolve one Service key.
#[derive(Debug, Default)]
pub struct ModelIndex {
    state: SourceState,
    /// EndpointSlice keys by the Service they belong to.
    slices_of: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Valid probe keys by the Service they target.
    probes_of: BTreeMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Routes by parent Service, and by backend Service.
    routes_of: BTreeMap<ObjectKey, BTreeSet<RouteId>>,
    routes_to: BTreeMap<ObjectKey, BTreeSet<RouteId>>,
    model: Model,
}

impl ModelIndex {
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Brings the model to `state` and returns the Service keys resolved again. The cost
    /// follows what differs from the last state: unchanged parts of the persistent maps are
    /// skipped without being visited.
    pub fn update(&mut self, state: &SourceState) -> BTreeSet<ObjectKey> {
        let old = std::mem::replace(&mut self.state, state.clone());
        let mut touched = BTreeSet::new();
        let mut services_changed = Vec::new();
        for item in old.services.diff(&state.services) {
            let (before, after) = sides(item);
            let key = before.or(after).map(|s| s.key.clone());
            services_changed.extend(key.clone());
            touched.extend(key);
            if let Some(diagnostic) = before.and_then(service_diagnostic) {
                self.model.diagnostics.remove(&diagnostic);
            }
            self.model.diagnostics.extend(after.and_then(service_diagnostic));
        }
        for item in old.slices.diff(&state.slices) {
            let (before, after) = sides(item);
            if let Some(slice) = before {
                self.forget_slice(slice, &mut touched);
            }
            if let Some(slice) = after {
                self.index_slice(slice, &mut touched);
            }
        }
        for item in old.probes.diff(&state.probes) {
            let (before, after) = sides(item);
            if let Some(probe) = before {
                self.forget_probe(probe, &mut touched);
            }
            if let Some(probe) = after {
                self.index_probe(probe, &mut touched);
            }
        }
        for item in old.routes.diff(&state.routes) {
            let (before, after) = sides(item);
            for (route, add) in before.map(|r| (r, false)).into_iter().chain(after.map(|r| (r, true))) {
                for parent in route.parent_services() {
                    touched.insert(parent.clone());
                    index(&mut self.routes_of, parent, &route.id(), add);
                }
                for backend in route.backend_services() {
                    index(&mut self.routes_to, backend, &route.id(), add);
                }
            }
        }
        // A backend Service that appeared, went or changed changes its referrers' routes.
        for backend in &services_changed {
            for route in self.routes_to.get(backend).into_iter().flatten() {
                touched.extend(state.routes.get(route).into_iter().flat_map(|r| r.parent_services().cloned()));
            }
        }
        for item in old.refused.diff(&state.refused) {
            match item {
                imbl::ordset::DiffItem::Add(refused) => {
                    self.model.diagnostics.insert(refused.clone());
                }
                imbl::ordset::DiffItem::Remove(refused) => {
                    self.model.diagnostics.remove(refused);
                }
            }
        }
        // Nodes touch no Service: they only say where clients are.
        self.model.nodes = state.nodes.clone();
        for key in &touched {
            self.resolve_key(key);
        }
        touched
    }

    fn index_slice(&mut self, slice: &EndpointSlice, touched: &mut BTreeSet<ObjectKey>) {
        match slice_target(slice) {
            Ok(target) => {
                self.slices_of.entry(target.clone()).or_default().insert(slice.key.clone());
                touched.insert(target);
            }
            Err(diagnostic) => {
                self.model.diagnostics.insert(diagnostic);
            }
        }
    }

    fn forget_slice(&mut self, slice: &EndpointSlice, touched: &mut BTreeSet<ObjectKey>) {
        match slice_target(slice) {
            Ok(target) => {
                remove_from(&mut self.slices_of, &target, &slice.key);
                touched.insert(target);
            }
            Err(diagnostic) => {
                self.model.diagnostics.remove(&diagnostic);
            }
        }
    }

    fn index_probe(&mut self, probe: &HealthProbe, touched: &mut BTreeSet<ObjectKey>) {
        match probe_target(probe) {
            Some(target) => {
                self.probes_of.entry(target.clone()).or_default().insert(probe.key.clone());
                touched.insert(target);
            }
            None => {
                self.model.probes.insert(probe.key.clone(), invalid_status(probe));
                self.model.diagnostics.extend(probe_diagnostic(probe));
            }
        }
    }

    fn forget_probe(&mut self, probe: &HealthProbe, touched: &mut BTreeSet<ObjectKey>) {
        self.model.probes.remove(&probe.key);
        match probe_target(probe) {
            Some(target) => {
                remove_from(&mut self.probes_of, &target, &probe.key);
                touched.insert(target);
            }
            None => {
                if let Some(diagnostic) = probe_diagnostic(probe) {
                    self.model.diagnostics.remove(&diagnostic);
                }
            }
        }
    }

    fn resolve_key(&mut self, key: &ObjectKey) {
        let state = &self.state;
        let slices: Vec<&EndpointSlice> =
            self.slices_of.get(key).into_iter().flatten().filter_map(|k| state.slices.get(k).map(|s| &**s)).collect();
        let probes: Vec<&HealthProbe> =
            self.probes_of.get(key).into_iter().flatten().filter_map(|k| state.probes.get(k).map(|p| &**p)).collect();
        let routes: Vec<Arc<HttpRoute>> =
            self.routes_of.get(key).into_iter().flatten().filter_map(|k| state.routes.get(k).cloned()).collect();
        let target = Target { key, service: state.services.get(key).map(|s| &**s), slices: &slices, routes };
        let (resolved, statuses) = resolve_target(target, probes, &state.services);
        match resolved {
            Some(resolved) => self.model.services.insert(key.clone(), Arc::new(resolved)),
            None => self.model.services.remove(key),
        };
        self.model.probes.extend(statuses);
    }
}

/// The object before and after one difference.
fn sides<'a, K, T>(item: DiffItem<'a, 'a, K, Arc<T>>) -> (Option<&'a T>, Option<&'a T>) {
    match item {
        DiffItem::Add(_, new) => (None, Some(new)),
        DiffItem::Update { old: (_, old), new: (_, new) } => (Some(old), Some(new)),
        DiffItem::Remove(_, old) => (Some(old), None),
    }
}

/// Adds `key` under `target`, or takes it out.
fn index<K: Ord + Clone>(index: &mut BTreeMap<ObjectKey, BTreeSet<K>>, target: &ObjectKey, key: &K, add: bool) {
    if add {
        index.entry(target.clone()).or_default().insert(key.clone());
    } else {
        remove_from(index, target, key);
    }
}

fn remove_from<K: Ord>(index: &mut BTreeMap<ObjectKey, BTreeSet<K>>, target: &ObjectKey, key: &K) {
    if let Some(keys) = index.get_mut(target) {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(target);
        }
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
