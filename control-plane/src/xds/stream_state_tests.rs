//! A sync sent in many parts, interleaved with snapshot changes, subscription changes and
//! reconnections with the versions held, leaves every client exactly where one sent whole
//! leaves it, and what the server believes a client holds is what the client holds at
//! every step, between parts included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::cache::{SnapshotCache, format_version};
use crate::xds::grpc::HEADER_BYTES;

const NAMES: [&str; 9] = ["a", "b", "c", "d", "e", "f", "g", "h", "*"];
const TY: ResourceType = ResourceType::ClusterLoadAssignment;
/// Resources are 1 to 6 bytes, so most parts carry one or two.
const TINY: usize = 8;

#[derive(Clone, Debug)]
enum Step {
    Publish(Vec<(usize, usize, u8)>),
    Subscribe(Vec<usize>),
    Unsubscribe(Vec<usize>),
    Respond,
    Drain,
    /// A new stream, whose first request lists what the client holds.
    Reconnect,
}

fn step() -> impl Strategy<Value = Step> {
    let names = || prop::collection::vec(0..NAMES.len(), 0..4);
    prop_oneof![
        2 => resources().prop_map(Step::Publish),
        3 => names().prop_map(Step::Subscribe),
        1 => names().prop_map(Step::Unsubscribe),
        5 => Just(Step::Respond),
        1 => Just(Step::Drain),
        1 => Just(Step::Reconnect),
    ]
}

/// Names, sizes (so several fit in a part, or one alone) and contents.
fn resources() -> impl Strategy<Value = Vec<(usize, usize, u8)>> {
    prop::collection::vec((0..NAMES.len() - 1, 1..7usize, 0..3u8), 0..9)
}

/// A client as the protocol describes it: what it asked for, and what it was sent.
#[derive(Default)]
struct Client {
    started: bool,
    wildcard: bool,
    named: BTreeSet<String>,
    held: BTreeMap<String, String>,
}

impl Client {
    fn in_scope(&self, name: &str) -> bool {
        self.wildcard || self.named.contains(name)
    }

    fn ask(&mut self, subscribe: &[String], unsubscribe: &[String]) {
        if !self.started {
            self.started = true;
            self.wildcard = subscribe.is_empty();
        }
        for name in subscribe {
            match name.as_str() {
                "*" => self.wildcard = true,
                name => {
                    self.named.insert(name.to_owned());
                }
            }
        }
        for name in unsubscribe {
            match name.as_str() {
                "*" => self.wildcard = false,
                name => {
                    self.named.remove(name);
                }
            }
        }
        // What leaves the scope, the client forgets.
        let held = std::mem::take(&mut self.held);
        self.held = held.into_iter().filter(|(name, _)| self.in_scope(name)).collect();
    }

    fn apply(&mut self, response: &DeltaDiscoveryResponse) {
        for resource in &response.resources {
            self.held.insert(resource.name.clone(), resource.version.clone());
        }
        for name in &response.removed_resources {
            self.held.remove(name);
        }
    }
}

struct Pair {
    stream: StreamState,
    client: Client,
    limit: usize,
}

impl Pair {
    fn new(limit: usize) -> Self {
        Self { stream: Self::stream(limit), client: Client::default(), limit }
    }

    fn stream(limit: usize) -> StreamState {
        StreamState::new(StreamKind::Aggregated, Limits::default()).with_response_bytes(limit)
    }

    fn ask(&mut self, subscribe: &[String], unsubscribe: &[String], snapshot: &Snapshot) {
        let node = (!self.client.started).then(|| Node { id: "sidecar".into(), ..Node::default() });
        let request = DeltaDiscoveryRequest {
            node,
            type_url: TY.type_url().into(),
            resource_names_subscribe: subscribe.to_vec(),
            resource_names_unsubscribe: unsubscribe.to_vec(),
            ..DeltaDiscoveryRequest::default()
        };
        self.stream.handle_request(request, Some(snapshot)).map_err(|r| r.status).expect("a valid request");
        self.client.ask(subscribe, unsubscribe);
    }

    /// Drops the stream and opens another, asking for the same names with the versions held,
    /// as Envoy does. A client that named nothing and has no wildcard stays as it is: its
    /// empty first request would mean the legacy wildcard.
    fn reconnect(&mut self, snapshot: &Snapshot) {
        if !self.client.wildcard && self.client.named.is_empty() {
            return;
        }
        let mut subscribe: Vec<String> = self.client.named.iter().cloned().collect();
        if self.client.wildcard {
            subscribe.push("*".into());
        }
        let request = DeltaDiscoveryRequest {
            node: Some(Node { id: "sidecar".into(), ..Node::default() }),
            type_url: TY.type_url().into(),
            resource_names_subscribe: subscribe,
            initial_resource_versions: self.client.held.clone().into_iter().collect(),
            ..DeltaDiscoveryRequest::default()
        };
        self.stream = Self::stream(self.limit);
        self.stream.handle_request(request, Some(snapshot)).map_err(|r| r.status).expect("a valid request");
    }

    /// One response, if one is due; its resources' size is checked against the limit.
    fn respond(&mut self, snapshot: &Snapshot) -> bool {
        let Some(outgoing) = self.stream.next_response(snapshot) else { return false };
        let response = DeltaDiscoveryResponse::decode(&outgoing.response.frame[HEADER_BYTES..]).expect("decodes");
        let sizes: Vec<usize> =
            response.resources.iter().filter_map(|r| r.resource.as_ref()).map(|a| a.value.len()).collect();
        assert!(sizes.len() <= 1 || sizes.iter().sum::<usize>() <= self.limit, "a part over the limit: {sizes:?}");
        self.client.apply(&response);
        true
    }

    fn drain(&mut self, snapshot: &Snapshot) {
        for _ in 0..100 {
            if !self.respond(snapshot) {
                return;
            }
        }
        panic!("no end of responses");
    }

    /// What the server believes the client holds.
    fn believed(&self) -> BTreeMap<String, String> {
        let Some(held) = &self.stream.holdings()[TY.index()] else { return BTreeMap::new() };
        held.iter().map(|(name, hash)| (name.to_string(), format_version(*hash))).collect()
    }
}

fn publish(cache: &SnapshotCache, items: &[(usize, usize, u8)]) -> Arc<Snapshot> {
    let encoded = items.iter().map(|(name, size, salt)| (TY, NAMES[*name].to_owned(), vec![*salt; *size]));
    cache.publish(Snapshot::new(cache.current().as_deref(), encoded));
    cache.current().expect("published")
}

fn names(indices: &[usize]) -> Vec<String> {
    indices.iter().map(|i| NAMES[*i].to_owned()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::proptest_cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn a_sync_in_tiny_parts_ends_where_one_sent_whole_ends_and_the_server_knows_what_its_client_holds_at_every_step(
        first in prop::collection::vec(0..NAMES.len() - 1, 0..4),
        initial in resources(),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let cache = SnapshotCache::default();
        let mut snapshot = publish(&cache, &initial);
        let (mut parts, mut whole) = (Pair::new(TINY), Pair::new(MAX_RESPONSE_BYTES));
        for pair in [&mut parts, &mut whole] {
            pair.ask(&names(&first), &[], &snapshot);
        }
        for step in steps.into_iter().chain([Step::Drain]) {
            if let Step::Publish(items) = &step {
                snapshot = publish(&cache, items);
            }
            for pair in [&mut parts, &mut whole] {
                match &step {
                    Step::Publish(_) => pair.stream.snapshot_changed(&snapshot),
                    Step::Subscribe(n) => pair.ask(&names(n), &[], &snapshot),
                    Step::Unsubscribe(n) => pair.ask(&[], &names(n), &snapshot),
                    Step::Reconnect => pair.reconnect(&snapshot),
                    Step::Respond => {
                        pair.respond(&snapshot);
                    }
                    Step::Drain => pair.drain(&snapshot),
                }
                prop_assert_eq!(pair.believed(), pair.client.held.clone(), "after {:?}", step);
            }
            if matches!(step, Step::Drain) {
                prop_assert_eq!(&parts.client.held, &whole.client.held);
                let expected: BTreeMap<String, String> = snapshot
                    .resources(TY)
                    .iter()
                    .filter(|(name, _)| parts.client.in_scope(name))
                    .map(|(name, r)| (name.to_string(), r.version.clone()))
                    .collect();
                prop_assert_eq!(&parts.client.held, &expected);
            }
        }
    }
}
