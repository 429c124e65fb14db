//! What one xDS client asked for of one resource type, and what it already has.
//!
//! Pure state: requests go in, the set of resources to send comes out. The
//! rules follow Envoy's incremental xDS protocol; each has a named test.
//! A proxy can hold thousands of resources and edge nodes run many proxies, so what is
//! held is kept as a shared baseline plus exceptions, not an entry per resource, and a
//! diff too large for one response is sent in parts from a cursor, not from a list.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::cache::{NameSet, Resources, VersionedResource, format_version, parse_version};

const WILDCARD: &str = "*";

/// The parts of a `DeltaDiscoveryRequest` that change a subscription.
#[derive(Debug, Default, Clone, Copy)]
pub struct SubscriptionRequest<'a> {
    pub subscribe: &'a [String],
    pub unsubscribe: &'a [String],
    pub initial_resource_versions: Option<&'a HashMap<String, String>>,
    /// The resources being served now: a reconnecting client's versions are checked
    /// against them, and only those that differ are kept.
    pub current: Option<&'a Resources>,
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

/// A diff too large for one response, being sent in parts in name order.
#[derive(Debug)]
struct Partial {
    /// The resources the parts are taken from (a snapshot's own map, shared).
    target: Resources,
    /// The last name sent: the client holds `target`'s version of every name in scope up to
    /// it, where no exception says otherwise.
    upto: Arc<str>,
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
    exceptions: HashMap<Arc<str>, Known>,
    partial: Option<Partial>,
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

    /// The names asked for, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        self.subscribed.iter()
    }

    pub fn name_count(&self) -> usize {
        self.subscribed.len()
    }

    /// The names the client holds, with the version hash of each.
    pub fn held(&self) -> impl Iterator<Item = (&str, u64)> {
        let unexcepted = |name: &str| !self.exceptions.contains_key(name);
        let claimed = self
            .partial
            .iter()
            .flat_map(|p| p.target.range::<_, str>((Bound::Unbounded, Bound::Included(&*p.upto))))
            .filter(move |(name, r)| unexcepted(name) && self.implied(name, r))
            .map(|(name, r)| (&**name, r.hash));
        let derived = self
            .baseline
            .iter()
            .filter(move |(name, r)| unexcepted(name) && self.claim(name).is_none() && self.implied(name, r))
            .map(|(name, r)| (&**name, r.hash));
        let sent = self.exceptions.iter().filter_map(|(name, known)| match known {
            Known::Held(hash) | Known::Resend(hash) => Some((&**name, *hash)),
            _ => None,
        });
        claimed.chain(derived).chain(sent)
    }

    /// Whether a diff is being sent in parts.
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// Whether the parts sent so far reached `name`.
    pub fn passed(&self, name: &str) -> bool {
        self.partial.as_ref().is_some_and(|p| name <= &*p.upto)
    }

    /// The resource a partial sync took `name` from, if it reached it: what it implies
    /// about `name`, in place of the baseline.
    fn claim(&self, name: &str) -> Option<&VersionedResource> {
        let partial = self.partial.as_ref().filter(|_| self.passed(name))?;
        partial.target.get(name).map(|r| &**r)
    }

    /// Whether the baseline's (or a partial sync's) `resource` for `name` is one the client
    /// holds: it is in scope, and `name` was not named since the last rebase while the
    /// client held nothing of it (flagged in the set, instead of an exception per name).
    fn implied(&self, name: &str, resource: &VersionedResource) -> bool {
        self.implied_given(resource, || self.subscribed.flag(name))
    }

    /// [`Subscription::implied`], with the set's answer for `name` asked only if needed.
    fn implied_given(&self, resource: &VersionedResource, flag: impl FnOnce() -> Option<bool>) -> bool {
        (self.wildcard && !resource.named_only) || flag() == Some(false)
    }

    /// The set's answer for a name its caller knows is subscribed, if the set has flags.
    fn subscribed_flag(&self, name: &str) -> Option<bool> {
        if self.subscribed.any_flagged() { self.subscribed.flag(name) } else { Some(false) }
    }

    fn subscribed(&self, name: &str) -> bool {
        self.subscribed.contains(name)
    }

    /// Whether the client asked for `name`, by name or, unless `resource` is named-only, by wildcard.
    fn in_scope(&self, name: &str, resource: Option<&VersionedResource>) -> bool {
        (self.wildcard && !resource.is_some_and(|r| r.named_only)) || self.subscribed(name)
    }

    fn known(&self, name: &str) -> Known {
        self.known_given(name, || self.subscribed.flag(name))
    }

    /// [`Subscription::known`], with the set's answer for `name` from a caller that may know
    /// it: asking the id table is the costly part, and it is asked only if needed.
    fn known_given(&self, name: &str, flag: impl FnOnce() -> Option<bool>) -> Known {
        self.exceptions.get(name).copied().unwrap_or_else(|| self.derived_given(name, flag))
    }

    /// What the baseline, and a partial sync's progress, imply the client holds of `name`.
    fn derived(&self, name: &str) -> Known {
        self.derived_given(name, || self.subscribed.flag(name))
    }

    /// [`Subscription::derived`], with the set's answer for `name` asked only if needed.
    /// Whether a resource is named-only is a property of its name, so the target's and the
    /// baseline's agree.
    fn derived_given(&self, name: &str, flag: impl FnOnce() -> Option<bool>) -> Known {
        match self.claim(name).or_else(|| self.baseline.get(name).map(|r| &**r)) {
            Some(resource) if self.implied_given(resource, flag) => Known::Held(resource.hash),
            _ => Known::Nothing,
        }
    }

    /// Whether the client lacks `resource`'s version of `name`, which is in its scope.
    fn stale_in_scope(&self, name: &str, resource: &VersionedResource) -> bool {
        self.known_given(name, || self.subscribed_flag(name)) != Known::Held(resource.hash)
    }

    /// Moves a partial sync on to `resources`, where only `changed` (the names that differ
    /// from its target) differ: what the client holds of those the cursor passed becomes
    /// explicit, and the rest of the sync is taken from `resources`. Costs the change, not
    /// what was sent.
    pub fn retarget<'a>(&mut self, resources: &Resources, changed: impl IntoIterator<Item = &'a str>) {
        let Some(partial) = &self.partial else { return };
        if partial.target.ptr_eq(resources) {
            return;
        }
        for name in changed {
            if self.passed(name) && !self.exceptions.contains_key(name) {
                let known = self.derived(name);
                self.exceptions.insert(Arc::from(name), known);
            }
        }
        if let Some(partial) = &mut self.partial {
            partial.target = resources.clone();
        }
    }

    /// Makes a partial sync's progress explicit, as exceptions, before what it relies on
    /// changes in a way [`Subscription::retarget`] cannot follow: a scope widening to every
    /// name, or a target replaced without its list of changes. Costs what was sent so far.
    pub fn settle(&mut self) {
        let Some(partial) = self.partial.take() else { return };
        let claims: Vec<(Arc<str>, u64)> = partial
            .target
            .range::<_, str>((Bound::Unbounded, Bound::Included(&*partial.upto)))
            .filter(|(name, r)| !self.exceptions.contains_key(&***name) && self.implied(name, r))
            .map(|(name, r)| (name.clone(), r.hash))
            .collect();
        for (name, hash) in claims {
            if self.derived(&name) != Known::Held(hash) {
                self.exceptions.insert(name, Known::Held(hash));
            }
        }
    }

    /// Exceptions are short-lived (a rebase drops those that agree), so their names are
    /// plain copies; only subscribed names, which live as long as the stream, get ids.
    fn set_known(&mut self, name: &str, known: Known) {
        match self.exceptions.get_mut(name) {
            Some(existing) => *existing = known,
            None => {
                self.exceptions.insert(Arc::from(name), known);
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
        // With no baseline, nothing is implied, so no name needs a flag against it.
        self.subscribed.unflag_all();
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
        let known = self.known(name);
        self.subscribed.remove(name);
        if self.known(name) != known {
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
            match self.known_given(name, || flag) {
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

    pub fn apply(&mut self, request: SubscriptionRequest<'_>) {
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
                    self.set_known(name, Known::Held(parse_version(version)));
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
    }

    /// A new stream's baseline is `current`, with exceptions for the versions `initial`
    /// gives that differ from it, and for names in scope it does not list. Called once the
    /// first request's scope is settled, so what the baseline implies is decided by it.
    fn take_versions_against(&mut self, current: &Resources, initial: &HashMap<String, String>) {
        self.baseline = current.clone();
        for (name, version) in initial {
            let hash = parse_version(version);
            let agrees = current.get(name.as_str()).is_some_and(|r| r.hash == hash && self.implied(name, r));
            if !agrees {
                self.set_known(name, Known::Held(hash));
            }
        }
        // Named ones are flagged already; through the wildcard, the others are exceptions.
        if self.wildcard {
            let unlisted: Vec<Arc<str>> = current
                .iter()
                .filter(|(name, r)| !initial.contains_key(&***name) && self.implied(name, r))
                .map(|(name, _)| name.clone())
                .collect();
            for name in unlisted {
                self.exceptions.insert(name, Known::Nothing);
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
        changed
    }

    /// What the client holds, from `resources`, in name order: a full-state response.
    pub fn held_resources(&self, resources: &Resources) -> Vec<(Arc<str>, Arc<VersionedResource>)> {
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

    /// Resources to send and names to remove so the client matches `resources`.
    pub fn changes(&self, resources: &Resources) -> Changes {
        let mut changes = Changes::default();
        if self.wildcard {
            changes.updated = resources
                .iter()
                .filter(|(name, r)| (!r.named_only || self.subscribed(name)) && self.stale_in_scope(name, r))
                .map(|(name, r)| (name.clone(), r.clone()))
                .collect();
        } else {
            changes.updated = self
                .names()
                .filter_map(|name| resources.get_key_value(&*name))
                .filter(|(name, r)| self.stale_in_scope(name, r))
                .map(|(name, r)| (name.clone(), r.clone()))
                .collect();
            // Responses list resources in name order, whatever order the subscription holds them in.
            changes.updated.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        // Vanished resources the client holds, and subscribed names it was never told are absent.
        let held_gone = self.held().map(|(name, _)| name).filter(|name| !resources.contains_key(*name));
        let mut removed: BTreeSet<String> = held_gone.map(str::to_owned).collect();
        // Subscribed, so in scope: no need to ask the id table again.
        let never_told = self.names().filter(|name| {
            self.known_given(name, || self.subscribed_flag(name)) == Known::Nothing && !resources.contains_key(&**name)
        });
        removed.extend(never_told.map(|name| name.to_string()));
        changes.removed = removed.into_iter().collect();
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
                (None, Known::Held(_) | Known::Resend(_)) => changes.removed.push(name.to_owned()),
                (None, Known::Nothing) if self.subscribed(name) => changes.removed.push(name.to_owned()),
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

    /// Records a response carrying part of what is due against `resources`: every name due
    /// up to its last updated one, in name order. The cursor moves there, and the names it
    /// passes need no exception, so a first sync of thousands of resources in many parts
    /// costs a pointer and a name, not an entry per resource sent.
    pub fn record_part(&mut self, changes: &Changes, resources: &Resources) {
        self.record_removed(&changes.removed);
        self.owes_response = false;
        let Some((last, _)) = changes.updated.last() else { return };
        match &mut self.partial {
            Some(partial) if partial.target.ptr_eq(resources) => {
                if **last > *partial.upto {
                    partial.upto = last.clone();
                }
            }
            _ => {
                self.settle();
                self.partial = Some(Partial { target: resources.clone(), upto: last.clone() });
            }
        }
        for (name, _) in &changes.updated {
            self.exceptions.remove(&**name);
            self.subscribed.unflag(name);
        }
    }

    /// What a partial sync sends next: the names in scope after its cursor whose current
    /// version the client lacks, in name order, until they pass `budget` bytes; and whether
    /// it stopped early. Costs what it returns, not what is left: a client in a sync of
    /// thousands of resources is not diffed whole again for each part.
    pub fn walk(&self, budget: usize) -> (Vec<Named>, bool) {
        let Some(partial) = &self.partial else { return (Vec::new(), false) };
        let after = (Bound::Excluded(&*partial.upto), Bound::Unbounded);
        // A few names among many resources are looked up; otherwise the resources are walked.
        let candidates: Box<dyn Iterator<Item = (&Arc<str>, &Arc<VersionedResource>)>> =
            if self.wildcard || self.subscribed.len() * 8 >= partial.target.len() {
                Box::new(partial.target.range::<_, str>(after))
            } else {
                let mut names: Vec<Arc<str>> = self.subscribed.iter().filter(|n| **n > *partial.upto).collect();
                names.sort_unstable();
                Box::new(names.into_iter().filter_map(|n| partial.target.get_key_value(&*n)))
            };
        let mut due = Vec::new();
        let mut total = 0;
        for (name, resource) in candidates {
            // One look in the id table per name: it says both whether the name is in scope
            // and whether it is flagged. Through the wildcard, neither question arises.
            let flag = if self.wildcard && !resource.named_only { Some(false) } else { self.subscribed.flag(name) };
            if flag.is_none() || self.known_given(name, || flag) == Known::Held(resource.hash) {
                continue;
            }
            due.push((name.clone(), resource.clone()));
            total += resource.body.len();
            if total > budget {
                return (due, true);
            }
        }
        (due, false)
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
    pub fn resend(&mut self, name: &str) -> bool {
        if !self.wildcard && !self.subscribed(name) {
            return false;
        }
        match self.known(name) {
            Known::Held(hash) => {
                self.set_known(name, Known::Resend(hash));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
