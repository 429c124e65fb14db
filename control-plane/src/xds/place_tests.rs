//! A stream is served its client's place: the variant of a Service that asks to keep
//! traffic close, with the delta and state-of-the-world rules holding per variant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use prost::Message;

use super::*;
use crate::auth::Identity;
use crate::cache::{Places, SnapshotCache};
use crate::model::fixtures::{endpoint, service, slice, state};
use crate::model::{CheckVerdicts, Node as KubeNode, ObjectKey, PlaceSource, SourceState, TrafficDistribution};
use crate::pipeline::SnapshotBuilder;
use crate::translate::TranslateOptions;
use crate::xds::grpc::HEADER_BYTES;

const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
const WEB: &str = "web.shop:80";

/// web prefers the same zone; its endpoints are in z1 (.1) and z2 (.2). Node n1 is in z2.
fn shop() -> SourceState {
    let mut web = service("shop", "web", &[("http", 80)]);
    web.traffic_distribution = Some(TrafficDistribution::PreferSameZone);
    let endpoints = vec![endpoint("10.0.0.1", true, "z1"), endpoint("10.0.0.2", true, "z2")];
    let mut input = state(vec![web], vec![slice("shop", "web", "web", &[("http", 8080)], endpoints)], vec![]);
    let key = ObjectKey::new("", "n1");
    input.nodes.insert(key.clone(), Arc::new(KubeNode { key, zone: Some("z2".into()) }));
    input
}

/// A replica: its builder and cache; publishes for the places its streams are at.
struct Replica {
    builder: SnapshotBuilder,
    cache: SnapshotCache,
}

impl Replica {
    fn new() -> Self {
        Self { builder: SnapshotBuilder::new(TranslateOptions::default()), cache: SnapshotCache::default() }
    }

    fn places(&self) -> Arc<Places> {
        self.cache.places()
    }

    fn publish(&mut self, input: &SourceState) -> Arc<Snapshot> {
        let at: BTreeSet<_> = self.cache.places().subscribe().borrow().keys().cloned().collect();
        let update = self.builder.update(input, &Arc::new(CheckVerdicts::default()), &at);
        self.cache.publish_diffed(self.builder.snapshot().clone(), update.diff);
        self.cache.current().expect("published")
    }
}

fn node(zone: &str) -> Node {
    Node {
        id: format!("sidecar-{zone}"),
        locality: Some(Locality { zone: zone.into(), ..Locality::default() }),
        ..Node::default()
    }
}

fn delta_stream(replica: &Replica, identity: Option<Identity>) -> StreamState {
    StreamState::new(StreamKind::Aggregated, Limits::default())
        .with_identity(identity)
        .with_places(Some(replica.places()))
}

fn subscribe(stream: &mut StreamState, node: Node, held: BTreeMap<String, String>, snapshot: &Snapshot) {
    let request = DeltaDiscoveryRequest {
        node: Some(node),
        type_url: EDS.type_url().into(),
        resource_names_subscribe: vec![WEB.into()],
        initial_resource_versions: held.into_iter().collect(),
        ..DeltaDiscoveryRequest::default()
    };
    stream.handle_request(request, Some(snapshot)).map_err(|r| r.status).expect("a valid request");
}

fn delta_response(stream: &mut StreamState, snapshot: &Snapshot) -> Option<DeltaDiscoveryResponse> {
    let outgoing = stream.next_response(snapshot)?;
    Some(DeltaDiscoveryResponse::decode(&outgoing.response.frame[HEADER_BYTES..]).expect("decodes"))
}

/// The addresses at priority 0 of an encoded assignment.
fn first_tier(body: &[u8]) -> Vec<String> {
    let assignment = ClusterLoadAssignment::decode(body).expect("an assignment");
    assignment
        .endpoints
        .iter()
        .filter(|l| l.priority == 0)
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match e.host_identifier.as_ref()? {
            envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(e) => {
                match e.address.as_ref()?.address.as_ref()? {
                    envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s) => {
                        Some(s.address.clone())
                    }
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// Subscribes a delta client at `zone` to web, publishes for its place, and returns its
/// stream and what it received.
fn delta_client(replica: &mut Replica, zone: &str) -> (StreamState, DeltaDiscoveryResponse) {
    let input = shop();
    let mut snapshot = replica.publish(&input);
    let mut stream = delta_stream(replica, None);
    subscribe(&mut stream, node(zone), BTreeMap::new(), &snapshot);
    // The pipeline learns of the new place and publishes its variant.
    snapshot = replica.publish(&input);
    let mut last = None;
    while let Some(response) = delta_response(&mut stream, &snapshot) {
        last = Some(response);
    }
    (stream, last.expect("a response"))
}

#[test]
fn each_zone_is_sent_its_own_variant_and_the_same_place_gets_the_same_version_from_every_replica() {
    let (mut first, mut second) = (Replica::new(), Replica::new());
    let (_a, in_z1) = delta_client(&mut first, "z1");
    let (_b, in_z2) = delta_client(&mut first, "z2");
    let (_c, z1_elsewhere) = delta_client(&mut second, "z1");
    assert_eq!(first_tier(&in_z1.resources[0].resource.as_ref().unwrap().value), vec!["10.0.0.1"]);
    assert_eq!(first_tier(&in_z2.resources[0].resource.as_ref().unwrap().value), vec!["10.0.0.2"]);
    assert_ne!(in_z1.resources[0].version, in_z2.resources[0].version);
    assert_eq!(in_z1.resources[0].version, z1_elsewhere.resources[0].version, "replica-stable per place");
}

#[test]
fn a_delta_client_reconnecting_with_its_variants_version_is_resent_nothing_and_sees_a_removal() {
    let mut replica = Replica::new();
    let (first, sent) = delta_client(&mut replica, "z1");
    let held = BTreeMap::from([(WEB.to_owned(), sent.resources[0].version.clone())]);
    let snapshot = replica.cache.current().expect("published");
    let mut again = delta_stream(&replica, None);
    subscribe(&mut again, node("z1"), held, &snapshot);
    drop(first);
    let resent = delta_response(&mut again, &snapshot);
    assert!(resent.as_ref().is_none_or(|r| r.resources.is_empty()), "nothing resent: {resent:?}");
    let mut gone = shop();
    gone.services.remove(&ObjectKey::new("shop", "web"));
    let snapshot = replica.publish(&gone);
    let response = delta_response(&mut again, &snapshot).expect("the removal");
    assert_eq!(response.removed_resources, vec![WEB.to_owned()]);
}

#[test]
fn a_sotw_client_is_sent_its_variant_and_reconnecting_with_its_version_is_resent_nothing() {
    let mut replica = Replica::new();
    let input = shop();
    let mut snapshot = replica.publish(&input);
    let request = |version: &str| DiscoveryRequest {
        node: Some(node("z2")),
        type_url: EDS.type_url().into(),
        resource_names: vec![WEB.into()],
        version_info: version.into(),
        ..DiscoveryRequest::default()
    };
    let mut stream = delta_stream(&replica, None).sotw();
    stream.handle_sotw_request(request(""), Some(&snapshot)).map_err(|r| r.status).expect("valid");
    snapshot = replica.publish(&input);
    let mut last = None;
    while let Some(outgoing) = stream.next_response(&snapshot) {
        last = Some(DiscoveryResponse::decode(&outgoing.response.frame[HEADER_BYTES..]).expect("decodes"));
    }
    let response = last.expect("a response");
    assert_eq!(first_tier(&response.resources[0].value), vec!["10.0.0.2"]);
    let mut again = delta_stream(&replica, None).sotw();
    again.handle_sotw_request(request(&response.version_info), Some(&snapshot)).map_err(|r| r.status).expect("valid");
    assert!(again.next_response(&snapshot).is_none(), "nothing resent");
}

#[test]
fn a_token_bound_node_places_the_client_in_its_nodes_zone_whatever_its_bootstrap_says() {
    let mut replica = Replica::new();
    let input = shop();
    let mut snapshot = replica.publish(&input);
    let bound = Identity {
        namespace: "shop".into(),
        service_account: "web".into(),
        pod: Some("web-1".into()),
        node: Some("n1".into()),
        trust_domain: None,
    };
    let mut stream = delta_stream(&replica, Some(bound));
    subscribe(&mut stream, node("z1"), BTreeMap::new(), &snapshot);
    snapshot = replica.publish(&input);
    let mut last = None;
    while let Some(response) = delta_response(&mut stream, &snapshot) {
        last = Some(response);
    }
    let response = last.expect("a response");
    assert_eq!(first_tier(&response.resources[0].resource.as_ref().unwrap().value), vec!["10.0.0.2"]);
    let place = stream.place();
    assert_eq!(place.place.zone.as_deref(), Some("z2"));
    assert_eq!((place.zone_source, place.node_source), (PlaceSource::NodeLabel, PlaceSource::Token));
}

#[test]
fn a_client_at_a_new_place_waits_for_its_variant_rather_than_being_sent_the_shared_assignment_first() {
    let mut replica = Replica::new();
    let input = shop();
    let snapshot = replica.publish(&input);
    let mut stream = delta_stream(&replica, None);
    subscribe(&mut stream, node("z1"), BTreeMap::new(), &snapshot);
    assert!(!stream.has_work(), "nothing to do until a snapshot built for its place");
    assert!(delta_response(&mut stream, &snapshot).is_none());
    let snapshot = replica.publish(&input);
    stream.snapshot_changed(&snapshot);
    assert!(stream.has_work());
    let response = delta_response(&mut stream, &snapshot).expect("its variant");
    assert_eq!(first_tier(&response.resources[0].resource.as_ref().unwrap().value), vec!["10.0.0.1"]);
}

#[test]
fn a_client_whose_place_changes_nothing_is_served_the_shared_assignment_and_never_waits() {
    let mut replica = Replica::new();
    let mut input = shop();
    // Every endpoint in z1: a z1 client has one tier, the shared assignment.
    let endpoints = vec![endpoint("10.0.0.1", true, "z1"), endpoint("10.0.0.2", true, "z1")];
    let only_z1 = slice("shop", "web", "web", &[("http", 8080)], endpoints);
    input.slices.insert(only_z1.key.clone(), Arc::new(only_z1));
    let snapshot = replica.publish(&input);
    let mut stream = delta_stream(&replica, None);
    subscribe(&mut stream, node("z1"), BTreeMap::new(), &snapshot);
    let snapshot = replica.publish(&input);
    stream.snapshot_changed(&snapshot);
    let response = delta_response(&mut stream, &snapshot).expect("the shared assignment");
    let shared = snapshot.resources(EDS).get(WEB).expect("web's assignment").version.clone();
    assert_eq!(response.resources[0].version, shared);
}
