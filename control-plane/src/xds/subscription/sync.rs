//! Bringing a client to the snapshot: what the next response of a subscription carries, in
//! parts when it is too large for one, and how far a sync in parts has got. Everything a
//! sync in parts needs (the cursor, the names to look at again, the generation last
//! reconciled with, the walk) lives here, with the subscription that owns it.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use super::{Changes, Flag, Known, Layers, Named, Subscription};
use crate::cache::{ResourceType, Resources, Snapshot, VersionedResource};

/// A diff too large for one response, being sent in parts in name order.
#[derive(Debug)]
pub(super) struct Partial {
    /// The resources the parts are taken from (a snapshot's own map, shared).
    target: Resources,
    /// The last name sent: the client holds `target`'s version of every name in scope up to
    /// it, where no exception says otherwise.
    upto: Arc<str>,
}

impl Partial {
    pub(super) fn target(&self) -> &Resources {
        &self.target
    }

    /// The target's resources the parts sent so far reached.
    pub(super) fn claimed(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<VersionedResource>)> {
        self.target.range::<_, str>((Bound::Unbounded, Bound::Included(&*self.upto)))
    }
}

/// What the next response carries, and whether it brings the client to the snapshot.
#[derive(Debug)]
pub struct Part {
    pub changes: Changes,
    /// Everything due is in it: the client is in sync with the snapshot once it arrives.
    pub complete: bool,
}

impl Subscription {
    /// Whether a diff is being sent in parts.
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// The client is now served another snapshot than the one it was synced with (a variant
    /// for its place, or the shared one again): what changed since is not known, so the next
    /// response diffs everything it holds.
    pub fn forget_generation(&mut self) {
        self.synced = None;
    }

    /// Whether the parts sent so far reached `name`.
    fn passed(&self, name: &str) -> bool {
        self.partial.as_ref().is_some_and(|p| name <= &*p.upto)
    }

    /// The resource a partial sync took `name` from, if it reached it: what it implies
    /// about `name`, in place of the baseline.
    pub(super) fn claim(&self, name: &str) -> Option<&VersionedResource> {
        let partial = self.partial.as_ref().filter(|_| self.passed(name))?;
        partial.target.get(name).map(|r| &**r)
    }

    /// After a request changed the subscription: a sync in parts goes on (Envoy names
    /// clusters' endpoints as their clusters arrive), answering the names just asked for by
    /// name; otherwise the next response diffs everything again.
    pub(super) fn after_change(&mut self, subscribed: &[String], max_names: usize) {
        if self.is_partial() {
            let named = subscribed.iter().filter(|n| n.as_str() != super::WILDCARD);
            self.recheck.extend(named.map(|n| Arc::from(n.as_str())));
        }
        // Names asked for again and again while no response goes out are not kept again
        // and again: past the subscription limit, one full diff answers them all.
        if self.recheck.len() > max_names {
            self.recheck = Vec::new();
            self.settle();
        }
        if !self.is_partial() {
            self.synced = None;
        }
    }

    /// The next response against `snapshot`'s resources of `ty`, at most `limit` bytes of
    /// resources unless `whole` (a state-of-the-world response of a full-state type, which
    /// cannot be split: what it leaves out, the client deletes). `None` when there is
    /// nothing to send; the client is then in sync.
    pub fn next_part(&mut self, snapshot: &Snapshot, ty: ResourceType, limit: usize, whole: bool) -> Option<Part> {
        let resources = snapshot.resources(ty);
        let walking = self.follow(snapshot, ty);
        // A full diff, or the walk continuing one, is sent in parts from a cursor; a diff
        // among a few candidates keeps its leftover names, which are few.
        let from_cursor = walking || self.synced.is_none();
        let mut changes = self.candidates(snapshot, ty);
        let walk_stopped = walking && self.walk_on(&mut changes, limit);
        self.synced = Some(snapshot.generation());
        // Dropped, not cleared: an idle stream should not keep room for names.
        self.recheck = Vec::new();
        let (changes, rest) = if whole { (changes, Vec::new()) } else { split_at_limit(changes, limit) };
        let complete = rest.is_empty() && !walk_stopped;
        if !complete {
            self.keep_for_later(rest, from_cursor);
        }
        if changes.is_empty() && !self.owes_response {
            if complete {
                self.rebase(resources);
            }
            return None;
        }
        self.record(&changes, resources, complete, from_cursor);
        Some(Part { changes, complete })
    }

    /// Whether a sync in parts goes on: it follows the snapshot forward one generation at
    /// a time. If generations were skipped, everything is diffed again.
    fn follow(&mut self, snapshot: &Snapshot, ty: ResourceType) -> bool {
        if !self.is_partial() {
            return false;
        }
        let changed = |synced: Option<u64>| synced.and_then(|g| snapshot.changed_since(g, ty));
        if let Some(changed) = changed(self.synced) {
            // The snapshot moved on by one during a sync in parts: the sync goes on from it.
            self.retarget(snapshot.resources(ty), changed);
        }
        let walking = self.synced == Some(snapshot.generation()) || changed(self.synced).is_some();
        if !walking {
            self.synced = None;
        }
        walking
    }

    /// The changes to send before any walk: among the snapshot's changes since the client
    /// was in sync and the names to look at again, or, when it is not known what changed,
    /// every name in scope.
    fn candidates(&self, snapshot: &Snapshot, ty: ResourceType) -> Changes {
        let resources = snapshot.resources(ty);
        let recheck = self.recheck.iter().map(|n| &**n);
        match self.synced.and_then(|g| snapshot.changed_since(g, ty)) {
            Some(changed) => self.changes_among(resources, changed.chain(recheck)),
            None if self.synced == Some(snapshot.generation()) => self.changes_among(resources, recheck),
            None => self.changes(resources),
        }
    }

    /// Adds to `changes` what the walk from the cursor finds within what is left of
    /// `limit`; says whether the walk stopped early.
    fn walk_on(&self, changes: &mut Changes, limit: usize) -> bool {
        let used: usize = changes.updated.iter().map(|(_, r)| r.body.len()).sum();
        let (next, stopped) = self.walk(limit.saturating_sub(used));
        // The walk looked no further than its last name: the part ends there, or the
        // cursor would pass names nobody looked at. What is cut, it finds again.
        let looked_upto = next.last().filter(|_| stopped).map(|(name, _)| name.clone());
        // Names answered by name and names walked to, in name order, each once (both lists
        // take a name's resource from the same snapshot).
        changes.updated.extend(next);
        changes.updated.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        changes.updated.dedup_by(|a, b| a.0 == b.0);
        if let Some(last) = looked_upto {
            let end = changes.updated.partition_point(|(name, _)| *name <= last);
            changes.updated.truncate(end);
        }
        stopped
    }

    /// What did not fit in this part goes in later ones: from a cursor, the walk finds
    /// again the names after where this part stops, and only the names the cursor passed
    /// are looked at by name.
    fn keep_for_later(&mut self, rest: Vec<Arc<str>>, from_cursor: bool) {
        self.recheck = match from_cursor {
            // Copied, not collected in place: that would keep the whole tail's buffer
            // (24 kB a client at 1,000 × 10) for the few names it keeps.
            true => rest.iter().filter(|name| self.passed(name)).cloned().collect(),
            false => rest,
        };
    }

    /// Records a part as sent: a complete one brings the client to `resources`; one from a
    /// cursor moves the cursor; one among a few names records each.
    fn record(&mut self, changes: &Changes, resources: &Resources, complete: bool, from_cursor: bool) {
        if complete {
            self.record_sent(changes);
            self.rebase(resources);
        } else if from_cursor {
            self.record_part(changes, resources);
        } else {
            self.record_sent(changes);
        }
    }

    /// Whether the client lacks `resource`'s version of `name`, which is in its scope.
    fn stale_in_scope(&self, name: &str, resource: &VersionedResource) -> bool {
        self.known(name, Flag::Subscribed, Layers::All) != Known::Held(resource.hash)
    }

    /// Resources to send and names to remove so the client matches `resources`.
    pub fn changes(&self, resources: &Resources) -> Changes {
        if !self.differs_from_baseline_only_where_noted(resources) {
            return self.changes_in_full(resources);
        }
        let changes = self.changes_from_baseline(resources);
        debug_assert_eq!(
            changes,
            self.changes_in_full(resources),
            "a diff against the baseline missed a name: {self:?}"
        );
        changes
    }

    /// Whether `resources` is the baseline itself, with no partial sync on top: then the
    /// client holds every resource in its scope but for the names it has an exception for
    /// or is flagged as holding nothing of. A name subscribed since the baseline was taken
    /// is always one or the other (see [`Subscription::name`] and
    /// [`Subscription::take_versions_against`]), and a rebase keeps an exception for every
    /// subscribed name the client was told is absent.
    fn differs_from_baseline_only_where_noted(&self, resources: &Resources) -> bool {
        self.partial.is_none() && !resources.is_empty() && self.baseline.ptr_eq(resources)
    }

    /// The diff when `resources` is the baseline: only the exceptions and the flagged names
    /// can differ, so a reconnecting client whose versions all agree costs its exceptions,
    /// not a lookup per resource.
    fn changes_from_baseline(&self, resources: &Resources) -> Changes {
        let flagged: Vec<Arc<str>> = self.subscribed.flagged().collect();
        let noted = self.exceptions.keys().chain(&flagged).map(|name| &**name);
        self.changes_among(resources, noted)
    }

    /// The diff, name by name, over everything in scope.
    fn changes_in_full(&self, resources: &Resources) -> Changes {
        let mut changes = Changes::default();
        let mut removed: BTreeSet<String> = BTreeSet::new();
        // Subscribed names the client holds nothing of and was never told are absent.
        let never_told = |name: &str, flag: bool| {
            self.known(name, Flag::Known(Some(flag)), Layers::All) == Known::Nothing && !resources.contains_key(name)
        };
        if self.wildcard {
            changes.updated = resources
                .iter()
                .filter(|(name, r)| (!r.named_only || self.subscribed(name)) && self.stale_in_scope(name, r))
                .map(|(name, r)| (name.clone(), r.clone()))
                .collect();
            let absent = self.subscribed.iter_flagged().filter(|(name, flag)| never_told(name, *flag));
            removed.extend(absent.map(|(name, _)| name.to_string()));
        } else {
            // One look in `resources` per name: what it finds is due if stale, what it
            // does not, absent if never told.
            for (name, flag) in self.subscribed.iter_flagged() {
                match resources.get_key_value(&*name) {
                    Some((key, r))
                        if self.known(&name, Flag::Known(Some(flag)), Layers::All) != Known::Held(r.hash) =>
                    {
                        changes.updated.push((key.clone(), r.clone()));
                    }
                    None if never_told(&name, flag) => {
                        removed.insert(name.to_string());
                    }
                    _ => {}
                }
            }
            // Responses list resources in name order, whatever order the subscription holds them in.
            changes.updated.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        // Vanished resources the client holds.
        let held_gone =
            self.held_outside(Some(resources)).map(|(name, _)| name).filter(|name| !resources.contains_key(*name));
        removed.extend(held_gone.map(str::to_owned));
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
            match (resources.get_key_value(name), self.known(name, Flag::Ask, Layers::All)) {
                (Some((_, resource)), Known::Held(version)) if version == resource.hash => {}
                (Some((key, resource)), _) => changes.updated.push((key.clone(), resource.clone())),
                (None, Known::Held(_) | Known::Resend(_)) => changes.removed.push(name.to_owned()),
                (None, Known::Nothing) if self.subscribed(name) => changes.removed.push(name.to_owned()),
                (None, _) => {}
            }
        }
        changes
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
                let known = self.known(name, Flag::Ask, Layers::Implied);
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
            .claimed()
            .filter(|(name, r)| !self.exceptions.contains_key(&***name) && self.implied(name, r, Flag::Ask))
            .map(|(name, r)| (name.clone(), r.hash))
            .collect();
        for (name, hash) in claims {
            if self.known(&name, Flag::Ask, Layers::Implied) != Known::Held(hash) {
                self.exceptions.insert(name, Known::Held(hash));
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
            if flag.is_none() || self.known(name, Flag::Known(flag), Layers::All) == Known::Held(resource.hash) {
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
}

/// Keeps the first resources up to `limit` bytes; returns the names left out.
fn split_at_limit(mut changes: Changes, limit: usize) -> (Changes, Vec<Arc<str>>) {
    let mut total = 0;
    let keep = changes
        .updated
        .iter()
        .position(|(_, r)| {
            total += r.body.len();
            total > limit
        })
        .map_or(changes.updated.len(), |i| i.max(1));
    let rest = changes.updated.split_off(keep).into_iter().map(|(name, _)| name).collect();
    (changes, rest)
}
