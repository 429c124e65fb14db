//! What one delta xDS client asked for of one resource type, and what it already has.
//!
//! Pure state: requests go in, the set of resources to send comes out. The
//! rules follow Envoy's incremental xDS protocol; each has a named test.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::cache::{Resources, VersionedResource};

const WILDCARD: &str = "*";

/// The parts of a `DeltaDiscoveryRequest` that change a subscription.
#[derive(Debug, Default, Clone, Copy)]
pub struct SubscriptionRequest<'a> {
    pub subscribe: &'a [String],
    pub unsubscribe: &'a [String],
    pub initial_resource_versions: Option<&'a HashMap<String, String>>,
}

/// What the client should be sent next.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub updated: Vec<(String, Arc<VersionedResource>)>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Subscription {
    started: bool,
    wildcard: bool,
    explicit: HashSet<String>,
    /// What the client holds: `Some(version)`, or `None` once told a name does not exist.
    known: HashMap<String, Option<String>>,
    owes_response: bool,
}

impl Subscription {
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.explicit.iter().map(String::as_str)
    }

    pub fn name_count(&self) -> usize {
        self.explicit.len()
    }

    /// The names and versions the client holds.
    pub fn held(&self) -> impl Iterator<Item = (&str, &str)> {
        self.known.iter().filter_map(|(n, v)| v.as_deref().map(|v| (n.as_str(), v)))
    }

    fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.explicit.contains(name)
    }

    pub fn apply(&mut self, request: SubscriptionRequest<'_>) {
        let first = !self.started;
        if first {
            self.started = true;
            // Legacy wildcard: a first request naming nothing asks for everything.
            self.wildcard = request.subscribe.is_empty();
            // Envoy answers the first request of every type before it finishes initialising.
            self.owes_response = true;
            if let Some(initial) = request.initial_resource_versions {
                self.known = initial.iter().map(|(n, v)| (n.clone(), Some(v.clone()))).collect();
            }
        }
        for name in request.subscribe {
            self.owes_response = true;
            if name == WILDCARD {
                self.wildcard = true;
                continue;
            }
            self.explicit.insert(name.clone());
            // A (re-)subscription is answered even when the client already has the current version;
            // on a new stream, initial_resource_versions says what it has instead.
            if !first {
                self.known.remove(name);
            }
        }
        for name in request.unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
                let explicit = &self.explicit;
                self.known.retain(|n, _| explicit.contains(n));
                continue;
            }
            self.explicit.remove(name);
            if !self.wildcard {
                self.known.remove(name);
            }
        }
    }

    /// Resources to send and names to remove so the client matches `resources`.
    pub fn changes(&self, resources: &Resources) -> Changes {
        let mut changes = Changes::default();
        let stale = |name: &str, resource: &VersionedResource| match self.known.get(name) {
            Some(Some(version)) => *version != resource.version,
            _ => true,
        };
        if self.wildcard {
            changes.updated = resources
                .iter()
                .filter(|(name, r)| stale(name, r))
                .map(|(name, r)| (name.clone(), r.clone()))
                .collect();
        } else {
            changes.updated = self
                .explicit
                .iter()
                .filter_map(|name| resources.get_key_value(name))
                .filter(|(name, r)| stale(name, r))
                .map(|(name, r)| (name.clone(), r.clone()))
                .collect();
            // Responses list resources in name order, whatever order the subscription holds them in.
            changes.updated.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        // Vanished resources the client holds, and subscribed names it was never told are absent.
        let mut removed: BTreeSet<&String> = self
            .known
            .iter()
            .filter(|(name, version)| version.is_some() && !resources.contains_key(*name))
            .map(|(name, _)| name)
            .collect();
        removed.extend(
            self.explicit.iter().filter(|name| !resources.contains_key(*name) && !self.known.contains_key(*name)),
        );
        changes.removed = removed.into_iter().cloned().collect();
        changes
    }

    /// Like [`Subscription::changes`], but only for `candidates`: the names that can have
    /// changed since the client was last in sync. Much cheaper than a full diff.
    pub fn changes_among<'a>(&self, resources: &Resources, candidates: impl IntoIterator<Item = &'a str>) -> Changes {
        let mut changes = Changes::default();
        let unique: BTreeSet<&str> = candidates.into_iter().filter(|n| self.in_scope(n)).collect();
        for name in unique {
            match (resources.get_key_value(name), self.known.get(name)) {
                (Some((_, resource)), Some(Some(version))) if *version == resource.version => {}
                (Some((key, resource)), _) => changes.updated.push((key.clone(), resource.clone())),
                (None, Some(Some(_))) => changes.removed.push(name.to_owned()),
                (None, None) if self.explicit.contains(name) => changes.removed.push(name.to_owned()),
                (None, _) => {}
            }
        }
        changes
    }

    /// Whether a response is due even if [`Subscription::changes`] is empty.
    pub fn owes_response(&self) -> bool {
        self.owes_response
    }

    pub fn record_sent(&mut self, changes: &Changes) {
        for (name, resource) in &changes.updated {
            self.known.insert(name.clone(), Some(resource.version.clone()));
        }
        for name in &changes.removed {
            if self.explicit.contains(name) {
                self.known.insert(name.clone(), None);
            } else {
                self.known.remove(name);
            }
        }
        self.owes_response = false;
    }

    /// Makes the next response carry `name` again if the client holds it; says whether it did.
    pub fn resend(&mut self, name: &str) -> bool {
        if self.in_scope(name) && matches!(self.known.get(name), Some(Some(_))) {
            self.known.remove(name);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
