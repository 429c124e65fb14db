//! The protocol state of one xDS stream, delta or state of the world: subscriptions,
//! nonces, ACKs and NACKs.
//!
//! Synchronous and free of I/O; only the stream task touches it. Operators see it through
//! the views it publishes ([`super::view`]).

use crate::auth::Identity;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;
use tracing::{debug, warn};

use super::budget::{MAX_EARNED_RESPONSE_BYTES, MAX_RESPONSE_BYTES};
use super::delta_request::DeltaRequest;
use super::response_wire::EncodedResponse;
use super::subscription::{Changes, Part, Subscription, SubscriptionRequest};
use super::view::{Holdings, Nack, Sent, StreamView, TypeView};
use super::{Flavour, StreamKind, delta_response, sotw_response};
use crate::cache::{PlaceLease, Places, ResourceType, Snapshot};
use crate::model::{Place, PlaceClaim, ResolvedPlace};
use crate::port::{Limit, Limits, Refusal, kept_node, node_facts, truncate};

#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// Shared with the published views: a stream republishes after every request and every
    /// response, and copying the nonce and version strings each time was 4% of a change's
    /// CPU over 1,000 clients.
    sent: Option<Arc<Sent>>,
    acked: Option<Arc<Sent>>,
    last_nack: Option<Arc<Nack>>,
    /// Something (a snapshot, a request, a part still to send) needs looking at.
    dirty: bool,
    /// Set when a new snapshot arrives; cleared by the response that carries it.
    push_started: Option<Instant>,
}

impl TypeState {
    fn view(&self) -> TypeView {
        TypeView {
            wildcard: self.subscription.is_wildcard(),
            names: self.subscription.name_count(),
            sent: self.sent.clone(),
            acked: self.acked.clone(),
            last_nack: self.last_nack.clone(),
        }
    }
}

#[derive(Debug)]
pub struct StreamState {
    kind: StreamKind,
    flavour: Flavour,
    node: Option<Arc<Node>>,
    connected_at: SystemTime,
    /// Boxed: a client asks for two or four of the types, and 1,000 streams each kept
    /// room for all of them inline (half a kB a type).
    types: [Option<Box<TypeState>>; ResourceType::COUNT],
    nonce: u64,
    limits: Limits,
    /// Resource bytes per response at most, whatever the budget grants: lower only in tests
    /// that make every sync come in many parts.
    response_bytes: usize,
    /// Who the client authenticated as; its node must agree.
    identity: Option<Identity>,
    requests: u64,
    responses: u64,
    /// Where the client is, from its node and identity; kept in `places` for the pipeline.
    claim: Option<PlaceClaim>,
    place: ResolvedPlace,
    lease: Option<PlaceLease>,
    places: Option<Arc<Places>>,
    /// The variant the client is served (`None`: the shared snapshot).
    served: Option<Place>,
    /// The snapshot was built before the pipeline knew the client's place: load assignments
    /// wait for one that was, rather than going out shared and then again for the place.
    awaiting_place: bool,
    placed_once: bool,
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
        nack: Arc<Nack>,
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
            response_bytes: MAX_EARNED_RESPONSE_BYTES,
            identity: None,
            requests: 0,
            responses: 0,
            claim: None,
            place: ResolvedPlace::default(),
            lease: None,
            places: None,
            served: None,
            awaiting_place: false,
            placed_once: false,
        }
    }

    /// A stream that reports its client's place into `places`, and is served that place's variant.
    pub fn with_places(self, places: Option<Arc<Places>>) -> Self {
        Self { places, ..self }
    }

    /// Where the client is, and who said so.
    pub fn place(&self) -> &ResolvedPlace {
        &self.place
    }

    /// What the client is served of `snapshot`: its place's variant, or the snapshot itself.
    /// Its place is resolved again first (the Node of a bound token may have been labelled
    /// since); a client moved to another variant forgets what it was synced with.
    fn placed<'a>(&mut self, snapshot: &'a Snapshot) -> &'a Snapshot {
        // What the client says never changes; only a bound node's label can.
        if let Some(claim) = self.claim.as_ref().filter(|c| c.bound_node.is_some() || !self.placed_once) {
            let resolved = claim.resolve(snapshot.nodes());
            self.placed_once = true;
            if resolved != self.place {
                self.lease = self.places.as_ref().and_then(|places| places.enter(resolved.place.clone()));
                self.place = resolved;
            }
        }
        let ((served, key), awaiting) = match snapshot.at(&self.place.place) {
            Ok(served) => (served, false),
            // Its variant comes with a later snapshot, once the pipeline has seen the place
            // (which only a registered stream tells it).
            Err(_) => ((snapshot, None), self.lease.is_some()),
        };
        self.awaiting_place = awaiting;
        if key != self.served {
            self.served = key;
            for state in self.types.iter_mut().flatten() {
                state.subscription.forget_generation();
                state.dirty = true;
            }
        }
        served
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
        self.node.as_deref()
    }

    pub fn connected_at(&self) -> SystemTime {
        self.connected_at
    }

    /// The stream as operators see it.
    pub fn view(&self) -> StreamView {
        StreamView {
            kind: self.kind,
            flavour: self.flavour,
            node: self.node.clone(),
            identity: self.identity.clone(),
            connected_at: self.connected_at,
            types: std::array::from_fn(|i| self.types[i].as_deref().map(TypeState::view)),
            requests: self.requests,
            responses: self.responses,
            busy: self.has_work(),
            place: self.place.clone(),
        }
    }

    /// What the client holds of each type it asked for, name by name.
    pub fn holdings(&self) -> Holdings {
        std::array::from_fn(|i| {
            self.types[i].as_ref().map(|t| t.subscription.held().map(|(name, hash)| (Arc::from(name), hash)).collect())
        })
    }

    pub fn node_id(&self) -> &str {
        self.node.as_ref().map_or("", |n| n.id.as_str())
    }

    pub fn has_work(&self) -> bool {
        let held_off = |ty: ResourceType| ty == ResourceType::ClusterLoadAssignment && self.awaiting_place;
        ResourceType::ALL
            .into_iter()
            .any(|ty| !held_off(ty) && self.types[ty.index()].as_ref().is_some_and(|t| t.dirty))
    }

    /// A new snapshot is current: every subscribed type must be diffed again.
    pub fn snapshot_changed(&mut self, snapshot: &Snapshot) {
        // Its place may now have a variant, or be known to need none.
        self.placed(snapshot);
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
            self.claim = Some(place_claim(&node, self.identity.as_ref()));
            self.node = Some(Arc::new(node));
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
        let state = self.types[ty.index()].get_or_insert_with(Box::default);
        if response_nonce.is_empty() {
            return Some(Answer::SubscriptionOnly);
        }
        match &state.sent {
            Some(sent) if sent.nonce == response_nonce => Some(match error {
                Some(error) => {
                    let (message, cut) = truncate(&error.message, max_message);
                    let nack = Arc::new(Nack {
                        nonce: sent.nonce.clone(),
                        version: sent.version.clone(),
                        message,
                        wall: SystemTime::now(),
                    });
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
    pub fn handle_sotw_request(
        &mut self,
        mut request: DiscoveryRequest,
        current: Option<&Snapshot>,
    ) -> Result<Answer, Refusal> {
        self.requests += 1;
        self.first_node(request.node.take())?;
        let current = current.map(|snapshot| self.placed(snapshot));
        let ty = self.resource_type(&request.type_url)?;
        let Some(answer) = self.answer(ty, &request.response_nonce, request.error_detail.as_ref()) else {
            return Ok(Answer::SubscriptionOnly);
        };
        // The names are the whole subscription.
        self.within_limits(ty, request.resource_names.iter().map(String::as_str), (0, 0), current)?;
        let state = self.types[ty.index()].get_or_insert_with(Box::default);
        // Listeners and clusters named by nobody means all of them (legacy wildcard), unless the
        // client named some before: then it unsubscribes from everything. Endpoints and routes
        // never mean all.
        let first = !state.subscription.is_started();
        let legacy = first || state.subscription.is_wildcard();
        let wildcard = ty.full_state() && request.resource_names.is_empty() && legacy;
        if state.subscription.replace(&request.resource_names, wildcard) {
            state.dirty = true;
        }
        // A client reconnecting, to this replica or another serving the same resources, names
        // the version it holds: when that is what it is due, it is resent nothing (an empty
        // state-of-the-world response would tell it to drop everything).
        if first
            && !request.version_info.is_empty()
            && let Some(snapshot) = current
            && state.subscription.take_held_version(&request.version_info, snapshot.resources(ty))
        {
            let held = Arc::new(Sent {
                nonce: String::new(),
                version: request.version_info,
                at: Instant::now(),
                wall: SystemTime::now(),
            });
            state.sent = Some(held.clone());
            state.acked = Some(held);
            state.dirty = false;
        }
        Ok(answer)
    }

    /// A delta request; `current`, the snapshot being served, lets a reconnecting client's
    /// versions be checked as they arrive, so only those that differ are kept.
    pub fn handle_request(
        &mut self,
        request: impl Into<DeltaRequest>,
        current: Option<&Snapshot>,
    ) -> Result<Answer, Refusal> {
        let mut request = request.into();
        self.requests += 1;
        self.first_node(request.node.take())?;
        let current = current.map(|snapshot| self.placed(snapshot));
        let ty = self.resource_type(&request.type_url)?;
        let max_names = self.limits.usize(Limit::SubscriptionNames);
        // Stale: an answer to a superseded response. Its subscription changes still count.
        let answer =
            self.answer(ty, &request.response_nonce, request.error_detail.as_ref()).unwrap_or(Answer::SubscriptionOnly);
        let held = self.types[ty.index()]
            .as_ref()
            .map_or((0, 0), |t| (t.subscription.name_count(), t.subscription.name_bytes()));
        let subscribed = request.resource_names_subscribe.iter().map(String::as_str);
        self.within_limits(ty, subscribed, held, current)?;
        let initial = request.initial_versions().map_err(|_| {
            Status::invalid_argument("undecodable request: initial_resource_versions names a resource in invalid UTF-8")
        })?;
        self.within_limits(ty, initial.keys().copied(), (0, 0), current)?;
        let too_long =
            request.resource_names_unsubscribe.iter().find(|n| n.len() > self.limits.usize(Limit::NameBytes));
        if let Some(name) = too_long {
            return Err(self.limits.refusal(Limit::NameBytes, format!("{} bytes", name.len())));
        }
        let state = self.types[ty.index()].get_or_insert_with(Box::default);
        let changed = state.subscription.apply(
            SubscriptionRequest {
                subscribe: &request.resource_names_subscribe,
                unsubscribe: &request.resource_names_unsubscribe,
                initial_resource_versions: Some(&initial),
                current: current.map(|snapshot| snapshot.resources(ty)),
            },
            max_names,
        );
        // Until a first response goes out, every request is owed one.
        if changed || state.sent.is_none() {
            state.dirty = true;
        }
        Ok(answer)
    }

    /// Refuses what would make this stream hold more names of `ty` than its limits allow:
    /// `held` (names and their bytes) and then `names`, counted beyond what the snapshot
    /// being served holds of the type. A client subscribed to everything the snapshot asks it
    /// to is never refused, however large the snapshot; one naming what does not exist is.
    fn within_limits<'a>(
        &self,
        ty: ResourceType,
        names: impl IntoIterator<Item = &'a str>,
        held: (usize, usize),
        current: Option<&Snapshot>,
    ) -> Result<(), Refusal> {
        let limits = &self.limits;
        let (mut count, mut bytes) = held;
        for name in names {
            if name.len() > limits.usize(Limit::NameBytes) {
                return Err(limits.refusal(Limit::NameBytes, format!("{} bytes", name.len())));
            }
            count += 1;
            bytes += name.len();
        }
        let (served, served_bytes) = current.map_or((0, 0), |s| (s.len(ty), s.name_bytes(ty)));
        if count > served.saturating_add(limits.usize(Limit::SubscriptionNames)) {
            return Err(limits.refusal(Limit::SubscriptionNames, format!("{count} names of {ty}, {served} served")));
        }
        if bytes > served_bytes.saturating_add(limits.usize(Limit::SubscriptionBytes)) {
            return Err(limits.refusal(Limit::SubscriptionBytes, format!("{bytes} bytes of {ty} names")));
        }
        Ok(())
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

    /// The next response of at most a base-size response's resource bytes.
    pub fn next_response(&mut self, snapshot: &Snapshot) -> Option<Outgoing> {
        self.next_response_within(snapshot, MAX_RESPONSE_BYTES)
    }

    /// The next response, in [`ResourceType::ALL`] order, carrying at most `granted` resource
    /// bytes (what the budget granted), or `None` when the client is up to date.
    pub fn next_response_within(&mut self, snapshot: &Snapshot, granted: usize) -> Option<Outgoing> {
        let snapshot = self.placed(snapshot);
        let limit = granted.min(self.response_bytes);
        for ty in ResourceType::ALL {
            let whole = self.flavour == Flavour::Sotw && ty.full_state();
            if ty == ResourceType::ClusterLoadAssignment && self.awaiting_place {
                continue;
            }
            let Some(state) = self.types[ty.index()].as_mut().filter(|s| s.dirty) else { continue };
            let Some(part) = state.subscription.next_part(snapshot, ty, limit, whole) else {
                state.dirty = false;
                state.push_started = None;
                continue;
            };
            state.dirty = !part.complete;
            let outgoing = self.send(ty, &part, snapshot, whole);
            if let Some(dependent) = ty.dependent() {
                self.resend_dependents(dependent, &part.changes);
            }
            return Some(outgoing);
        }
        None
    }

    /// Stamps `part` with a nonce and its flavour's version, and encodes it.
    fn send(&mut self, ty: ResourceType, part: &Part, snapshot: &Snapshot, whole: bool) -> Outgoing {
        self.nonce += 1;
        self.responses += 1;
        let nonce = self.nonce.to_string();
        let Some(state) = self.types[ty.index()].as_mut() else {
            unreachable!("a part is only built for a type asked for")
        };
        let (version, response) = match self.flavour {
            Flavour::Delta => delta_response::assemble(ty, &nonce, snapshot, part),
            Flavour::Sotw => {
                sotw_response::assemble(ty, &nonce, &state.subscription, snapshot.resources(ty), part, whole)
            }
        };
        let now = Instant::now();
        let push_latency = state.push_started.take().map(|started| now - started);
        let (updated, removed) = (part.changes.updated.len(), part.changes.removed.len());
        debug!(type_url = %ty, nonce, updated, removed, "sending");
        state.sent = Some(Arc::new(Sent { nonce, version, at: now, wall: SystemTime::now() }));
        Outgoing { response, ty, updated, removed, push_latency }
    }

    /// Envoy keeps an updated cluster warming until its endpoints arrive again, and an
    /// updated listener until its routes do; resending them at once (they share the
    /// name) avoids waiting for the initial-fetch timeout.
    fn resend_dependents(&mut self, dependent: ResourceType, updated: &Changes) {
        if let Some(state) = self.types[dependent.index()].as_mut() {
            for (name, _) in &updated.updated {
                if state.subscription.resend(name) {
                    state.dirty = true;
                }
            }
        }
    }
}

/// What a client's node and identity say about where it is: the node its token is bound
/// to, and what the client itself says (`node.locality.zone`, node metadata `node_name`).
pub fn place_claim(node: &Node, identity: Option<&Identity>) -> PlaceClaim {
    PlaceClaim {
        bound_node: identity.and_then(|i| i.node.clone()),
        zone: node_facts::zone(node),
        node: node_facts::node_name(node),
    }
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

#[cfg(test)]
#[path = "place_tests.rs"]
mod place_tests;
