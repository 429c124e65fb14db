//! A state-of-the-world response: for listeners and clusters everything the client holds
//! (what it leaves out, the client deletes), for endpoints and routes what changed, with a
//! version that hashes what the client holds, as a `DiscoveryResponse` frame.

use std::sync::Arc;

use super::grpc::frame_with_capacity;
use super::response_wire::{EncodedResponse, any_len, field_len, message_field_len, put_any, put_bytes, put_header};
use super::subscription::{Part, Subscription};
use crate::cache::{ResourceType, Resources, VersionedResource};

/// The response carrying `part` (recorded as sent already), and its version. `whole`:
/// the type is full-state, so the response carries everything the client holds.
pub(super) fn assemble(
    ty: ResourceType,
    nonce: &str,
    subscription: &Subscription,
    resources: &Resources,
    part: &Part,
    whole: bool,
) -> (String, EncodedResponse) {
    // The client's whole state of this type, so equal states get equal versions on every replica.
    let version = subscription.held_version();
    let response = if whole {
        encode_sotw_response(ty.type_url(), &version, nonce, &subscription.held_resources(resources))
    } else {
        encode_sotw_response(ty.type_url(), &version, nonce, &part.changes.updated)
    };
    (version, response)
}

// DiscoveryResponse (state of the world)
const SOTW_VERSION_INFO: u32 = 1;
const SOTW_RESOURCES: u32 = 2;
const SOTW_TYPE_URL: u32 = 4;
const SOTW_NONCE: u32 = 5;

/// A state-of-the-world `DiscoveryResponse` frame: `version_info`, each resource as an
/// `Any`, the type URL and the nonce.
pub fn encode_sotw_response(
    type_url: &str,
    version_info: &str,
    nonce: &str,
    resources: &[(Arc<str>, Arc<VersionedResource>)],
) -> EncodedResponse {
    let len = field_len(SOTW_VERSION_INFO, version_info.len())
        + resources.iter().map(|(_, r)| message_field_len(SOTW_RESOURCES, any_len(type_url, &r.body))).sum::<usize>()
        + field_len(SOTW_TYPE_URL, type_url.len())
        + field_len(SOTW_NONCE, nonce.len());
    let mut buf = frame_with_capacity(len);
    put_bytes(&mut buf, SOTW_VERSION_INFO, version_info.as_bytes());
    for (_, resource) in resources {
        put_header(&mut buf, SOTW_RESOURCES, any_len(type_url, &resource.body));
        put_any(&mut buf, type_url, &resource.body);
    }
    put_bytes(&mut buf, SOTW_TYPE_URL, type_url.as_bytes());
    put_bytes(&mut buf, SOTW_NONCE, nonce.as_bytes());
    EncodedResponse { frame: buf, resources: resources.len() }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    use super::*;

    #[test]
    fn the_state_of_the_world_frame_holds_exactly_the_bytes_prost_would_write() {
        let type_url = ResourceType::Cluster.type_url();
        let resources: Vec<(Arc<str>, Arc<VersionedResource>)> = vec![
            ("web.shop:80".into(), Arc::new(VersionedResource::new(vec![10, 3, 97, 98, 99]))),
            ("empty.shop:80".into(), Arc::new(VersionedResource::new(Vec::new()))),
        ];
        let ours = encode_sotw_response(type_url, "00ff", "7", &resources);
        let theirs = DiscoveryResponse {
            version_info: "00ff".into(),
            resources: resources
                .iter()
                .map(|(_, r)| Any { type_url: type_url.into(), value: r.body.clone() })
                .collect(),
            type_url: type_url.into(),
            nonce: "7".into(),
            ..Default::default()
        };
        assert_eq!(&ours.frame[5..], &theirs.encode_to_vec()[..]);
        assert_eq!(ours.resources, 2);
    }
}
