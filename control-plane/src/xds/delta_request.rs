//! A delta xDS request as the server decodes it: `DeltaDiscoveryRequest`'s wire format, with
//! the versions a reconnecting client lists kept as slices of the received frame.
//!
//! Envoy's generated type decodes `initial_resource_versions` into a `HashMap<String,
//! String>`: two allocations and a SipHash insert per entry, growing the table as it goes.
//! A reconnect storm of 1,000 clients each listing 2,000 resources spent a third of the
//! server's CPU there. A protobuf map is a repeated message of key and value on the wire,
//! so the same bytes decode here into a list of slices, and the one index a subscription
//! needs is built from it, sized once and keyed like the other name tables.

use std::collections::HashMap;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::rpc::Status as RpcStatus;

use crate::cache::{NameHasher, parse_version};

/// One `initial_resource_versions` entry, undecoded: the map entry's wire format.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionEntry {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub version: Bytes,
}

/// `DeltaDiscoveryRequest`, field for field, as far as the server reads it (the resource
/// locators, which it does not serve, are skipped as unknown fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaRequest {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(string, tag = "2")]
    pub type_url: String,
    #[prost(string, repeated, tag = "3")]
    pub resource_names_subscribe: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub resource_names_unsubscribe: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub initial_resource_versions: Vec<VersionEntry>,
    #[prost(string, tag = "6")]
    pub response_nonce: String,
    #[prost(message, optional, tag = "7")]
    pub error_detail: Option<RpcStatus>,
}

/// The versions a reconnecting client lists, by name: what [`Subscription`] checks against
/// what is served. A version that is not one of ours parses to one that never matches.
///
/// [`Subscription`]: super::subscription::Subscription
pub type InitialVersions<'a> = HashMap<&'a str, u64, NameHasher>;

/// A name that is not UTF-8: the request is refused, as a string field's would be.
#[derive(Debug, PartialEq, Eq)]
pub struct NotUtf8;

impl DeltaRequest {
    /// The listed versions by name; a name listed twice keeps its last version, as a
    /// decoded protobuf map does.
    pub fn initial_versions(&self) -> Result<InitialVersions<'_>, NotUtf8> {
        let mut versions =
            InitialVersions::with_capacity_and_hasher(self.initial_resource_versions.len(), NameHasher::default());
        for entry in &self.initial_resource_versions {
            let name = std::str::from_utf8(&entry.name).map_err(|_| NotUtf8)?;
            let version = std::str::from_utf8(&entry.version).map_or(u64::MAX, parse_version);
            versions.insert(name, version);
        }
        Ok(versions)
    }
}

/// Envoy's type, re-encoded: what tests, benchmarks and fuzz targets build requests with.
impl From<DeltaDiscoveryRequest> for DeltaRequest {
    fn from(request: DeltaDiscoveryRequest) -> Self {
        let mut versions: Vec<VersionEntry> = request
            .initial_resource_versions
            .into_iter()
            .map(|(name, version)| VersionEntry { name: name.into(), version: version.into() })
            .collect();
        versions.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Self {
            node: request.node,
            type_url: request.type_url,
            resource_names_subscribe: request.resource_names_subscribe,
            resource_names_unsubscribe: request.resource_names_unsubscribe,
            initial_resource_versions: versions,
            response_nonce: request.response_nonce,
            error_detail: request.error_detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_delta_request_decodes_the_same_fields_as_envoys_type() {
        let request = DeltaDiscoveryRequest {
            node: Some(Node { id: "sidecar-1".into(), ..Default::default() }),
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            resource_names_subscribe: vec!["web.shop:80".into()],
            resource_names_unsubscribe: vec!["db.shop:5432".into()],
            initial_resource_versions: [("web.shop:80".to_owned(), "00000000000000ff".to_owned())].into(),
            response_nonce: "7".into(),
            error_detail: Some(RpcStatus { code: 3, message: "bad".into(), details: vec![] }),
            ..Default::default()
        };
        let decoded = DeltaRequest::decode(Bytes::from(request.encode_to_vec())).expect("decodes");
        assert_eq!(decoded, DeltaRequest::from(request));
        let versions = decoded.initial_versions().expect("UTF-8");
        assert_eq!(versions.get("web.shop:80"), Some(&0xff));
    }

    #[test]
    fn a_listed_name_that_is_not_utf8_is_refused_and_a_foreign_version_never_matches() {
        let entry = |name: &[u8], version: &[u8]| VersionEntry {
            name: Bytes::copy_from_slice(name),
            version: Bytes::copy_from_slice(version),
        };
        let mut request = DeltaRequest { initial_resource_versions: vec![entry(b"a", b"\xff")], ..Default::default() };
        assert_eq!(request.initial_versions().expect("UTF-8").get("a"), Some(&u64::MAX));
        request.initial_resource_versions.push(entry(b"\xc3\x28", b"1"));
        assert_eq!(request.initial_versions(), Err(NotUtf8));
    }
}
