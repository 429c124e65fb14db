//! The protocol state of one xDS stream, delta or state of the world: subscriptions,
//! nonces, ACKs and NACKs.
//!
//! Synchronous and free of I/O; the stream task drives it and the proxy
//! registry reads it (behind a mutex never held across an await).

use crate::auth::Identity;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tonic::Status;
use tracing::{debug, warn};

use super::response_wire::{EncodedResponse, encode_response, encode_sotw_response};
use super::subscription::{Changes, Subscription, SubscriptionRequest};
use super::{Flavour, StreamKind};
use crate::cache::{ResourceType, Snapshot};
use crate::port::{Limit, Limits, Refusal, kept_node, truncate};

/// Resource bytes per response, at most (a single larger resource still goes alone).
/// A stream's response is held whole until its client reads it, so this bounds what
/// a slow Envoy can pin in memory, and keeps messages far below gRPC size limits.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A response the client has been sent, by nonce.
#[derive(Clone, Debug)]
pub struct Sent {
    pub nonce: String,
    /// The type version of the snapshot the response was built from.
    pub version: String,
    pub at: Instant,
    pub wall: SystemTime,
}

#[derive(Clone, Debug)]
pub struct Nack {
    pub nonce: String,
    pub version: String,
    pub message: String,
    pub wall: SystemTime,
}

#[derive(Debug, Default)]
pub struct TypeState {
    pub subscription: Subscription,
    pub sent: Option<Sent>,
    pub acked: Option<Sent>,
    pub last_nack: Option<Nack>,
    dirty: bool,
    /// The snapshot generation this subscription was last fully reconciled with;
    /// `None` after a subscription change, which needs a full diff.
    synced: Option<u64>,
    /// Names to look at again besides the snapshot's changes (clusters' endpoints to resend).
    recheck: Vec<Arc<str>>,
    /// Set when a new snapshot arrives; cleared by the response that carries it.
    push_started: Option<Instant>,
}

impl TypeState {
    /// A response is outstanding: sent, neither ACKed nor NACKed yet.
    pub fn pending(&self) -> Option<&Sent> {
        let answered = |nonce: &str| {
            self.acked.as_ref().is_some_and(|a| a.nonce == nonce)
                || self.last_nack.as_ref().is_some_and(|n| n.nonce == nonce)
        };
        self.sent.as_ref().filter(|s| !answered(&s.nonce))
    }

    /// The latest response was rejected.
    pub fn nacked(&self) -> bool {
        matches!((&self.sent, &self.last_nack), (Some(s), Some(n)) if s.nonce == n.nonce)
    }
}

#[derive(Debug)]
pub struct StreamState {
    kind: StreamKind,
    flavour: Flavour,
    node: Option<Node>,
    connected_at: SystemTime,
    types: [Option<TypeState>; ResourceType::COUNT],
    nonce: u64,
    limits: Limits,
    /// Resource bytes per response: [`MAX_RESPONSE_BYTES`], lower only in tests that make
    /// every sync come in many parts.
    response_bytes: usize,
    /// Who the client authenticated as; its node must agree.
    identity: Option<Identity>,
}

/// A response to send, and what it carries, for the caller to count.
pub struct Outgoing {
    pub response: EncodedResponse,
    pub ty: ResourceType,
    pub updated: usize,
    pub removed: usize,
    /// From the source change it carries being observed to now, if it carries one.
    pub push_latency: Option<std::time::Duration>,
}

/// What a request meant, for the caller to log and count.
pub enum Answer {
    /// Neither an ACK nor a NACK: the request only changed (or kept) the subscription.
    SubscriptionOnly,
    Ack {
        ty: ResourceType,
        latency: std::time::Duration,
    },
    /// `cut`: the client's message was longer than the limit and was cut.
    Nack {
        ty: ResourceType,
        nack: Nack,
        cut: bool,
    },
}

impl StreamState {
    pub fn new(kind: StreamKind, limits: Limits) -> Self {
        Self {
            kind,
            flavour: Flavour::Delta,
            node: None,
            connected_at: SystemTime::now(),
            types: Default::default(),
            nonce: 0,
            limits,
            response_bytes: MAX_RESPONSE_BYTES,
            identity: None,
        }
    }

    /// Responses of at most `bytes` of resources (a larger single resource still goes alone).
    pub fn with_response_bytes(self, bytes: usize) -> Self {
        Self { response_bytes: bytes, ..self }
    }

    /// A stream whose client authenticated as `identity`.
    pub fn with_identity(self, identity: Option<Identity>) -> Self {
        Self { identity, ..self }
    }

    /// A state-of-the-world stream.
    pub fn sotw(self) -> Self {
        Self { flavour: Flavour::Sotw, ..self }
    }

    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// The node the client announced in its first request, as kept (see [`kept_node`]).
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    pub fn connected_at(&self) -> SystemTime {
        self.connected_at
    }

    /// The state of one resource type, once the client asked for it.
    pub fn type_state(&self, ty: ResourceType) -> Option<&TypeState> {
        self.types[ty.index()].as_ref()
    }

    pub fn node_id(&self) -> &str {
        self.node.as_ref().map_or("", |n| n.id.as_str())
    }

    pub fn has_work(&self) -> bool {
        self.types.iter().flatten().any(|t| t.dirty)
    }

    /// A new snapshot is current: every subscribed type must be diffed again.
    pub fn snapshot_changed(&mut self, snapshot: &Snapshot) {
        for state in self.types.iter_mut().flatten() {
            state.dirty = true;
            state.push_started = state.push_started.or(snapshot.observed_at);
        }
    }

    /// Keeps the node of a stream's first request, once it agrees with the client's identity.
    fn first_node(&mut self, node: Option<Node>) -> Result<(), Refusal> {
        if self.node.is_none() {
            let node = kept_node(node.unwrap_or_default(), &self.limits)?;
            if let Some(identity) = &self.identity {
                identity.agrees_with(&node)?;
            }
            self.node = Some(node);
        }
        Ok(())
    }

    /// What `response_nonce` and `error_detail` say about the response they answer: an
    /// ACK, a NACK, or (`None`) nothing current, as with a stale nonce.
    fn answer(
        &mut self,
        ty: ResourceType,
        response_nonce: &str,
        error: Option<&envoy_types::pb::google::rpc::Status>,
    ) -> Option<Answer> {
        let max_message = self.limits.usize(Limit::NackMessageBytes);
        let state = self.types[ty.index()].get_or_insert_with(TypeState::default);
        if response_nonce.is_empty() {
            return Some(Answer::SubscriptionOnly);
        }
        match &state.sent {
            Some(sent) if sent.nonce == response_nonce => Some(match error {
                Some(error) => {
                    let (message, cut) = truncate(&error.message, max_message);
                    let nack = Nack {
                        nonce: sent.nonce.clone(),
                        version: sent.version.clone(),
                        message,
                        wall: SystemTime::now(),
                    };
                    state.last_nack = Some(nack.clone());
                    Answer::Nack { ty, nack, cut }
                }
                None => {
                    let answer = Answer::Ack { ty, latency: sent.at.elapsed() };
                    state.acked = Some(sent.clone());
                    answer
                }
            }),
            _ => {
                debug!(type_url = %ty, nonce = %response_nonce, "stale nonce");
                None
            }
        }
    }

    /// A state-of-the-world request. One with a stale nonce is ignored whole, as
    /// go-control-plane does: a newer response is already on its way.
    pub fn handle_sotw_request(&mut self, mut request: DiscoveryRequest) -> Result<Answer, Refusal> {
        self.first_node(request.node.take())?;
        let ty = self.resource_type(&request.type_url)?;
        let Some(answer) = self.answer(ty, &request.response_nonce, request.error_detail.as_ref()) else {
            return Ok(Answer::SubscriptionOnly);
        };
        if request.resource_names.len() > self.limits.usize(Limit::SubscriptionNames) {
            return Err(self.limits.refusal(Limit::SubscriptionNames, format!("{ty}")));
        }
        let state = self.types[ty.index()].get_or_insert_with(TypeState::default);
        // Listeners and clusters named by nobody means all of them (legacy wildcard), unless the
        // client named some before: then it unsubscribes from everything. Endpoints and routes
        // never mean all.
        let legacy = !state.subscription.is_started() || state.subscription.is_wildcard();
        let wildcard = ty.full_state() && request.resource_names.is_empty() && legacy;
        if state.subscription.replace(&request.resource_names, wildcard) {
            state.synced = None;
            state.dirty = true;
        }
        Ok(answer)
    }

    /// A delta request; `current`, the snapshot being served, lets a reconnecting client's
    /// versions be checked as they arrive, so only those that differ are kept.
    pub fn handle_request(
        &mut self,
        mut request: DeltaDiscoveryRequest,
        current: Option<&Snapshot>,
    ) -> Result<Answer, Refusal> {
        self.first_node(request.node.take())?;
        let ty = self.resource_type(&request.type_url)?;
        let max_names = self.limits.usize(Limit::SubscriptionNames);
        // Stale: an answer to a superseded response. Its subscription changes still count.
        let answer =
            self.answer(ty, &request.response_nonce, request.error_detail.as_ref()).unwrap_or(Answer::SubscriptionOnly);
        let state = self.types[ty.index()].get_or_insert_with(TypeState::default);
        let offered = request.resource_names_subscribe.len().max(request.initial_resource_versions.len());
        if offered > max_names || state.subscription.name_count() + request.resource_names_subscribe.len() > max_names {
            return Err(self.limits.refusal(Limit::SubscriptionNames, format!("{ty}")));
        }
        let changes_subscription = !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty()
            || state.sent.is_none();
        state.subscription.apply(SubscriptionRequest {
            subscribe: &request.resource_names_subscribe,
            unsubscribe: &request.resource_names_unsubscribe,
            initial_resource_versions: Some(&request.initial_resource_versions),
            current: current.map(|snapshot| snapshot.resources(ty)),
        });
        if changes_subscription {
            state.dirty = true;
            if state.subscription.is_partial() {
                // A sync in parts goes on (Envoy names clusters' endpoints as their clusters
                // arrive): the names just asked for are answered by name, or by the walk.
                let named = request.resource_names_subscribe.iter().filter(|n| n.as_str() != "*");
                state.recheck.extend(named.map(|n| Arc::from(n.as_str())));
            }
            // Names asked for again and again while no response goes out are not kept
            // again and again: past the subscription limit, one full diff answers them all.
            if state.recheck.len() > max_names {
                state.recheck = Vec::new();
                state.subscription.settle();
            }
            if !state.subscription.is_partial() {
                state.synced = None;
            }
        }
        Ok(answer)
    }

    fn resource_type(&self, type_url: &str) -> Result<ResourceType, Status> {
        let supported = || ResourceType::ALL.iter().map(|t| t.type_url()).collect::<Vec<_>>().join(", ");
        match (self.kind, type_url) {
            (StreamKind::Single(ty), "") => Ok(ty),
            (StreamKind::Aggregated, "") => {
                Err(Status::invalid_argument("type_url is empty: on ADS every request must name its resource type"))
            }
            (kind, url) => match (ResourceType::from_type_url(url), kind) {
                (None, _) => Err(Status::invalid_argument(format!(
                    "unsupported type_url {url:?}: edgexds serves {}",
                    supported()
                ))),
                (Some(ty), StreamKind::Single(only)) if ty != only => Err(Status::invalid_argument(format!(
                    "type_url {url:?} does not belong on this stream, which serves only {}",
                    only.type_url()
                ))),
                (Some(ty), _) => Ok(ty),
            },
        }
    }

    /// The next response, in [`ResourceType::ALL`] order, or `None` when the client is up to date.
    pub fn next_response(&mut self, snapshot: &Snapshot) -> Option<Outgoing> {
        let limit = self.response_bytes;
        for ty in ResourceType::ALL {
            let Some(state) = self.types[ty.index()].as_mut().filter(|s| s.dirty) else { continue };
            let resources = snapshot.resources(ty);
            let changed_since = |synced: Option<u64>| synced.and_then(|g| snapshot.changed_since(g, ty));
            let mut walking = false;
            if state.subscription.is_partial() {
                if let Some(changed) = changed_since(state.synced) {
                    // The snapshot moved on by one during a sync in parts: the sync goes on from it.
                    state.subscription.retarget(resources, changed);
                }
                walking = state.synced == Some(snapshot.generation()) || changed_since(state.synced).is_some();
                if !walking {
                    // Generations were skipped: everything is diffed again.
                    state.synced = None;
                }
            }
            // A full diff, or the walk continuing one, is sent in parts from a cursor; a diff
            // among a few candidates keeps its leftover names, which are few.
            let from_cursor = walking || state.synced.is_none();
            let mut changes = match changed_since(state.synced) {
                Some(changed) => {
                    state.subscription.changes_among(resources, changed.chain(state.recheck.iter().map(|n| &**n)))
                }
                None if state.synced == Some(snapshot.generation()) => {
                    state.subscription.changes_among(resources, state.recheck.iter().map(|n| &**n))
                }
                None => state.subscription.changes(resources),
            };
            let mut walk_stopped = false;
            if walking {
                let used: usize = changes.updated.iter().map(|(_, r)| r.body.len()).sum();
                let (next, stopped) = state.subscription.walk(limit.saturating_sub(used));
                // The walk looked no further than its last name: the part ends there, or the
                // cursor would pass names nobody looked at. What is cut, it finds again.
                let looked_upto = next.last().filter(|_| stopped).map(|(name, _)| name.clone());
                // Names answered by name and names walked to, in name order, each once (both
                // lists take a name's resource from the same snapshot).
                changes.updated.extend(next);
                changes.updated.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                changes.updated.dedup_by(|a, b| a.0 == b.0);
                if let Some(last) = looked_upto {
                    let end = changes.updated.partition_point(|(name, _)| *name <= last);
                    changes.updated.truncate(end);
                }
                walk_stopped = stopped;
            }
            state.dirty = false;
            state.synced = Some(snapshot.generation());
            // Dropped, not cleared: an idle stream should not keep room for names.
            state.recheck = Vec::new();
            // A full-state response cannot be split: what it leaves out, the client deletes.
            let whole = self.flavour == Flavour::Sotw && ty.full_state();
            let (changes, rest) = if whole { (changes, Vec::new()) } else { split_at_limit(changes, limit) };
            let complete = rest.is_empty() && !walk_stopped;
            if !complete {
                state.dirty = true;
                // The rest goes in later responses: from a cursor, the walk finds again the names
                // after where this one stops, and names the cursor passed are looked at by name.
                state.recheck = match from_cursor {
                    // Copied, not collected in place: that would keep the whole tail's buffer
                    // (24 kB a client at 1,000 × 10) for the few names it keeps.
                    true => rest.iter().filter(|name| state.subscription.passed(name)).cloned().collect(),
                    false => rest,
                };
            }
            if changes.is_empty() && !state.subscription.owes_response() {
                state.push_started = None;
                if complete {
                    state.subscription.rebase(resources);
                }
                continue;
            }
            if complete {
                state.subscription.record_sent(&changes);
                // Everything due is in this response: the client is in sync with this snapshot.
                state.subscription.rebase(resources);
            } else if from_cursor {
                state.subscription.record_part(&changes, resources);
            } else {
                state.subscription.record_sent(&changes);
            }
            self.nonce += 1;
            let nonce = self.nonce.to_string();
            let now = Instant::now();
            let version = match self.flavour {
                Flavour::Delta => snapshot.version(ty).to_owned(),
                // The client's whole state of this type, so equal states get equal versions on every replica.
                Flavour::Sotw => state.subscription.held_version(),
            };
            state.sent =
                Some(Sent { nonce: nonce.clone(), version: version.clone(), at: now, wall: SystemTime::now() });
            let push_latency = state.push_started.take().map(|started| now - started);
            let (updated, removed) = (changes.updated.len(), changes.removed.len());
            debug!(type_url = %ty, nonce, updated, removed, "sending");
            let response = match self.flavour {
                Flavour::Delta => encode_response(ty.type_url(), &nonce, &changes.updated, &changes.removed),
                Flavour::Sotw if whole => {
                    let held = state.subscription.held_resources(resources);
                    encode_sotw_response(ty.type_url(), &version, &nonce, &held)
                }
                Flavour::Sotw => encode_sotw_response(ty.type_url(), &version, &nonce, &changes.updated),
            };
            if let Some(dependent) = ty.dependent() {
                self.resend_dependents(dependent, &changes);
            }
            return Some(Outgoing { response, ty, updated, removed, push_latency });
        }
        None
    }

    /// Envoy keeps an updated cluster warming until its endpoints arrive again, and an
    /// updated listener until its routes do; resending them at once (they share the
    /// name) avoids waiting for the initial-fetch timeout.
    fn resend_dependents(&mut self, dependent: ResourceType, updated: &Changes) {
        if let Some(state) = self.types[dependent.index()].as_mut() {
            for (name, _) in &updated.updated {
                if state.subscription.resend(name) {
                    state.dirty = true;
                    state.recheck.push(name.clone());
                }
            }
        }
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

/// Logs a NACK; `first` says whether this node already rejected this version before.
pub fn log_nack(node: &str, ty: ResourceType, nack: &Nack, first: bool) {
    if first {
        warn!(node, type_url = %ty, version = %nack.version, nonce = %nack.nonce, error = %nack.message, "Envoy rejected the update (NACK)");
    } else {
        debug!(node, type_url = %ty, version = %nack.version, "NACK repeated");
    }
}

#[cfg(test)]
#[path = "stream_state_tests.rs"]
mod tests;
