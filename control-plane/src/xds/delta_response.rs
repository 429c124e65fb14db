//! A delta response: what changed since the client was last sent anything, with the
//! snapshot's type version, as a `DeltaDiscoveryResponse` frame.

use std::sync::Arc;

use prost::encoding::{encoded_len_varint, key_len};

use super::grpc::frame_with_capacity;
use super::response_wire::{EncodedResponse, any_len, field_len, message_field_len, put_any, put_bytes, put_header};
use super::subscription::Part;
use crate::cache::{ResourceType, Snapshot, VersionedResource};

// DeltaDiscoveryResponse
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;
const REMOVED_RESOURCES: u32 = 6;
// Resource
const NAME: u32 = 3;
const VERSION: u32 = 1;
const RESOURCE: u32 = 2;

/// The response carrying `part`, and its version: the snapshot's version of the whole type,
/// equal on every replica serving the same resources.
pub(super) fn assemble(ty: ResourceType, nonce: &str, snapshot: &Snapshot, part: &Part) -> (String, EncodedResponse) {
    let response = encode_response(ty.type_url(), nonce, &part.changes.updated, &part.changes.removed);
    (snapshot.version(ty).to_owned(), response)
}

fn resource_len(type_url: &str, name: &str, resource: &VersionedResource) -> usize {
    field_len(NAME, name.len())
        + field_len(VERSION, resource.version.len())
        + message_field_len(RESOURCE, any_len(type_url, &resource.body))
}

pub fn encode_response(
    type_url: &str,
    nonce: &str,
    updated: &[(Arc<str>, Arc<VersionedResource>)],
    removed: &[String],
) -> EncodedResponse {
    let len =
        updated.iter().map(|(name, r)| message_field_len(RESOURCES, resource_len(type_url, name, r))).sum::<usize>()
            + field_len(TYPE_URL, type_url.len())
            + removed
                .iter()
                .map(|name| key_len(REMOVED_RESOURCES) + encoded_len_varint(name.len() as u64) + name.len())
                .sum::<usize>()
            + field_len(NONCE, nonce.len());
    let mut buf = frame_with_capacity(len);
    for (name, resource) in updated {
        put_header(&mut buf, RESOURCES, resource_len(type_url, name, resource));
        put_bytes(&mut buf, VERSION, resource.version.as_bytes());
        put_header(&mut buf, RESOURCE, any_len(type_url, &resource.body));
        put_any(&mut buf, type_url, &resource.body);
        put_bytes(&mut buf, NAME, name.as_bytes());
    }
    put_bytes(&mut buf, TYPE_URL, type_url.as_bytes());
    put_bytes(&mut buf, NONCE, nonce.as_bytes());
    for name in removed {
        // Repeated strings keep empty elements.
        put_header(&mut buf, REMOVED_RESOURCES, name.len());
        buf.extend_from_slice(name.as_bytes());
    }
    EncodedResponse { frame: buf, resources: updated.len() }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    use super::*;

    #[test]
    fn the_frame_holds_exactly_the_bytes_prost_would_write() {
        let type_url = ResourceType::ClusterLoadAssignment.type_url();
        let updated: Vec<(Arc<str>, Arc<VersionedResource>)> = vec![
            ("web.shop:80".into(), Arc::new(VersionedResource::new(vec![10, 3, 97, 98, 99]))),
            ("big.shop:80".into(), Arc::new(VersionedResource::new(vec![7; 300]))),
            ("empty.shop:80".into(), Arc::new(VersionedResource::new(Vec::new()))),
        ];
        let removed = vec!["gone.shop:80".to_owned(), String::new()];
        let ours = encode_response(type_url, "42", &updated, &removed);
        let theirs = DeltaDiscoveryResponse {
            type_url: type_url.into(),
            nonce: "42".into(),
            resources: updated
                .iter()
                .map(|(name, r)| Resource {
                    name: name.to_string(),
                    version: r.version.clone(),
                    resource: Some(Any { type_url: type_url.into(), value: r.body.clone() }),
                    ..Default::default()
                })
                .collect(),
            removed_resources: removed.clone(),
            ..Default::default()
        };
        let expected = theirs.encode_to_vec();
        assert_eq!(&ours.frame[5..], &expected[..]);
        assert_eq!(ours.frame[0], 0, "uncompressed");
        assert_eq!(u32::from_be_bytes(ours.frame[1..5].try_into().unwrap()) as usize, expected.len());
        assert_eq!((ours.message_len(), ours.resources), (expected.len(), 3));
        let empty = encode_response(type_url, "1", &[], &[]);
        assert_eq!(
            &empty.frame[5..],
            &DeltaDiscoveryResponse { type_url: type_url.into(), nonce: "1".into(), ..Default::default() }
                .encode_to_vec()[..]
        );
    }
}
