//! An immutable set of encoded resources with content-derived versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use super::ResourceType;

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

pub type Resources = BTreeMap<String, Arc<VersionedResource>>;

/// `body` versioned, sharing `previous`'s allocation when its bytes did not change.
fn versioned(previous: Option<&Snapshot>, encoded: &mut Encoded) -> Arc<VersionedResource> {
    let (ty, name) = (encoded.ty, &encoded.name);
    let fresh = VersionedResource {
        named_only: encoded.named_only,
        ..VersionedResource::new(std::mem::take(&mut encoded.body))
    };
    previous
        .and_then(|p| p.resources(ty).get(name))
        .filter(|old| old.as_ref() == &fresh)
        .cloned()
        .unwrap_or_else(|| Arc::new(fresh))
}

#[derive(Debug, Default)]
pub struct Snapshot {
    by_type: [Resources; ResourceType::COUNT],
    /// Per type, a hash of every name and version: what "version" a client is at.
    versions: [String; ResourceType::COUNT],
    /// When the source change this snapshot carries was first seen, for push-latency metrics.
    pub observed_at: Option<std::time::Instant>,
    /// Set by the cache: this snapshot's number, and what changed since the one before it.
    pub(super) generation: u64,
    pub(super) delta: Option<Arc<SnapshotDiff>>,
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
        let mut by_type: [Resources; ResourceType::COUNT] = Default::default();
        for encoded in encoded {
            let mut encoded = encoded.into();
            let resource = versioned(previous, &mut encoded);
            by_type[encoded.ty.index()].insert(encoded.name, resource);
        }
        let versions = Self::type_versions(&by_type);
        Self { by_type, versions, observed_at: None, generation: 0, delta: None }
    }

    /// `previous` with some resources replaced (same names): only those are hashed
    /// again; the rest are shared with `previous`.
    pub fn replacing(previous: &Snapshot, encoded: impl IntoIterator<Item = impl Into<Encoded>>) -> Self {
        let mut by_type = previous.by_type.clone();
        for encoded in encoded {
            let mut encoded = encoded.into();
            let resource = versioned(Some(previous), &mut encoded);
            by_type[encoded.ty.index()].insert(encoded.name, resource);
        }
        let versions = Self::type_versions(&by_type);
        Self { by_type, versions, observed_at: None, generation: 0, delta: None }
    }

    fn type_versions(by_type: &[Resources; ResourceType::COUNT]) -> [String; ResourceType::COUNT] {
        ResourceType::ALL.map(|ty| {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            for (name, resource) in &by_type[ty.index()] {
                hasher.update(name.as_bytes());
                hasher.update(resource.version.as_bytes());
            }
            format!("{:016x}", hasher.digest())
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
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
}

/// Names whose version changed, appeared or vanished between two snapshots, per type.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SnapshotDiff {
    pub changed: [Vec<String>; ResourceType::COUNT],
    pub removed: [Vec<String>; ResourceType::COUNT],
}

impl SnapshotDiff {
    pub fn between(old: Option<&Snapshot>, new: &Snapshot) -> Self {
        let mut diff = Self::default();
        for ty in ResourceType::ALL {
            let before = old.map(|o| o.resources(ty));
            let after = new.resources(ty);
            diff.changed[ty.index()] = after
                .iter()
                .filter(|(name, r)| before.and_then(|b| b.get(*name)).is_none_or(|o| o.version != r.version))
                .map(|(name, _)| name.clone())
                .collect();
            diff.removed[ty.index()] =
                before.into_iter().flat_map(|b| b.keys()).filter(|name| !after.contains_key(*name)).cloned().collect();
        }
        diff
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
