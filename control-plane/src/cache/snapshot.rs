//! An immutable set of encoded resources with content-derived versions.

use std::sync::Arc;

use imbl::OrdMap;
use imbl::ordmap::DiffItem;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::ResourceType;
use super::places::Variants;
use crate::model::{Nodes, Place};

/// One encoded resource. Its version is a hash of its bytes, so identical
/// input gives identical versions in every process and after every restart.
#[derive(Debug, PartialEq, Eq)]
pub struct VersionedResource {
    /// `hash` as 16 hex digits: what goes on the wire.
    pub version: String,
    pub hash: u64,
    pub body: Vec<u8>,
    /// Sent only to clients that name it, never through a wildcard subscription: a gRPC
    /// client's api_listener, which an Envoy asking for every listener cannot take.
    pub named_only: bool,
}

impl VersionedResource {
    pub fn new(body: Vec<u8>) -> Self {
        let hash = xxh3_64(&body);
        Self { version: format_version(hash), hash, body, named_only: false }
    }
}

/// One encoded resource on its way into a snapshot.
#[derive(Debug)]
pub struct Encoded {
    pub ty: ResourceType,
    pub name: String,
    pub body: Vec<u8>,
    pub named_only: bool,
}

impl From<(ResourceType, String, Vec<u8>)> for Encoded {
    fn from((ty, name, body): (ResourceType, String, Vec<u8>)) -> Self {
        Self { ty, name, body, named_only: false }
    }
}

pub fn format_version(hash: u64) -> String {
    format!("{hash:016x}")
}

/// A version a client reports; one that is not ours never equals any of ours.
pub fn parse_version(version: &str) -> u64 {
    u64::from_str_radix(version, 16).ok().filter(|_| version.len() == 16).unwrap_or(u64::MAX)
}

/// One type's resources by name. Persistent, so a snapshot derived from another shares
/// every entry it did not replace, and two such snapshots compare in O(change). Names are
/// shared strings because every edit copies the keys of the nodes on its path.
pub type Resources = OrdMap<Arc<str>, Arc<VersionedResource>>;

/// `body` versioned, sharing `previous`'s allocation when its bytes did not change.
fn versioned(previous: Option<&Arc<VersionedResource>>, encoded: &mut Encoded) -> Arc<VersionedResource> {
    let fresh = VersionedResource {
        named_only: encoded.named_only,
        ..VersionedResource::new(std::mem::take(&mut encoded.body))
    };
    previous.filter(|old| old.as_ref() == &fresh).cloned().unwrap_or_else(|| Arc::new(fresh))
}

/// What one entry adds to its type's version: the type version is the wrapping sum over
/// entries, so it follows each insert and removal without visiting the others, and is
/// equal across replicas given the same resources, whatever order they came in.
fn entry_weight(name: &str, resource: &VersionedResource) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), resource.hash)
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    by_type: [Resources; ResourceType::COUNT],
    /// Per type, the sum of [`entry_weight`]s, and that as 16 hex digits: what "version" a
    /// client holding the whole type is at.
    sums: [u64; ResourceType::COUNT],
    versions: [String; ResourceType::COUNT],
    /// Per type, the bytes of every name: what a client subscribed to all of it holds.
    name_bytes: [usize; ResourceType::COUNT],
    /// When the source change this snapshot carries was first seen, for push-latency metrics.
    pub observed_at: Option<std::time::Instant>,
    /// Set by the cache: this snapshot's number, and what changed since the one before it.
    pub(super) generation: u64,
    pub(super) delta: Option<Arc<SnapshotDiff>>,
    /// What clients at some places are served instead (empty in a variant itself).
    variants: Arc<Variants>,
    /// The Nodes, for the zone of a client whose token is bound to one.
    nodes: Nodes,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.by_type == other.by_type
    }
}

impl Snapshot {
    /// Builds a snapshot from encoded resources. Entries whose bytes did not
    /// change since `previous` share its allocation.
    pub fn new(previous: Option<&Snapshot>, encoded: impl IntoIterator<Item = impl Into<Encoded>>) -> Self {
        let mut snapshot = Self::default();
        for encoded in encoded {
            let mut encoded = encoded.into();
            let old = previous.and_then(|p| p.resources(encoded.ty).get(encoded.name.as_str()));
            let resource = versioned(old, &mut encoded);
            snapshot.insert(encoded.ty, encoded.name, resource);
        }
        snapshot.seal();
        snapshot
    }

    /// Puts one resource in, or leaves the one there if its bytes are the same; says
    /// whether the resource under that name changed (or is new). Call [`Snapshot::seal`]
    /// after the last edit.
    pub fn put(&mut self, mut encoded: Encoded) -> bool {
        let old = self.by_type[encoded.ty.index()].get(encoded.name.as_str()).cloned();
        let resource = versioned(old.as_ref(), &mut encoded);
        if old.as_ref().is_some_and(|old| Arc::ptr_eq(old, &resource)) {
            return false;
        }
        self.insert(encoded.ty, encoded.name, resource);
        true
    }

    /// Puts in a resource another snapshot holds, sharing it (a variant following its base).
    pub fn put_shared(&mut self, ty: ResourceType, name: &str, resource: &Arc<VersionedResource>) {
        self.insert(ty, name.to_owned(), resource.clone());
    }

    /// Takes one resource out; says whether there was one.
    pub fn remove(&mut self, ty: ResourceType, name: &str) -> bool {
        let Some(old) = self.by_type[ty.index()].remove(name) else { return false };
        self.sums[ty.index()] = self.sums[ty.index()].wrapping_sub(entry_weight(name, &old));
        self.name_bytes[ty.index()] -= name.len();
        true
    }

    fn insert(&mut self, ty: ResourceType, name: String, resource: Arc<VersionedResource>) {
        let sum = &mut self.sums[ty.index()];
        *sum = sum.wrapping_add(entry_weight(&name, &resource));
        match self.by_type[ty.index()].insert(super::intern(&name), resource) {
            Some(old) => *sum = sum.wrapping_sub(entry_weight(&name, &old)),
            None => self.name_bytes[ty.index()] += name.len(),
        }
    }

    /// Brings the type versions up to date after edits.
    pub fn seal(&mut self) {
        self.versions = self.sums.map(format_version);
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What clients at `place` are served: a variant with their own load assignments, with
    /// its key, or this snapshot (`None`). Streams diff within one of these only: a client
    /// moved to another is diffed in full. `Err` with the key: the place makes a difference
    /// but its variant is not built yet (the pipeline builds it once a stream is there).
    pub fn at(&self, place: &Place) -> Result<(&Snapshot, Option<Place>), Place> {
        match self.variants.at(place)? {
            Some((key, variant)) => Ok((variant, Some(key))),
            None => Ok((self, None)),
        }
    }

    pub fn variants(&self) -> &Variants {
        &self.variants
    }

    pub fn set_variants(&mut self, variants: Variants) {
        self.variants = Arc::new(variants);
    }

    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    pub fn set_nodes(&mut self, nodes: Nodes) {
        self.nodes = nodes;
    }

    /// Stamps this snapshot and its variants as generation `generation`, changed by `delta`
    /// since the one before (one diff for all: it names what changed in any of them, and a
    /// stream compares versions before it sends).
    pub(super) fn stamp(&mut self, generation: u64, delta: Option<Arc<SnapshotDiff>>) {
        self.generation = generation;
        self.delta = delta.clone();
        if !self.variants.by_key.is_empty() {
            let variants = Arc::make_mut(&mut self.variants);
            for variant in variants.by_key.values_mut() {
                let variant = Arc::make_mut(variant);
                variant.generation = generation;
                variant.delta = delta.clone();
            }
        }
    }

    /// The names of `ty` that changed or vanished since generation `from`, if that was the previous one.
    pub fn changed_since(&self, from: u64, ty: ResourceType) -> Option<impl Iterator<Item = &str>> {
        let delta = self.delta.as_ref().filter(|_| from + 1 == self.generation)?;
        Some(delta.changed[ty.index()].iter().chain(&delta.removed[ty.index()]).map(String::as_str))
    }

    /// The version of a whole type: equal across replicas given the same input.
    pub fn version(&self, ty: ResourceType) -> &str {
        &self.versions[ty.index()]
    }

    pub fn resources(&self, ty: ResourceType) -> &Resources {
        &self.by_type[ty.index()]
    }

    pub fn len(&self, ty: ResourceType) -> usize {
        self.by_type[ty.index()].len()
    }

    /// The bytes of every name of `ty`.
    pub fn name_bytes(&self, ty: ResourceType) -> usize {
        self.name_bytes[ty.index()]
    }
}

/// Names whose version changed, appeared or vanished between two snapshots, per type.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SnapshotDiff {
    pub changed: [Vec<String>; ResourceType::COUNT],
    pub removed: [Vec<String>; ResourceType::COUNT],
}

impl SnapshotDiff {
    /// Compares two snapshots, skipping what they share: O(change) when `new` was made by
    /// editing `old`, O(size) when it was built afresh.
    pub fn between(old: Option<&Snapshot>, new: &Snapshot) -> Self {
        let mut diff = Self::default();
        let empty = Resources::default();
        for ty in ResourceType::ALL {
            let before = old.map_or(&empty, |o| o.resources(ty));
            for item in before.diff(new.resources(ty)) {
                match item {
                    DiffItem::Add(name, _) => diff.changed[ty.index()].push(name.to_string()),
                    DiffItem::Update { old: (_, was), new: (name, now) } if was.hash != now.hash => {
                        diff.changed[ty.index()].push(name.to_string())
                    }
                    DiffItem::Update { .. } => {}
                    DiffItem::Remove(name, _) => diff.removed[ty.index()].push(name.to_string()),
                }
            }
        }
        diff
    }

    /// Records that `name` of `ty` changed (or appeared), or vanished.
    pub fn record(&mut self, ty: ResourceType, name: &str, removed: bool) {
        let list = if removed { &mut self.removed[ty.index()] } else { &mut self.changed[ty.index()] };
        list.push(name.to_owned());
    }

    /// Sorted and without repeats, as [`SnapshotDiff::between`] gives it.
    pub fn normalize(&mut self) {
        for list in self.changed.iter_mut().chain(self.removed.iter_mut()) {
            list.sort_unstable();
            list.dedup();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changed.iter().chain(&self.removed).all(Vec::is_empty)
    }

    pub fn count(&self, ty: ResourceType) -> (usize, usize) {
        (self.changed[ty.index()].len(), self.removed[ty.index()].len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(previous: Option<&Snapshot>, items: &[(&str, &[u8])]) -> Snapshot {
        Snapshot::new(previous, items.iter().map(|(n, b)| (ResourceType::Cluster, n.to_string(), b.to_vec())))
    }

    #[test]
    fn version_is_a_stable_hash_of_the_bytes() {
        let a = VersionedResource::new(b"abc".to_vec());
        assert_eq!(a.version, VersionedResource::new(b"abc".to_vec()).version);
        assert_ne!(a.version, VersionedResource::new(b"abd".to_vec()).version);
        // Pinned: a change of hash function would change every version Envoys hold.
        assert_eq!(a.version, "78af5f94892f3950");
    }

    #[test]
    fn diff_reports_only_changed_added_and_removed_names() {
        let one = snap(None, &[("a", b"1"), ("b", b"2"), ("c", b"3")]);
        let two = snap(Some(&one), &[("a", b"1"), ("b", b"22"), ("d", b"4")]);
        let diff = SnapshotDiff::between(Some(&one), &two);
        assert_eq!(diff.changed[0], vec!["b", "d"]);
        assert_eq!(diff.removed[0], vec!["c"]);
        assert!(Arc::ptr_eq(&one.resources(ResourceType::Cluster)["a"], &two.resources(ResourceType::Cluster)["a"]));
    }
}
