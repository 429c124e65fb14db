//! What one xDS client asked for of one resource type, and what it already has.
//!
//! Pure state: requests go in, the set of resources to send comes out. The
//! rules follow Envoy's incremental xDS protocol; each has a named test.
//! One map entry per name the client subscribed to or holds, kept small: a
//! proxy can hold thousands of resources and edge nodes run many proxies.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::cache::{Resources, VersionedResource, format_version, parse_version};

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

/// What the client holds of one name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Known {
    /// Nothing, as far as we know: send it if it exists.
    #[default]
    Nothing,
    /// Told it does not exist.
    Absent,
    /// This version (the hash behind the hex version string).
    Held(u64),
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Named in resource_names_subscribe (not merely held through the wildcard).
    subscribed: bool,
    known: Known,
}

#[derive(Debug, Default)]
pub struct Subscription {
    started: bool,
    wildcard: bool,
    entries: HashMap<Box<str>, Entry>,
    owes_response: bool,
}

impl Subscription {
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether the client has asked for this type at all yet.
    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter(|(_, e)| e.subscribed).map(|(n, _)| &**n)
    }

    pub fn name_count(&self) -> usize {
        self.names().count()
    }

    /// The names the client holds, with the version hash of each.
    pub fn held(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().filter_map(|(n, e)| match e.known {
            Known::Held(v) => Some((&**n, v)),
            _ => None,
        })
    }

    fn subscribed(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.subscribed)
    }

    /// Whether the client asked for `name`, by name or, unless `resource` is named-only, by wildcard.
    fn in_scope(&self, name: &str, resource: Option<&VersionedResource>) -> bool {
        (self.wildcard && !resource.is_some_and(|r| r.named_only)) || self.subscribed(name)
    }

    fn known(&self, name: &str) -> Known {
        self.entries.get(name).map_or(Known::Nothing, |e| e.known)
    }

    fn entry(&mut self, name: &str) -> &mut Entry {
        if !self.entries.contains_key(name) {
            self.entries.insert(name.into(), Entry::default());
        }
        self.entries.get_mut(name).unwrap_or_else(|| unreachable!("inserted above"))
    }

    pub fn apply(&mut self, request: SubscriptionRequest<'_>) {
        let first = !self.started;
        if first {
            self.started = true;
            // Legacy wildcard: a first request naming nothing asks for everything.
            self.wildcard = request.subscribe.is_empty();
            // Envoy answers the first request of every type before it finishes initialising.
            self.owes_response = true;
            for (name, version) in request.initial_resource_versions.into_iter().flatten() {
                self.entry(name).known = Known::Held(parse_version(version));
            }
        }
        for name in request.subscribe {
            self.owes_response = true;
            if name == WILDCARD {
                self.wildcard = true;
                continue;
            }
            let entry = self.entry(name);
            entry.subscribed = true;
            // A (re-)subscription is answered even when the client already has the current version;
            // on a new stream, initial_resource_versions says what it has instead.
            if !first {
                entry.known = Known::Nothing;
            }
        }
        for name in request.unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
                self.entries.retain(|_, e| e.subscribed);
                continue;
            }
            if self.wildcard {
                if let Some(entry) = self.entries.get_mut(name.as_str()) {
                    entry.subscribed = false;
                }
            } else {
                self.entries.remove(name.as_str());
            }
        }
    }

    /// A state-of-the-world request: its names are the whole subscription (`wildcard`: a
    /// listener or cluster request naming nothing, or `*`). A name dropped is forgotten, as
    /// the client forgets it; a name added is sent even if the client had it before.
    /// Says whether the subscription changed, which a response must answer.
    pub fn replace(&mut self, names: &[String], wildcard: bool) -> bool {
        let wanted: BTreeSet<&str> = names.iter().map(String::as_str).filter(|n| *n != WILDCARD).collect();
        let wildcard = wildcard || names.iter().any(|n| n == WILDCARD);
        let mut changed = !self.started || wildcard != self.wildcard;
        self.started = true;
        self.wildcard = wildcard;
        self.entries.retain(|name, entry| {
            if wanted.contains(&**name) || !entry.subscribed {
                return true;
            }
            changed = true;
            entry.subscribed = false;
            // Still in scope through the wildcard: keep what the client holds.
            wildcard && matches!(entry.known, Known::Held(_))
        });
        if !wildcard {
            self.entries.retain(|_, e| e.subscribed);
        }
        for name in wanted {
            let entry = self.entry(name);
            if !entry.subscribed {
                changed = true;
                *entry = Entry { subscribed: true, known: Known::Nothing };
            }
        }
        self.owes_response |= changed;
        changed
    }

    /// What the client holds, from `resources`, in name order: a full-state response.
    pub fn held_resources(&self, resources: &Resources) -> Vec<(String, Arc<VersionedResource>)> {
        let mut held: Vec<_> = self
            .held()
            .filter_map(|(name, _)| resources.get_key_value(name))
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
        held.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        held
    }

    /// A version for everything the client holds: a hash of each name and version, so two
    /// replicas serving the same resources give the same version.
    pub fn held_version(&self) -> String {
        let mut held: Vec<(&str, u64)> = self.held().collect();
        held.sort_unstable();
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for (name, hash) in held {
            hasher.update(name.as_bytes());
            hasher.update(&hash.to_le_bytes());
        }
        format_version(hasher.digest())
    }

    fn stale(&self, name: &str, resource: &VersionedResource) -> bool {
        self.known(name) != Known::Held(resource.hash)
    }

    /// Resources to send and names to remove so the client matches `resources`.
    pub fn changes(&self, resources: &Resources) -> Changes {
        let mut changes = Changes::default();
        if self.wildcard {
            changes.updated = resources
                .iter()
                .filter(|(name, r)| (!r.named_only || self.subscribed(name)) && self.stale(name, r))
                .map(|(name, r)| (name.clone(), r.clone()))
                .collect();
        } else {
            changes.updated = self
                .names()
                .filter_map(|name| resources.get_key_value(name))
                .filter(|(name, r)| self.stale(name, r))
                .map(|(name, r)| (name.clone(), r.clone()))
                .collect();
            // Responses list resources in name order, whatever order the subscription holds them in.
            changes.updated.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        // Vanished resources the client holds, and subscribed names it was never told are absent.
        let removed: BTreeSet<&str> = self
            .entries
            .iter()
            .filter(|(name, e)| match e.known {
                Known::Held(_) => !resources.contains_key(&***name),
                Known::Nothing => e.subscribed && !resources.contains_key(&***name),
                Known::Absent => false,
            })
            .map(|(name, _)| &**name)
            .collect();
        changes.removed = removed.into_iter().map(str::to_owned).collect();
        changes
    }

    /// Like [`Subscription::changes`], but only for `candidates`: the names that can have
    /// changed since the client was last in sync. Much cheaper than a full diff.
    pub fn changes_among<'a>(&self, resources: &Resources, candidates: impl IntoIterator<Item = &'a str>) -> Changes {
        let mut changes = Changes::default();
        let unique: BTreeSet<&str> =
            candidates.into_iter().filter(|n| self.in_scope(n, resources.get(*n).map(|r| &**r))).collect();
        for name in unique {
            match (resources.get_key_value(name), self.known(name)) {
                (Some((_, resource)), Known::Held(version)) if version == resource.hash => {}
                (Some((key, resource)), _) => changes.updated.push((key.clone(), resource.clone())),
                (None, Known::Held(_)) => changes.removed.push(name.to_owned()),
                (None, Known::Nothing) if self.entries.get(name).is_some_and(|e| e.subscribed) => {
                    changes.removed.push(name.to_owned())
                }
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
            self.entry(name).known = Known::Held(resource.hash);
        }
        for name in &changes.removed {
            match self.entries.get_mut(name.as_str()) {
                Some(entry) if entry.subscribed => entry.known = Known::Absent,
                _ => {
                    self.entries.remove(name.as_str());
                }
            }
        }
        self.owes_response = false;
    }

    /// Makes the next response carry `name` again if the client holds it; says whether it did.
    pub fn resend(&mut self, name: &str) -> bool {
        if !self.wildcard && !self.subscribed(name) {
            return false;
        }
        match self.entries.get_mut(name) {
            Some(entry) if matches!(entry.known, Known::Held(_)) => {
                entry.known = Known::Nothing;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
