//! What a client's node says about itself, read the same way by every service on the port
//! (xDS streams for their client's place, HDS for its checkers'): words, never trusted over
//! an identity that says otherwise.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;

/// The Kubernetes node the client says it runs on: node metadata `node_name` (or `NODE_NAME`).
pub fn node_name(node: &Node) -> Option<String> {
    let fields = &node.metadata.as_ref()?.fields;
    ["node_name", "NODE_NAME"].iter().find_map(|key| match fields.get(*key)?.kind.as_ref()? {
        Kind::StringValue(value) if !value.is_empty() => Some(value.clone()),
        _ => None,
    })
}

/// The zone the client says it is in: `node.locality.zone`.
pub fn zone(node: &Node) -> Option<String> {
    node.locality.as_ref().map(|l| l.zone.clone()).filter(|z| !z.is_empty())
}
