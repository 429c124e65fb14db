//! What both flavours' response encoders share: protobuf fields written straight from the
//! snapshot's bytes into a gRPC frame.
//!
//! Building the envoy-types message first would allocate a name, a version and
//! a type URL per resource and copy every body, then copy it all again into the
//! frame. Here each field is written once, in tag order as prost writes it, so
//! the bytes are exactly what prost would produce (each flavour's test holds it to that).

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

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
pub(super) fn field_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { key_len(tag) + encoded_len_varint(len as u64) + len }
}

/// A message field is written even when empty, as prost does for a set optional message.
pub(super) fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

pub(super) fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_header(buf, tag, bytes.len());
        buf.extend_from_slice(bytes);
    }
}

pub(super) fn put_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

pub(super) fn any_len(type_url: &str, body: &[u8]) -> usize {
    field_len(ANY_TYPE_URL, type_url.len()) + field_len(ANY_VALUE, body.len())
}

/// A resource as the `Any` both flavours carry it in, after its field header.
pub(super) fn put_any(buf: &mut Vec<u8>, type_url: &str, body: &[u8]) {
    put_bytes(buf, ANY_TYPE_URL, type_url.as_bytes());
    put_bytes(buf, ANY_VALUE, body);
}
