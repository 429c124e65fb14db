//! The variants of a snapshot for client places: for each place some Service's preference
//! makes a difference for, the snapshot with that place's load assignments in place of the
//! shared ones. Kept change by change, as the snapshot is: a variant follows its base's
//! changes by sharing them, and a Service is localized again only when it was touched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::cache::{ResourceType, Snapshot, SnapshotDiff, Variants};
use crate::model::{CheckVerdicts, ObjectKey, Place, ResolvedService, TrafficDistribution};
use crate::translate::{self, TranslateOptions};

const EDS: ResourceType = ResourceType::ClusterLoadAssignment;

/// One variant, and which load assignments it holds of its own, by Service.
#[derive(Debug)]
struct Variant {
    snapshot: Snapshot,
    own: BTreeMap<ObjectKey, BTreeSet<String>>,
}

impl Variant {
    fn owns(&self, name: &str) -> bool {
        self.own.values().any(|names| names.contains(name))
    }

    /// Takes the base's changes in `diff`, except where this variant has its own assignment.
    fn follow(&mut self, base: &Snapshot, diff: &SnapshotDiff) {
        for ty in ResourceType::ALL {
            let names = diff.changed[ty.index()].iter().chain(&diff.removed[ty.index()]);
            for name in names {
                if ty == EDS && self.owns(name) {
                    continue;
                }
                restore(&mut self.snapshot, base, ty, name);
            }
        }
    }

    /// Localizes `service` (gone, or without a preference, when `None`) for `place` again;
    /// records what changed in `diff`.
    fn localize(
        &mut self,
        key: &ObjectKey,
        service: Option<&ResolvedService>,
        place: &Place,
        base: &Snapshot,
        context: (&TranslateOptions, &CheckVerdicts),
        diff: &mut SnapshotDiff,
    ) {
        let assignments = service.map(|s| translate::localized(s, context.0, context.1, place)).unwrap_or_default();
        let mut names = BTreeSet::new();
        for encoded in assignments {
            let name = encoded.name.clone();
            if self.snapshot.put(encoded) {
                diff.record(EDS, &name, false);
            }
            names.insert(name);
        }
        let old = self.own.remove(key).unwrap_or_default();
        for name in old.difference(&names) {
            restore(&mut self.snapshot, base, EDS, name);
            diff.record(EDS, name, false);
        }
        if !names.is_empty() {
            self.own.insert(key.clone(), names);
        }
    }
}

/// Makes `variant`'s entry of `name` the base's (or none, as the base has none).
fn restore(variant: &mut Snapshot, base: &Snapshot, ty: ResourceType, name: &str) {
    match base.resources(ty).get(name) {
        Some(resource) => variant.put_shared(ty, name, resource),
        None => {
            variant.remove(ty, name);
        }
    }
}

/// Every variant the current client places need.
#[derive(Debug, Default)]
pub(super) struct PlaceVariants {
    /// Services that ask to keep traffic close.
    preferring: BTreeMap<ObjectKey, Arc<ResolvedService>>,
    by_key: BTreeMap<Place, Variant>,
    /// The current variants as the snapshot carries them.
    published: Variants,
}

impl PlaceVariants {
    /// Brings the variants to `places` after the base took `base_diff`; `touched`: the
    /// Services translated again. What changed in any variant is added to `diff`.
    pub(super) fn update(
        &mut self,
        services: &imbl::OrdMap<ObjectKey, Arc<ResolvedService>>,
        touched: &BTreeSet<ObjectKey>,
        places: &BTreeSet<Place>,
        base: &Snapshot,
        context: (&TranslateOptions, &CheckVerdicts),
        diff: &mut SnapshotDiff,
    ) {
        let base_diff = diff.clone();
        let mut relocalize = Vec::new();
        for key in touched {
            let now = services.get(key).filter(|s| s.traffic_distribution.is_some());
            let was = match now {
                Some(service) => self.preferring.insert(key.clone(), service.clone()).is_some(),
                None => self.preferring.remove(key).is_some(),
            };
            if now.is_some() || was {
                relocalize.push(key.clone());
            }
        }
        let (zones, nodes) = self.relevant();
        let space = Variants { zones, nodes, ..Variants::default() };
        let wanted: BTreeSet<Place> = places.iter().filter_map(|place| space.key_of(place)).collect();
        self.by_key.retain(|key, _| wanted.contains(key));
        for key in &wanted {
            match self.by_key.get_mut(key) {
                Some(variant) => {
                    variant.follow(base, &base_diff);
                    for service in &relocalize {
                        let current = self.preferring.get(service).map(|s| &**s);
                        variant.localize(service, current, key, base, context, diff);
                    }
                }
                None => {
                    let mut variant = Variant { snapshot: base.clone(), own: BTreeMap::new() };
                    // Its clients were served the base: the diff tells them what differs now.
                    for (service, current) in &self.preferring {
                        variant.localize(service, Some(current), key, base, context, diff);
                    }
                    self.by_key.insert(key.clone(), variant);
                }
            }
        }
        // A key whose variant holds nothing of its own is the base: its clients share that.
        let shared: BTreeSet<Place> =
            self.by_key.iter().filter(|(_, variant)| variant.own.is_empty()).map(|(key, _)| key.clone()).collect();
        self.by_key.retain(|_, variant| !variant.own.is_empty());
        for variant in self.by_key.values_mut() {
            variant.snapshot.seal();
        }
        self.published = Variants {
            by_key: self.by_key.iter().map(|(key, v)| (key.clone(), Arc::new(v.snapshot.clone()))).collect(),
            shared,
            ..space
        };
    }

    pub(super) fn published(&self) -> &Variants {
        &self.published
    }

    /// Load assignments held by a variant of its own, across variants.
    pub(super) fn assignments(&self) -> usize {
        self.by_key.values().flat_map(|v| v.own.values()).map(BTreeSet::len).sum()
    }

    /// The zones some preferring Service has an endpoint in (or hinted for), and the nodes
    /// of Services preferring the same node: the parts of a place that make a difference.
    fn relevant(&self) -> (BTreeSet<Arc<str>>, BTreeSet<Arc<str>>) {
        let mut zones = BTreeSet::new();
        let mut nodes = BTreeSet::new();
        for service in self.preferring.values() {
            let by_node = service.traffic_distribution == Some(TrafficDistribution::PreferSameNode);
            for endpoint in service.ports.iter().flat_map(|p| &p.endpoints) {
                zones.extend(endpoint.zone.as_deref().map(Arc::from));
                zones.extend(endpoint.hints.for_zones.iter().map(|z| Arc::from(z.as_str())));
                if by_node {
                    nodes.extend(endpoint.node_name.as_deref().map(Arc::from));
                    nodes.extend(endpoint.hints.for_nodes.iter().map(|n| Arc::from(n.as_str())));
                }
            }
        }
        (zones, nodes)
    }
}
