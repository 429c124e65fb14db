//! Process-wide 4-byte numbers for resource names, so the names a stream subscribes to are
//! a sorted list of ids (4 bytes a name) instead of a hash table of pointers (35 kB for
//! Envoy's 1,000 EDS names).
//!
//! Each id is counted: held by the sets that contain it, and freed for reuse when the last
//! one lets go, so the table follows the names in use, never the names ever seen, and a
//! client cannot inflate the ids of others for long.

use std::sync::{Arc, LazyLock, Mutex};

use hashbrown::HashTable;

use super::names::shared;
use crate::lock::lock;

/// Shards, so streams subscribing at once (a reconnect storm) rarely wait for each other.
/// An id's shard is its low bits.
const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    /// Local ids, found by their name's hash (hashed once, for the shard and here).
    by_name: HashTable<u32>,
    /// By local id: the name and how many sets hold it.
    entries: Vec<(Option<Arc<str>>, u32)>,
    free: Vec<u32>,
}

struct Table {
    hasher: super::names::NameHasher,
    shards: [Mutex<Shard>; SHARDS],
}

static TABLE: LazyLock<Table> = LazyLock::new(Table::default);

impl Default for Table {
    fn default() -> Self {
        Self { hasher: super::names::NameHasher::new(), shards: std::array::from_fn(|_| Mutex::default()) }
    }
}

fn split(id: u32) -> (usize, usize) {
    (id as usize % SHARDS, id as usize / SHARDS)
}

fn join(shard: usize, local: u32) -> u32 {
    local * SHARDS as u32 + shard as u32
}

impl Shard {
    fn find(&self, hash: u64, name: &str) -> Option<u32> {
        let entries = &self.entries;
        self.by_name.find(hash, |&local| entries[local as usize].0.as_deref() == Some(name)).copied()
    }
}

impl Table {
    /// The name's hash, and its shard (the hash's low bits).
    fn hash(&self, name: &str) -> (u64, usize) {
        let hash = self.hasher.hash_one(name);
        (hash, hash as usize % SHARDS)
    }

    /// The id of `name`, counted once more.
    fn acquire(&self, name: &str) -> u32 {
        let (hash, shard_index) = self.hash(name);
        let mut shard = lock(&self.shards[shard_index]);
        if let Some(local) = shard.find(hash, name) {
            shard.entries[local as usize].1 += 1;
            return join(shard_index, local);
        }
        // A name a snapshot serves shares its allocation; any other one is this table's own,
        // freed with its last holder instead of lingering in the interner.
        let shared = shared(name).unwrap_or_else(|| Arc::from(name));
        let local = match shard.free.pop() {
            Some(local) => {
                shard.entries[local as usize] = (Some(shared), 1);
                local
            }
            None => {
                shard.entries.push((Some(shared), 1));
                (shard.entries.len() - 1) as u32
            }
        };
        let Shard { by_name, entries, .. } = &mut *shard;
        let rehash = |&local: &u32| entries[local as usize].0.as_deref().map_or(0, |n| self.hasher.hash_one(n));
        by_name.insert_unique(hash, local, rehash);
        join(shard_index, local)
    }

    /// Counts `id` once less; the last release frees it.
    fn release(&self, id: u32) {
        let (shard_index, local) = split(id);
        let mut shard = lock(&self.shards[shard_index]);
        let Some(entry) = shard.entries.get_mut(local) else { return };
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0
            && let Some(name) = entry.0.take()
        {
            let hash = self.hasher.hash_one(&*name);
            if let Ok(found) = shard.by_name.find_entry(hash, |&other| other as usize == local) {
                found.remove();
            }
            shard.free.push(local as u32);
        }
    }

    /// The id of `name`, if anyone holds one.
    fn lookup(&self, name: &str) -> Option<u32> {
        let (hash, shard_index) = self.hash(name);
        lock(&self.shards[shard_index]).find(hash, name).map(|local| join(shard_index, local))
    }

    /// The name of a held id.
    fn name_of(&self, id: u32) -> Option<Arc<str>> {
        let (shard_index, local) = split(id);
        lock(&self.shards[shard_index]).entries.get(local).and_then(|entry| entry.0.clone())
    }
}

fn acquire(name: &str) -> u32 {
    TABLE.acquire(name)
}

fn release(id: u32) {
    TABLE.release(id)
}

fn lookup(name: &str) -> Option<u32> {
    TABLE.lookup(name)
}

fn name_of(id: u32) -> Option<Arc<str>> {
    TABLE.name_of(id)
}

/// A set of names as sorted ids, each held once while it is in the set, with a flag per
/// name for its owner's use (a subscription marks names it was just asked for and has not
/// sent yet). An entry is `id << 1 | flag`, so a name costs 4 bytes, flag included.
#[derive(Default)]
pub struct NameSet {
    entries: Vec<u32>,
    flagged: usize,
    /// The bytes of the names in the set: what a client's subscription holds in names.
    bytes: usize,
}

impl std::fmt::Debug for NameSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl NameSet {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of the names in the set.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn position(&self, name: &str) -> Option<usize> {
        // A new subscription's first request asks about every name it names: no table lookup.
        if self.entries.is_empty() {
            return None;
        }
        let id = lookup(name)?;
        self.entries.binary_search_by(|entry| (entry >> 1).cmp(&id)).ok()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// The set's own allocation of `name`, if the set holds it.
    pub fn shared(&self, name: &str) -> Option<Arc<str>> {
        let at = self.position(name)?;
        name_of(self.entries[at] >> 1)
    }

    /// `None` if `name` is not in the set, else its flag.
    pub fn flag(&self, name: &str) -> Option<bool> {
        self.position(name).map(|at| self.entries[at] & 1 == 1)
    }

    /// Whether any name is flagged: while none is, no flag needs looking up.
    pub fn any_flagged(&self) -> bool {
        self.flagged > 0
    }

    /// Adds names, each with its flag, in one sort, since clients name hundreds at once; a
    /// name already in the set keeps its flag.
    pub fn extend<'a>(&mut self, names: impl IntoIterator<Item = (&'a str, bool)>) {
        let before = self.entries.len();
        let mut added = 0;
        self.entries.extend(names.into_iter().map(|(name, flag)| {
            added += name.len();
            acquire(name) << 1 | u32::from(flag)
        }));
        self.bytes += added;
        if self.entries.len() == before {
            return;
        }
        // Two sorted runs: the stable sort merges them in linear time, and keeps the entry
        // that was there before ahead of a new one for the same name.
        self.entries.sort_by_key(|entry| entry >> 1);
        let mut repeats = Vec::new();
        self.entries.dedup_by(|later, kept| {
            let same = *later >> 1 == *kept >> 1;
            if same {
                repeats.push(*later >> 1);
            }
            same
        });
        for id in repeats {
            self.bytes -= name_of(id).map_or(0, |name| name.len());
            release(id);
        }
        self.flagged = self.entries.iter().filter(|entry| *entry & 1 == 1).count();
        if self.entries.capacity() > 2 * self.entries.len() + 16 {
            self.entries.shrink_to_fit();
        }
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let Some(at) = self.position(name) else { return false };
        let entry = self.entries.remove(at);
        self.flagged -= (entry & 1) as usize;
        self.bytes -= name.len();
        release(entry >> 1);
        true
    }

    pub fn unflag(&mut self, name: &str) {
        if self.flagged == 0 {
            return;
        }
        if let Some(at) = self.position(name)
            && self.entries[at] & 1 == 1
        {
            self.entries[at] &= !1;
            self.flagged -= 1;
        }
    }

    pub fn unflag_all(&mut self) {
        if self.flagged > 0 {
            self.entries.iter_mut().for_each(|entry| *entry &= !1);
            self.flagged = 0;
        }
    }

    /// The names, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        self.entries.iter().filter_map(|entry| name_of(entry >> 1))
    }

    /// The names with their flags, in no particular order: what a walk over every name
    /// needs, without looking each flag up again by name.
    pub fn iter_flagged(&self) -> impl Iterator<Item = (Arc<str>, bool)> + '_ {
        self.entries.iter().filter_map(|entry| Some((name_of(entry >> 1)?, entry & 1 == 1)))
    }

    /// The flagged names only, found without a look at the others' names.
    pub fn flagged(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        let entries = if self.flagged == 0 { &[][..] } else { &self.entries[..] };
        entries.iter().filter(|entry| *entry & 1 == 1).filter_map(|entry| name_of(entry >> 1))
    }
}

impl Drop for NameSet {
    fn drop(&mut self) {
        self.entries.drain(..).for_each(|entry| release(entry >> 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_each_name_once_with_its_first_flag_and_finds_it_by_name() {
        let mut set = NameSet::default();
        set.extend([("web.shop:80", false), ("db.shop:5432", true), ("web.shop:80", true)]);
        set.extend([("web.shop:80", true)]);
        assert_eq!(set.len(), 2);
        assert!(set.contains("web.shop:80") && set.contains("db.shop:5432"));
        assert!(!set.contains("cache.shop:6379"));
        assert_eq!(set.flag("web.shop:80"), Some(false), "the first flag given stays");
        assert_eq!(set.flag("db.shop:5432"), Some(true));
        assert_eq!(set.flagged().map(|n| n.to_string()).collect::<Vec<_>>(), ["db.shop:5432"]);
        set.unflag("db.shop:5432");
        assert!(!set.any_flagged());
        assert_eq!(set.flagged().count(), 0);
        let mut names: Vec<String> = set.iter().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(names, ["db.shop:5432", "web.shop:80"]);
        assert!(set.remove("web.shop:80"));
        assert!(!set.remove("web.shop:80"));
        assert!(!set.contains("web.shop:80"));
    }

    #[test]
    fn an_id_is_freed_when_its_last_holder_lets_go_and_reused_for_another_name() {
        let table = Table::default();
        let shared = table.acquire("web.shop:80");
        assert_eq!(table.acquire("web.shop:80"), shared);
        table.release(shared);
        assert_eq!(table.lookup("web.shop:80"), Some(shared), "still held once");
        table.release(shared);
        assert_eq!(table.lookup("web.shop:80"), None, "freed with its last holder");
        let (shard, _) = split(shared);
        let other = (0..).map(|i| format!("svc-{i}.shop:80")).find(|n| table.hash(n).1 == shard).expect("a name");
        assert_eq!(table.acquire(&other), shared, "the freed id is taken before a new one");
        assert_eq!(table.name_of(shared).as_deref(), Some(other.as_str()));
    }
}
