//! The objects Kubernetes watch streams have delivered, kept as a [`SourceState`].
//!
//! Pure: watch events go in, a state comes out. Each stream (one kind in one
//! scope) buffers its initial list and swaps it in whole at `InitDone`, so a
//! re-list after an outage or a 410 Gone drops exactly the objects deleted meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::kubernetes::crd::HealthProbeStatus;
use crate::kubernetes::route_conditions::HeldRouteStatus;
use crate::model::{ObjectKey, ObjectKind, SourceObject, SourceState};

/// An object as a watch delivered it: the model object, and for the kinds edgexds writes
/// status on, the status the API server holds, which the store leaves to the status writers.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub object: SourceObject,
    pub held: Option<Held>,
}

/// A status the API server holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Held {
    Probe(Arc<HealthProbeStatus>),
    Route(Arc<HeldRouteStatus>),
}

impl Item {
    pub fn key(&self) -> &ObjectKey {
        self.object.key()
    }

    /// Copy-on-write: the state is cloned only if a reader still holds it and something changes.
    fn insert_into(self, state: &mut Arc<SourceState>) -> bool {
        if self.object.is_in(state) {
            return false;
        }
        self.object.insert_into(Arc::make_mut(state));
        true
    }
}

fn remove_from(state: &mut Arc<SourceState>, kind: ObjectKind, key: &ObjectKey) -> bool {
    state.contains(kind, key) && Arc::make_mut(state).remove(kind, key)
}

/// A watch event, with the object already converted.
#[derive(Debug)]
pub enum Change {
    Init,
    InitApply(Item),
    InitDone,
    Apply(Item),
    Delete(ObjectKey),
}

#[derive(Debug)]
struct StreamStore {
    kind: ObjectKind,
    synced: bool,
    owned: BTreeSet<ObjectKey>,
    buffer: Option<BTreeMap<ObjectKey, Item>>,
}

#[derive(Debug)]
pub struct KubeStore {
    state: Arc<SourceState>,
    streams: Vec<StreamStore>,
}

impl KubeStore {
    /// One entry per watch stream, in the order their events are tagged with.
    pub fn new(kinds: &[ObjectKind]) -> Self {
        let streams = kinds
            .iter()
            .map(|&kind| StreamStore { kind, synced: false, owned: BTreeSet::new(), buffer: None })
            .collect();
        Self { state: Arc::default(), streams }
    }

    /// True once every stream has completed its initial list.
    pub fn synced(&self) -> bool {
        self.streams.iter().all(|s| s.synced)
    }

    pub fn state(&self) -> Arc<SourceState> {
        self.state.clone()
    }

    /// Applies one event of stream `index`; says whether the state changed.
    pub fn apply(&mut self, index: usize, change: Change) -> bool {
        let stream = &mut self.streams[index];
        let state = &mut self.state;
        match change {
            Change::Init => {
                stream.buffer = Some(BTreeMap::new());
                false
            }
            Change::InitApply(item) => {
                stream.buffer.get_or_insert_default().insert(item.key().clone(), item);
                false
            }
            Change::InitDone => {
                let listed = stream.buffer.take().unwrap_or_default();
                let mut changed = !stream.synced;
                for gone in stream.owned.iter().filter(|k| !listed.contains_key(*k)) {
                    changed |= remove_from(state, stream.kind, gone);
                }
                stream.owned = listed.keys().cloned().collect();
                for item in listed.into_values() {
                    changed |= item.insert_into(state);
                }
                stream.synced = true;
                changed
            }
            Change::Apply(item) => {
                stream.owned.insert(item.key().clone());
                item.insert_into(state)
            }
            Change::Delete(key) => {
                stream.owned.remove(&key);
                remove_from(state, stream.kind, &key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortProtocol, Service, ServicePort, TargetPort};

    fn service(name: &str, port: u16) -> Item {
        let object = SourceObject::Service(Arc::new(Service {
            key: ObjectKey::new("shop", name),
            ports: vec![ServicePort {
                name: String::new(),
                port,
                protocol: PortProtocol::Tcp,
                target_port: TargetPort::Number(port),
                app_protocol: Default::default(),
            }],
            external_name: false,
            traffic_distribution: None,
        }));
        Item { object, held: None }
    }

    fn names(store: &KubeStore) -> Vec<String> {
        store.state().services.keys().map(|k| k.name.to_string()).collect()
    }

    #[test]
    fn not_synced_until_every_stream_listed() {
        let mut store = KubeStore::new(&[ObjectKind::Service, ObjectKind::EndpointSlice]);
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(service("a", 80)));
        assert!(names(&store).is_empty(), "the initial list is buffered");
        assert!(store.apply(0, Change::InitDone));
        assert!(!store.synced());
        store.apply(1, Change::Init);
        assert!(store.apply(1, Change::InitDone), "first sync counts as a change even when empty");
        assert!(store.synced());
        assert_eq!(names(&store), ["a"]);
    }

    #[test]
    fn relist_drops_objects_deleted_while_disconnected() {
        let mut store = KubeStore::new(&[ObjectKind::Service]);
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(service("a", 80)));
        store.apply(0, Change::InitApply(service("b", 80)));
        store.apply(0, Change::InitDone);
        // Outage, then a re-list in which b is gone and a changed.
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(service("a", 81)));
        assert_eq!(names(&store), ["a", "b"], "the old state is served until the list completes");
        assert!(store.apply(0, Change::InitDone));
        assert_eq!(names(&store), ["a"]);
        assert_eq!(store.state().services[&ObjectKey::new("shop", "a")].ports[0].port, 81);
    }

    #[test]
    fn apply_and_delete_report_real_changes_only() {
        let mut store = KubeStore::new(&[ObjectKind::Service]);
        store.apply(0, Change::InitDone);
        assert!(store.apply(0, Change::Apply(service("a", 80))));
        assert!(!store.apply(0, Change::Apply(service("a", 80))), "an identical update is no change");
        assert!(store.apply(0, Change::Delete(ObjectKey::new("shop", "a"))));
        assert!(!store.apply(0, Change::Delete(ObjectKey::new("shop", "a"))));
    }

    #[test]
    fn unchanged_relist_is_no_change() {
        let mut store = KubeStore::new(&[ObjectKind::Service]);
        for _ in 0..2 {
            store.apply(0, Change::Init);
            store.apply(0, Change::InitApply(service("a", 80)));
            store.apply(0, Change::InitDone);
        }
        store.apply(0, Change::Init);
        store.apply(0, Change::InitApply(service("a", 80)));
        assert!(!store.apply(0, Change::InitDone));
    }
}
