//! Where connected clients are, and what clients at each place are served: the places
//! streams report ([`Places`]), and the variants of a snapshot built for them ([`Variants`]).
//!
//! Streams enter their place here and the pipeline reads the set to build variants for the
//! places in use only; variants are keyed by the place reduced to what some Service's
//! endpoints make a difference for, so clients claiming places no endpoint is in cost nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;

use super::Snapshot;
use crate::model::Place;

/// The places of connected clients, with how many streams are at each.
#[derive(Debug)]
pub struct Places {
    clients: watch::Sender<BTreeMap<Place, usize>>,
}

impl Default for Places {
    fn default() -> Self {
        Self { clients: watch::Sender::new(BTreeMap::new()) }
    }
}

impl Places {
    /// Counts a stream at `place` until the lease is dropped; a stream nowhere is not counted.
    pub fn enter(self: &Arc<Self>, place: Place) -> Option<PlaceLease> {
        if place.is_nowhere() {
            return None;
        }
        // Only a place new to the set wakes the pipeline; another stream there changes nothing it builds.
        self.clients.send_if_modified(|clients| {
            let count = clients.entry(place.clone()).or_default();
            *count += 1;
            *count == 1
        });
        Some(PlaceLease { places: self.clone(), place })
    }

    /// Changes whenever a place gains its first stream or loses its last one.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<Place, usize>> {
        self.clients.subscribe()
    }
}

/// A stream's presence at its place.
#[derive(Debug)]
pub struct PlaceLease {
    places: Arc<Places>,
    place: Place,
}

impl Drop for PlaceLease {
    fn drop(&mut self) {
        self.places.clients.send_if_modified(|clients| match clients.get_mut(&self.place) {
            Some(1) => {
                clients.remove(&self.place);
                true
            }
            Some(count) => {
                *count -= 1;
                false
            }
            None => false,
        });
    }
}

/// What clients at some places are served instead of the snapshot holding this.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variants {
    /// The zones and nodes that make a difference: some endpoint of a Service preferring
    /// them is there (or hinted for it). Nodes count only for Services preferring the node.
    pub zones: BTreeSet<Arc<str>>,
    pub nodes: BTreeSet<Arc<str>>,
    /// By key: the snapshot with that place's load assignments in place of the shared ones.
    pub by_key: BTreeMap<Place, Arc<Snapshot>>,
    /// Keys built and found to need nothing of their own (every preferring Service's
    /// endpoints are in one tier for them): their clients are served the shared snapshot.
    pub shared: BTreeSet<Place>,
}

impl Variants {
    /// The key of clients at `place`: the parts of it that make a difference, `None` when
    /// none does (the shared snapshot is theirs, whatever they claim).
    pub fn key_of(&self, place: &Place) -> Option<Place> {
        let key = Place {
            zone: place.zone.clone().filter(|z| self.zones.contains(z)),
            node: place.node.clone().filter(|n| self.nodes.contains(n)),
        };
        (!key.is_nowhere()).then_some(key)
    }

    /// Whether both serve the same keys, each from a variant or from the shared snapshot.
    pub fn same_keys(&self, other: &Variants) -> bool {
        self.shared == other.shared && self.by_key.keys().eq(other.by_key.keys())
    }

    /// The variant clients at `place` are served, with its key; `None` for the shared
    /// snapshot. `Err` with the key when its variant is not built yet.
    pub fn at(&self, place: &Place) -> Result<Option<(Place, &Arc<Snapshot>)>, Place> {
        let Some(key) = self.key_of(place) else { return Ok(None) };
        match self.by_key.get(&key) {
            Some(variant) => Ok(Some((key, variant))),
            None if self.shared.contains(&key) => Ok(None),
            None => Err(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> Place {
        Place { zone: Some(name.into()), node: None }
    }

    #[test]
    fn a_place_is_listed_while_a_stream_is_there_and_nowhere_is_never_listed() {
        let places = Arc::new(Places::default());
        let mut seen = places.subscribe();
        assert!(places.enter(Place::default()).is_none());
        let first = places.enter(zone("a"));
        assert!(seen.has_changed().unwrap());
        seen.borrow_and_update();
        let second = places.enter(zone("a"));
        assert!(!seen.has_changed().unwrap(), "a second stream at a known place wakes nobody");
        assert_eq!(seen.borrow().get(&zone("a")), Some(&2));
        drop(first);
        assert_eq!(seen.borrow().get(&zone("a")), Some(&1));
        drop(second);
        assert!(seen.borrow().is_empty());
    }
}
