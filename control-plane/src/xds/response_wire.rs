//! Encodes `DeltaDiscoveryResponse` and `DiscoveryResponse` gRPC frames straight from the snapshot's bytes.
//!
//! Building the envoy-types message first would allocate a name, a version and
//! a type URL per resource and copy every body, then copy it all again into the
//! frame. Here each field is written once, in tag order as prost writes it, so
//! the bytes are exactly what prost would produce (a test holds us to that).

use std::sync::Arc;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::grpc::frame_with_capacity;
use crate::cache::VersionedResource;

// DeltaDiscoveryResponse
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;
const REMOVED_RESOURCES: u32 = 6;
// Resource
const NAME: u32 = 3;
const VERSION: u32 = 1;
const RESOURCE: u32 = 2;
// google.protobuf.Any
const ANY_TYPE_URL: u32 = 1;
const ANY_VALUE: u32 = 2;

/// A response ready for the wire.
pub struct EncodedResponse {
    /// The gRPC frame: 5-byte prefix and the message.
    pub frame: Vec<u8>,
    pub resources: usize,
}

impl EncodedResponse {
    /// The message size, without the gRPC prefix.
    pub fn message_len(&self) -> usize {
        self.frame.len().saturating_sub(super::grpc::HEADER_BYTES)
    }
}

/// Length of a length-delimited field holding `len` bytes; proto3 omits it when empty.
fn field_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { key_len(tag) + encoded_len_varint(len as u64) + len }
}

/// A message field is written even when empty, as prost does for a set optional message.
fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_header(buf, tag, bytes.len());
        buf.extend_from_slice(bytes);
    }
}

fn put_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn any_len(type_url: &str, body: &[u8]) -> usize {
    field_len(ANY_TYPE_URL, type_url.len()) + field_len(ANY_VALUE, body.len())
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
        put_bytes(&mut buf, ANY_TYPE_URL, type_url.as_bytes());
        put_bytes(&mut buf, ANY_VALUE, &resource.body);
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
        put_bytes(&mut buf, ANY_TYPE_URL, type_url.as_bytes());
        put_bytes(&mut buf, ANY_VALUE, &resource.body);
    }
    put_bytes(&mut buf, SOTW_TYPE_URL, type_url.as_bytes());
    put_bytes(&mut buf, SOTW_NONCE, nonce.as_bytes());
    EncodedResponse { frame: buf, resources: resources.len() }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse, Resource};
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    use super::*;

    #[test]
    fn the_frame_holds_exactly_the_bytes_prost_would_write() {
        let type_url = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
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

    #[test]
    fn the_state_of_the_world_frame_holds_exactly_the_bytes_prost_would_write() {
        let type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
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
