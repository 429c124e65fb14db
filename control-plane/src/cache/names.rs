//! One shared copy of each resource name, process-wide: snapshots, subscriptions and
//! pending resends all hold the same allocation, so a name a thousand clients subscribe
//! to costs a pointer per client.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock, Mutex};

use crate::lock::lock;

/// Names nobody else holds are dropped whenever the table has doubled since the last sweep,
/// so its size follows the names in use, never the names ever seen.
struct Table {
    names: HashSet<Arc<str>>,
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 1024;

/// Shards, so streams subscribing at once (a reconnect storm) rarely wait for each other.
const SHARDS: usize = 16;

struct Tables {
    hasher: RandomState,
    shards: [Mutex<Table>; SHARDS],
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| Tables {
    hasher: RandomState::new(),
    shards: std::array::from_fn(|_| Mutex::new(Table { names: HashSet::new(), sweep_at: FIRST_SWEEP })),
});

/// The shared copy of `name`, if one is held: names a snapshot serves are, names nobody
/// serves (a client naming what does not exist) are not, and should not be made so.
pub fn shared(name: &str) -> Option<Arc<str>> {
    let tables = &*TABLES;
    let shard = tables.hasher.hash_one(name) as usize % SHARDS;
    lock(&tables.shards[shard]).names.get(name).cloned()
}

/// The shared copy of `name`.
pub fn intern(name: &str) -> Arc<str> {
    let tables = &*TABLES;
    let shard = tables.hasher.hash_one(name) as usize % SHARDS;
    let mut table = lock(&tables.shards[shard]);
    if let Some(shared) = table.names.get(name) {
        return shared.clone();
    }
    let shared: Arc<str> = Arc::from(name);
    table.names.insert(shared.clone());
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
