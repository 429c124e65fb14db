//! Keeps the resolved model and every Service's encoded resources between changes, so a
//! change costs what it touches, not what the cluster holds.
//!
//! A source change re-resolves only the Service keys it touches ([`ModelIndex`]); a verdict
//! change touches the Services of the clusters it flips. Each touched Service is translated
//! and encoded again, and only its resources are replaced in the snapshot, which shares the
//! rest with the previous one. The diff the cache publishes is recorded on the way.
//!
//! The one resource built from every Service is the outbound RouteConfiguration. Its bytes
//! are the concatenation of each Service's encoded virtual hosts, kept per Service, so it is
//! assembled again (a copy, not an encode) only when some Service's virtual hosts changed:
//! never for an endpoint change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;

use super::variants::PlaceVariants;
use crate::cache::{Encoded, ResourceType, Snapshot, SnapshotDiff};
use crate::model::{CheckVerdicts, Model, ModelIndex, ObjectKey, Place, ResolvedService, SourceState};
use crate::translate::{self, OUTBOUND, TranslateOptions};

/// What one Service put into the snapshot.
#[derive(Debug, Default)]
struct Owned {
    names: BTreeSet<(ResourceType, String)>,
    /// Its virtual hosts, each encoded as a field of the outbound RouteConfiguration.
    virtual_hosts: Vec<u8>,
    endpoints: usize,
}

/// The snapshot, kept up to date change by change.
#[derive(Debug)]
pub struct SnapshotBuilder {
    options: TranslateOptions,
    index: ModelIndex,
    verdicts: Arc<CheckVerdicts>,
    owned: BTreeMap<ObjectKey, Owned>,
    /// Service keys by Service name: `svc` alone names a Service only while its name is unique.
    by_name: BTreeMap<Arc<str>, BTreeSet<ObjectKey>>,
    owner_of_cluster: HashMap<String, ObjectKey>,
    snapshot: Snapshot,
    endpoints: usize,
    updated: bool,
    /// The places clients are at, and the variants they need.
    places: BTreeSet<Place>,
    variants: PlaceVariants,
}

/// What one update changed.
#[derive(Debug, Default)]
pub struct Update {
    pub diff: SnapshotDiff,
    /// Whether the model changed (a verdict-only change leaves it as it was).
    pub model_changed: bool,
}

impl SnapshotBuilder {
    pub fn new(options: TranslateOptions) -> Self {
        let mut snapshot = Snapshot::default();
        snapshot.put(outbound_listener(&options));
        snapshot.put(outbound_routes(std::iter::empty()));
        snapshot.seal();
        Self {
            options,
            index: ModelIndex::default(),
            verdicts: Arc::default(),
            owned: BTreeMap::new(),
            by_name: BTreeMap::new(),
            owner_of_cluster: HashMap::new(),
            snapshot,
            endpoints: 0,
            updated: false,
            places: BTreeSet::new(),
            variants: PlaceVariants::default(),
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn model(&self) -> &Model {
        self.index.model()
    }

    /// Endpoints across every cluster.
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    /// Load assignments of variants for client places, across variants; and the variants.
    pub fn localized(&self) -> (usize, usize) {
        (self.variants.assignments(), self.variants.published().by_key.len())
    }

    /// Brings the snapshot to `state` and `verdicts`, with variants for clients at `places`.
    pub fn update(&mut self, state: &SourceState, verdicts: &Arc<CheckVerdicts>, places: &BTreeSet<Place>) -> Update {
        let mut touched = self.index.update(state);
        // The first model is news even when it is empty.
        let first = !std::mem::replace(&mut self.updated, true);
        let model_changed = first || !touched.is_empty();
        if !Arc::ptr_eq(&self.verdicts, verdicts) {
            let owners = self.verdicts.clusters_differing(verdicts).into_iter();
            touched.extend(owners.filter_map(|cluster| self.owner_of_cluster.get(cluster)).cloned());
            self.verdicts = verdicts.clone();
        }
        self.touch_namesakes(&mut touched);
        let mut diff = SnapshotDiff::default();
        let mut virtual_hosts_changed = false;
        for key in &touched {
            virtual_hosts_changed |= self.translate(key, &mut diff);
        }
        if virtual_hosts_changed {
            let routes = outbound_routes(self.owned.values().map(|o| o.virtual_hosts.as_slice()));
            if self.snapshot.put(routes) {
                diff.record(ResourceType::RouteConfiguration, OUTBOUND, false);
            }
        }
        self.snapshot.seal();
        if model_changed || &self.places != places || !touched.is_empty() {
            self.places.clone_from(places);
            let services = &self.index.model().services;
            let context = (&self.options, &*self.verdicts);
            self.variants.update(services, &touched, places, &self.snapshot, context, &mut diff);
            self.snapshot.set_variants(self.variants.published().clone());
            self.snapshot.set_nodes(self.index.model().nodes.clone());
        }
        diff.normalize();
        Update { diff, model_changed }
    }

    /// A Service that appears or vanishes can make its name unique or shared across
    /// namespaces, which changes the domains of every Service of that name.
    fn touch_namesakes(&mut self, touched: &mut BTreeSet<ObjectKey>) {
        let services = &self.index.model().services;
        let mut names = BTreeSet::new();
        for key in touched.iter() {
            let (now, before) = (services.contains_key(key), self.owned.contains_key(key));
            if now == before {
                continue;
            }
            let keys = self.by_name.entry(key.name.clone()).or_default();
            if now {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
            names.insert(key.name.clone());
        }
        for name in names {
            let keys = self.by_name.get(&name).cloned().unwrap_or_default();
            if keys.is_empty() {
                self.by_name.remove(&name);
            }
            touched.extend(keys);
        }
    }

    /// Translates one Service again and replaces what it owned; says whether its virtual
    /// hosts changed.
    fn translate(&mut self, key: &ObjectKey, diff: &mut SnapshotDiff) -> bool {
        let old = self.owned.remove(key).unwrap_or_default();
        self.endpoints -= old.endpoints;
        let service = self.index.model().services.get(key).cloned();
        let owned = match &service {
            Some(service) => self.encode(service, diff),
            None => Owned::default(),
        };
        for (ty, name) in old.names.difference(&owned.names) {
            if self.snapshot.remove(*ty, name) {
                diff.record(*ty, name, true);
            }
            if *ty == ResourceType::Cluster {
                self.owner_of_cluster.remove(name);
            }
        }
        let changed = old.virtual_hosts != owned.virtual_hosts;
        if service.is_some() {
            self.endpoints += owned.endpoints;
            self.owned.insert(key.clone(), owned);
        }
        changed
    }

    fn encode(&mut self, service: &ResolvedService, diff: &mut SnapshotDiff) -> Owned {
        let unique = self.by_name.get(&service.key.name).is_some_and(|keys| keys.len() == 1);
        let part = translate::contribution(service, &self.options, &self.verdicts, unique);
        let mut owned = Owned { endpoints: part.endpoints, ..Owned::default() };
        for encoded in part.resources {
            owned.names.insert((encoded.ty, encoded.name.clone()));
            if encoded.ty == ResourceType::Cluster {
                self.owner_of_cluster.insert(encoded.name.clone(), service.key.clone());
            }
            let (ty, name) = (encoded.ty, encoded.name.clone());
            if self.snapshot.put(encoded) {
                diff.record(ty, &name, false);
            }
        }
        for host in &part.virtual_hosts {
            prost::encoding::message::encode(VIRTUAL_HOSTS_FIELD, host, &mut owned.virtual_hosts);
        }
        owned
    }
}

/// The sidecar's outbound listener: the same for every state.
pub(super) fn outbound_listener(options: &TranslateOptions) -> Encoded {
    let listener = translate::outbound_listener(options.outbound_listener);
    Encoded::from((ResourceType::Listener, listener.name.clone(), listener.encode_to_vec()))
}

/// `RouteConfiguration.virtual_hosts`.
const VIRTUAL_HOSTS_FIELD: u32 = 2;

/// The outbound RouteConfiguration from its virtual hosts, each already encoded as its
/// field. Byte for byte what encoding the whole message gives, since prost writes fields in
/// number order and `name` (1) is the only one before `virtual_hosts` (2).
fn outbound_routes<'a>(virtual_hosts: impl Iterator<Item = &'a [u8]>) -> Encoded {
    let mut body = RouteConfiguration { name: OUTBOUND.to_owned(), ..Default::default() }.encode_to_vec();
    for host in virtual_hosts {
        body.extend_from_slice(host);
    }
    Encoded::from((ResourceType::RouteConfiguration, OUTBOUND.to_owned(), body))
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
