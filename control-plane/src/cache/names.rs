//! One shared copy of each resource name, process-wide: snapshots, subscriptions and
//! pending resends all hold the same allocation, so a name a thousand clients subscribe
//! to costs a pointer per client.

use std::sync::{Arc, LazyLock, Mutex};

use hashbrown::HashTable;

use crate::lock::lock;

/// Names nobody else holds are dropped whenever the table has doubled since the last sweep,
/// so its size follows the names in use, never the names ever seen.
struct Table {
    names: HashTable<Arc<str>>,
    sweep_at: usize,
}

/// The hasher of the process-wide name tables: keyed per process, as names come from
/// clients, and hashed once per lookup (for the shard and within it). ahash, since std's
/// SipHash was a tenth of a 1,000-client sync's CPU.
pub type NameHasher = ahash::RandomState;

const FIRST_SWEEP: usize = 1024;

/// Shards, so streams subscribing at once (a reconnect storm) rarely wait for each other.
const SHARDS: usize = 16;

struct Tables {
    hasher: NameHasher,
    shards: [Mutex<Table>; SHARDS],
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| Tables {
    hasher: NameHasher::new(),
    shards: std::array::from_fn(|_| Mutex::new(Table { names: HashTable::new(), sweep_at: FIRST_SWEEP })),
});

/// The shared copy of `name`, if one is held: names a snapshot serves are, names nobody
/// serves (a client naming what does not exist) are not, and should not be made so.
pub fn shared(name: &str) -> Option<Arc<str>> {
    let tables = &*TABLES;
    let hash = tables.hasher.hash_one(name);
    lock(&tables.shards[hash as usize % SHARDS]).names.find(hash, |n| &**n == name).cloned()
}

/// The shared copy of `name`.
pub fn intern(name: &str) -> Arc<str> {
    let tables = &*TABLES;
    let hash = tables.hasher.hash_one(name);
    let mut table = lock(&tables.shards[hash as usize % SHARDS]);
    if let Some(shared) = table.names.find(hash, |n| &**n == name) {
        return shared.clone();
    }
    let shared: Arc<str> = Arc::from(name);
    let rehash = |n: &Arc<str>| tables.hasher.hash_one(&**n);
    table.names.insert_unique(hash, shared.clone(), rehash);
    if table.names.len() >= table.sweep_at {
        table.names.retain(|name| Arc::strong_count(name) > 1);
        table.sweep_at = (table.names.len() * 2).max(FIRST_SWEEP);
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_interned_twice_is_one_allocation() {
        let (a, b) = (intern("web.shop:80"), intern(&String::from("web.shop:80")));
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn names_nobody_holds_are_swept_so_the_table_stays_bounded() {
        for i in 0..3 * SHARDS * FIRST_SWEEP {
            drop(intern(&format!("unheld-{i}")));
        }
        let held: usize = TABLES.shards.iter().map(|shard| lock(shard).names.len()).sum();
        assert!(held < 2 * SHARDS * FIRST_SWEEP);
    }
}
