//! What one xDS client asked for of one resource type, what it already holds, and how far a
//! sync in parts has got ([`sync`]): the one owner of everything a response is built from.
//!
//! Pure state: requests go in, the parts to send come out. The rules follow Envoy's xDS
//! protocol; each has a named test. A proxy can hold thousands of resources and edge nodes
//! run many proxies, so what is held is kept as a shared baseline plus exceptions, not an
//! entry per resource, and a diff too large for one response is sent in parts from a
//! cursor, not from a list.

mod sync;

pub(super) use sync::Part;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sync::Partial;

use super::delta_request::InitialVersions;
use crate::cache::{NameHasher, NameSet, Resources, VersionedResource, format_version};

const WILDCARD: &str = "*";

/// The parts of a `DeltaDiscoveryRequest` that change a subscription.
#[derive(Debug, Default, Clone, Copy)]
pub struct SubscriptionRequest<'a> {
    pub subscribe: &'a [String],
    pub unsubscribe: &'a [String],
    pub initial_resource_versions: Option<&'a InitialVersions<'a>>,
    /// The resources being served now: a reconnecting client's versions are checked
    /// against them, and only those that differ are kept.
    pub current: Option<&'a Resources>,
}

/// A version for a set of names and their versions: a hash of each, in name order, so two
/// replicas serving the same resources give the same version.
fn version_of<'a>(held: impl Iterator<Item = (&'a str, u64)>) -> String {
    let mut held: Vec<(&str, u64)> = held.collect();
    held.sort_unstable();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, hash) in held {
        hasher.update(name.as_bytes());
        hasher.update(&hash.to_le_bytes());
    }
    format_version(hasher.digest())
}

/// A resource with its name, as responses carry it.
pub type Named = (Arc<str>, Arc<VersionedResource>);

/// What the client should be sent next.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub updated: Vec<Named>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.removed.is_empty()
    }
}

/// What the client holds of one name, where that differs from what the baseline implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// Nothing, as far as we know: send it if it exists.
    Nothing,
    /// Told it does not exist.
    Absent,
    /// This version (the hash behind the hex version string).
    Held(u64),
    /// This version, and it is to be sent again (a re-subscription is answered); should
    /// the resource go first, the client is told, since it still holds it.
    Resend(u64),
}

/// What the set of subscribed names says of one name: not subscribed (`None`), or
/// subscribed and flagged (asked for since the last rebase while the client held nothing of
/// it) or not. Asking the set is the costly part of a lookup, so callers say what they know.
#[derive(Clone, Copy, Debug)]
enum Flag {
    /// Ask the set, if the answer is needed.
    Ask,
    /// The caller knows the name is subscribed: the set is asked only if any name is flagged.
    Subscribed,
    /// The set's answer, which the caller has already.
    Known(Option<bool>),
}

/// Which layers of what is held a lookup reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layers {
    /// Exceptions first, then what the baseline (and a partial sync's progress) implies.
    All,
    /// Only what the baseline (and a partial sync's progress) implies.
    Implied,
}

/// A client's subscription to one type, and what it holds, in space that follows what
/// differs rather than what is held: a client in sync holds exactly the `baseline`
/// resources in its scope (the snapshot's own persistent map, shared, not copied), and
/// `exceptions` says where it differs: names it was sent since, told are absent, or must be
/// sent again. A client fully subscribed to thousands of resources costs a few pointers
/// once in sync, and while a first sync goes out in parts, a cursor (`partial`) says how
/// far it got instead of an exception per name sent. Subscribed names are a [`NameSet`]
/// of process-wide ids: 4 bytes a name.
#[derive(Debug, Default)]
pub struct Subscription {
    started: bool,
    wildcard: bool,
    /// Named in resource_names_subscribe (not merely held through the wildcard).
    subscribed: NameSet,
    baseline: Resources,
    /// Keyed with the name tables' hasher: std's SipHash was most of a lookup.
    exceptions: HashMap<Arc<str>, Known, NameHasher>,
    owes_response: bool,
    /// A diff too large for one response, being sent in parts.
    partial: Option<Partial>,
    /// The snapshot generation this subscription was last fully reconciled with; `None`
    /// after a change of subscription, which needs a full diff.
    synced: Option<u64>,
    /// Names to look at again besides the snapshot's changes: asked for mid-sync, passed
    /// by the cursor when a part was cut, or to be resent (a cluster's endpoints).
    recheck: Vec<Arc<str>>,
}

impl Subscription {
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether the client has asked for this type at all yet.
    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn name_count(&self) -> usize {
        self.subscribed.len()
    }

    /// The bytes of the names asked for.
    pub fn name_bytes(&self) -> usize {
        self.subscribed.bytes()
    }

    /// The set's answer for `name`, as far as `flag` leaves it to be asked.
    fn flag(&self, name: &str, flag: Flag) -> Option<bool> {
        match flag {
            Flag::Ask => self.subscribed.flag(name),
            Flag::Subscribed if self.subscribed.any_flagged() => self.subscribed.flag(name),
            Flag::Subscribed => Some(false),
            Flag::Known(answer) => answer,
        }
    }

    /// Whether `resource`, the baseline's (or a partial sync's) for `name`, is one the client
    /// holds: it is in scope, and `name` is not flagged as held-nothing.
    fn implied(&self, name: &str, resource: &VersionedResource, flag: Flag) -> bool {
        (self.wildcard && !resource.named_only) || self.flag(name, flag) == Some(false)
    }

    /// The one lookup of what the client holds of `name`.
    fn known(&self, name: &str, flag: Flag, layers: Layers) -> Known {
        if layers == Layers::All
            && let Some(known) = self.exceptions.get(name)
        {
            return *known;
        }
        match self.claim(name).or_else(|| self.baseline.get(name).map(|r| &**r)) {
            Some(resource) if self.implied(name, resource, flag) => Known::Held(resource.hash),
            _ => Known::Nothing,
        }
    }

    fn subscribed(&self, name: &str) -> bool {
        self.subscribed.contains(name)
    }

    /// Whether the client asked for `name`, by name or, unless `resource` is named-only, by wildcard.
    fn in_scope(&self, name: &str, resource: Option<&VersionedResource>) -> bool {
        (self.wildcard && !resource.is_some_and(|r| r.named_only)) || self.subscribed(name)
    }

    /// The names the client holds, with the version hash of each.
    pub fn held(&self) -> impl Iterator<Item = (&str, u64)> {
        self.held_outside(None)
    }

    /// Like [`Subscription::held`], but leaving out a layer that is `within` itself (the
    /// baseline, or a partial sync's target): every name it implies is in `within`, so a
    /// caller asking what `within` lacks need not look at them.
    fn held_outside<'a>(&'a self, within: Option<&'a Resources>) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let other = move |layer: &Resources| !within.is_some_and(|within| within.ptr_eq(layer));
        let unexcepted = |name: &str| !self.exceptions.contains_key(name);
        let claimed = self
            .partial
            .iter()
            .filter(move |p| other(p.target()))
            .flat_map(|p| p.claimed())
            .filter(move |(name, r)| unexcepted(name) && self.implied(name, r, Flag::Ask))
            .map(|(name, r)| (&**name, r.hash));
        let derived = Some(&self.baseline)
            .filter(move |baseline| other(baseline))
            .into_iter()
            .flat_map(|baseline| baseline.iter())
            .filter(move |(name, r)| unexcepted(name) && self.claim(name).is_none() && self.implied(name, r, Flag::Ask))
            .map(|(name, r)| (&**name, r.hash));
        let sent = self.exceptions.iter().filter_map(|(name, known)| match known {
            Known::Held(hash) | Known::Resend(hash) => Some((&**name, *hash)),
            _ => None,
        });
        claimed.chain(derived).chain(sent)
    }

    /// What the client holds, from `resources`, in name order: a full-state response.
    pub fn held_resources(&self, resources: &Resources) -> Vec<Named> {
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
        version_of(self.held())
    }

    /// A state-of-the-world client's first request on a new stream says, in `version_info`,
    /// the version of what it holds of the type ([`Subscription::held_version`]). When that is
    /// the version of everything it is due from `resources`, it holds all of it already, as a
    /// client reconnecting after a replica restart does: that is recorded, and nothing is
    /// resent. Says whether it was.
    pub fn take_held_version(&mut self, version_info: &str, resources: &Resources) -> bool {
        let due = self.changes(resources);
        let holds_all = due.removed.is_empty()
            && version_of(due.updated.iter().map(|(name, resource)| (&**name, resource.hash))) == version_info;
        if holds_all {
            self.record_sent(&due);
        }
        holds_all
    }

    /// An exception's name shares the allocation of the subscribed name when there is one
    /// (a name told absent stays an exception for as long as it is subscribed), and is a
    /// plain copy otherwise, since those are short-lived: a rebase drops them.
    fn set_known(&mut self, name: &str, known: Known) {
        match self.exceptions.get_mut(name) {
            Some(existing) => *existing = known,
            None => {
                let shared = self.subscribed.shared(name).unwrap_or_else(|| Arc::from(name));
                self.exceptions.insert(shared, known);
            }
        }
    }

    /// Before the scope widens to every resource, what the baseline implies must become
    /// explicit: resources outside the old scope were never sent, and are not held.
    fn widen_to_wildcard(&mut self) {
        if self.wildcard {
            return;
        }
        self.settle();
        let held: Vec<(Arc<str>, u64)> = self
            .baseline
            .iter()
            .filter(|(name, _)| self.subscribed.flag(name) == Some(false) && !self.exceptions.contains_key(&***name))
            .map(|(name, r)| (name.clone(), r.hash))
            .collect();
        self.exceptions.extend(held.into_iter().map(|(name, hash)| (name, Known::Held(hash))));
        self.baseline = Resources::default();
        // Flags stay: with no baseline they imply nothing, but a reconnecting client's first
        // request takes one right after (`take_versions_against`), and a name it holds
        // nothing of must still say so then.
        self.wildcard = true;
    }

    /// Drops `name` from the names asked for. Under a wildcard that still covers it, what
    /// the client holds stays as it is, made explicit since the naming that implied it is
    /// gone; otherwise the client forgets it, and so do we.
    fn unname(&mut self, name: &str) {
        if !self.wildcard {
            self.subscribed.remove(name);
            self.exceptions.remove(name);
            return;
        }
        let known = self.known(name, Flag::Ask, Layers::All);
        self.subscribed.remove(name);
        if self.known(name, Flag::Ask, Layers::All) != known {
            self.set_known(name, known);
        }
    }

    /// Prepares naming `name`, which the caller then adds to the set with the others it
    /// names at once, with the flag this returns if it is new (`None` if it is not): set
    /// when the client holds nothing of it, so that a baseline taken before does not imply
    /// it is held. `resend`: answer it even if the client already has the current version.
    fn name(&mut self, name: &str, resend: bool) -> Option<bool> {
        let flag = self.subscribed.flag(name);
        let mut holds_nothing = false;
        if resend {
            // What the client held before the naming, through the wildcard if at all.
            match self.known(name, Flag::Known(flag), Layers::All) {
                Known::Held(hash) | Known::Resend(hash) => self.set_known(name, Known::Resend(hash)),
                _ if self.exceptions.contains_key(name) => self.set_known(name, Known::Nothing),
                _ => holds_nothing = true,
            }
        }
        flag.is_none().then_some(holds_nothing)
    }

    /// Ends the wildcard: only named resources stay in scope.
    fn narrow_to_names(&mut self) {
        self.wildcard = false;
        let subscribed = &self.subscribed;
        self.exceptions.retain(|name, _| subscribed.contains(name));
    }

    /// A delta request; says whether it changed the subscription (which a response must
    /// answer). `max_names` bounds the names asked for mid-sync that are kept to be
    /// answered by name: past it, one full diff answers them all.
    pub fn apply(&mut self, request: SubscriptionRequest<'_>, max_names: usize) -> bool {
        let first = !self.started;
        let initial = request.initial_resource_versions.filter(|versions| first && !versions.is_empty());
        // A reconnecting client lists everything it holds: taking what is served as the
        // baseline, only the versions that differ need keeping, not one entry per name.
        let against = request.current.zip(initial);
        if first {
            self.started = true;
            // Legacy wildcard: a first request naming nothing asks for everything.
            self.wildcard = request.subscribe.is_empty();
            // Envoy answers the first request of every type before it finishes initialising.
            self.owes_response = true;
            if against.is_none() {
                for (name, version) in initial.into_iter().flatten() {
                    self.set_known(name, Known::Held(*version));
                }
            }
        }
        let mut added: Vec<(&str, bool)> = Vec::new();
        for name in request.subscribe {
            self.owes_response = true;
            if name == WILDCARD {
                self.subscribed.extend(added.drain(..));
                self.widen_to_wildcard();
                continue;
            }
            // A (re-)subscription is answered even when the client already has the current version;
            // on a new stream, initial_resource_versions says what it has instead.
            if let Some(flag) = self.name(name, !first) {
                // Against a baseline, a name the client did not list is one it holds nothing of.
                let flag = against.map_or(flag, |(_, initial)| !initial.contains_key(name.as_str()));
                added.push((name, flag));
            }
        }
        self.subscribed.extend(added);
        for name in request.unsubscribe {
            match name.as_str() {
                WILDCARD => self.narrow_to_names(),
                name => self.unname(name),
            }
        }
        if let Some((current, initial)) = against {
            self.take_versions_against(current, initial);
        }
        let changed = !request.subscribe.is_empty() || !request.unsubscribe.is_empty() || first;
        if changed {
            self.after_change(request.subscribe, max_names);
        }
        changed
    }

    /// A new stream's baseline is `current`, with exceptions for the versions `initial`
    /// gives that differ from it, and for names in scope it does not list. Called once the
    /// first request's scope is settled, so what the baseline implies is decided by it.
    fn take_versions_against(&mut self, current: &Resources, initial: &InitialVersions<'_>) {
        self.baseline = current.clone();
        let mut differ: Vec<(Arc<str>, Known)> = Vec::new();
        // A client listing much of what is served is checked by one walk over it, looking
        // each name up in its list (hashed), rather than by a search of the tree per name.
        let walk = self.wildcard || initial.len().saturating_mul(8) >= current.len();
        let mut listed_and_served = 0;
        if walk {
            for (name, resource) in current {
                match initial.get(&**name) {
                    Some(&hash) => {
                        listed_and_served += 1;
                        if !(resource.hash == hash && self.implied(name, resource, Flag::Ask)) {
                            differ.push((name.clone(), Known::Held(hash)));
                        }
                    }
                    // Named ones are flagged already; through the wildcard, the others are exceptions.
                    None if self.wildcard && self.implied(name, resource, Flag::Ask) => {
                        differ.push((name.clone(), Known::Nothing))
                    }
                    None => {}
                }
            }
        }
        for (name, known) in differ {
            self.exceptions.insert(name, known);
        }
        if walk && listed_and_served == initial.len() {
            return;
        }
        // What the walk did not see: listed names that are not served (or every listed
        // name, when there was no walk).
        for (&name, &hash) in initial {
            let served = current.get(name);
            if walk && served.is_some() {
                continue;
            }
            if !served.is_some_and(|r| r.hash == hash && self.implied(name, r, Flag::Ask)) {
                self.set_known(name, Known::Held(hash));
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
        if wildcard {
            self.widen_to_wildcard();
        } else {
            self.narrow_to_names();
        }
        let dropped: Vec<Arc<str>> = self.subscribed.iter().filter(|n| !wanted.contains(&**n)).collect();
        changed |= !dropped.is_empty();
        for name in dropped {
            self.unname(&name);
        }
        // Only names new to the subscription: naming one again would owe it a resend.
        let new: Vec<&str> = wanted.into_iter().filter(|name| !self.subscribed(name)).collect();
        let added: Vec<(&str, bool)> =
            new.into_iter().filter_map(|name| Some((name, self.name(name, true)?))).collect();
        changed |= !added.is_empty();
        self.subscribed.extend(added);
        self.owes_response |= changed;
        if changed {
            self.synced = None;
        }
        changed
    }

    pub fn record_sent(&mut self, changes: &Changes) {
        for (name, resource) in &changes.updated {
            self.subscribed.unflag(name);
            match self.exceptions.get_mut(&**name) {
                Some(known) => *known = Known::Held(resource.hash),
                None => {
                    self.exceptions.insert(name.clone(), Known::Held(resource.hash));
                }
            }
        }
        self.record_removed(&changes.removed);
        self.owes_response = false;
    }

    fn record_removed(&mut self, removed: &[String]) {
        for name in removed {
            if self.subscribed(name) {
                self.set_known(name, Known::Absent);
            } else if self.baseline.contains_key(name.as_str()) || self.claim(name).is_some() {
                // The baseline, or a partial sync, would still say it is held.
                self.set_known(name, Known::Nothing);
            } else {
                self.exceptions.remove(name.as_str());
            }
        }
    }

    /// The client now holds exactly the resources of `resources` in its scope (everything
    /// it was due has been sent): take them as the baseline and keep only the exceptions
    /// that still differ from it. The cost follows the exceptions, not what is held.
    /// Whether a resource is named-only must be a property of its name, as it is of a gRPC
    /// listener's, or a client holding one could lose track of it here.
    pub fn rebase(&mut self, resources: &Resources) {
        // Whatever a partial sync claimed, `resources` now says, and names asked for since
        // have all been answered.
        self.partial = None;
        self.subscribed.unflag_all();
        self.baseline = resources.clone();
        let exceptions = std::mem::take(&mut self.exceptions);
        self.exceptions = exceptions
            .into_iter()
            .filter(|(name, known)| {
                let derived = match resources.get(&**name) {
                    Some(resource) if self.in_scope(name, Some(resource)) => Known::Held(resource.hash),
                    _ => Known::Nothing,
                };
                *known != derived
            })
            .collect();
    }

    /// Makes the next response carry `name` again if the client holds it; says whether it did.
    pub fn resend(&mut self, name: &Arc<str>) -> bool {
        if !self.wildcard && !self.subscribed(name) {
            return false;
        }
        match self.known(name, Flag::Ask, Layers::All) {
            Known::Held(hash) => {
                self.set_known(name, Known::Resend(hash));
                self.recheck.push(name.clone());
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
