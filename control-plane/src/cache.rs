//! Versioned resources, and the small interface through which xDS streams read them.
//!
//! The cache holds only the latest snapshot. Streams watch it and compute
//! their own deltas, so a slow stream skips intermediate snapshots instead of
//! queueing them, and publishing never waits for any stream.

mod name_ids;
mod names;
mod places;
mod resource_type;
mod snapshot;

pub use name_ids::NameSet;
pub use names::{NameHasher, intern};
pub use places::{PlaceLease, Places, Variants};
pub use resource_type::ResourceType;
pub use snapshot::{Encoded, Resources, Snapshot, SnapshotDiff, VersionedResource, format_version, parse_version};

use std::sync::Arc;

use tokio::sync::watch;

/// `None` until the source's first full state has been translated.
pub type SnapshotReceiver = watch::Receiver<Option<Arc<Snapshot>>>;

/// What the xDS server needs from a cache.
pub trait SnapshotSource: Send + Sync + 'static {
    fn subscribe(&self) -> SnapshotReceiver;

    /// Where streams say their clients are, so that variants are built for those places.
    fn places(&self) -> Arc<Places>;

    /// The snapshot being served now.
    fn current(&self) -> Option<Arc<Snapshot>> {
        self.subscribe().borrow().clone()
    }
}

/// Holds the current snapshot and hands it to every stream.
#[derive(Debug)]
pub struct SnapshotCache {
    current: watch::Sender<Option<Arc<Snapshot>>>,
    places: Arc<Places>,
}

impl Default for SnapshotCache {
    fn default() -> Self {
        Self { current: watch::Sender::new(None), places: Arc::default() }
    }
}

impl SnapshotCache {
    /// Replaces the snapshot and says what changed; streams are woken only if something did.
    pub fn publish(&self, snapshot: Snapshot) -> SnapshotDiff {
        let diff = SnapshotDiff::between(self.current().as_deref(), &snapshot);
        self.publish_diffed(snapshot, diff.clone());
        diff
    }

    /// Replaces the snapshot with one whose changes since the current one are `diff`, as
    /// the pipeline records them while building it; streams are woken only if something
    /// changed. Whoever calls this must be the only publisher.
    pub fn publish_diffed(&self, mut snapshot: Snapshot, diff: SnapshotDiff) {
        self.current.send_if_modified(|current| {
            let first = current.is_none();
            // Streams at a place new to the pipeline wait for a snapshot built for it, even
            // one that finds the place needs nothing of its own.
            let keys_changed = current.as_ref().is_some_and(|c| !c.variants().same_keys(snapshot.variants()));
            if first || !diff.is_empty() || keys_changed {
                // Streams in sync with the previous generation only look at what changed.
                let generation = current.as_ref().map_or(1, |c| c.generation + 1);
                snapshot.stamp(generation, current.is_some().then(|| Arc::new(diff)));
                *current = Some(Arc::new(snapshot));
                return true;
            }
            false
        });
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.borrow().clone()
    }

    pub fn places(&self) -> Arc<Places> {
        self.places.clone()
    }
}

impl SnapshotSource for SnapshotCache {
    fn subscribe(&self) -> SnapshotReceiver {
        self.current.subscribe()
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        SnapshotCache::current(self)
    }

    fn places(&self) -> Arc<Places> {
        SnapshotCache::places(self)
    }
}
