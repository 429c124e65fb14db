//! A wire-compatible subset of `envoy.config.endpoint.v3.ClusterLoadAssignment`.
//!
//! envoy-types generates `google.protobuf.Struct` with a `HashMap`, whose
//! iteration order differs between processes, so its encoding (and any
//! version hashed from it) would too. These messages keep the exact field
//! numbers of the Envoy protos but use ordered maps, so the same input always
//! encodes to the same bytes. Tests decode the bytes with envoy-types to prove
//! the two agree.

use std::collections::BTreeMap;

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct ClusterLoadAssignment {
    #[prost(string, tag = "1")]
    pub cluster_name: String,
    #[prost(message, repeated, tag = "2")]
    pub endpoints: Vec<LocalityLbEndpoints>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct LocalityLbEndpoints {
    #[prost(message, optional, tag = "1")]
    pub locality: Option<Locality>,
    #[prost(message, repeated, tag = "2")]
    pub lb_endpoints: Vec<LbEndpoint>,
    /// gRPC clients skip a locality without a weight; Envoy reads it only with locality-weighted LB.
    #[prost(message, optional, tag = "3")]
    pub load_balancing_weight: Option<UInt32Value>,
    /// 0, the default, is not on the wire: assignments without priorities keep their bytes.
    #[prost(uint32, tag = "5")]
    pub priority: u32,
}

#[derive(Clone, Copy, PartialEq, prost::Message, serde::Serialize)]
pub struct UInt32Value {
    #[prost(uint32, tag = "1")]
    pub value: u32,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Locality {
    #[prost(string, tag = "1")]
    pub region: String,
    #[prost(string, tag = "2")]
    pub zone: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct LbEndpoint {
    #[prost(message, optional, tag = "1")]
    pub endpoint: Option<Endpoint>,
    /// `envoy.config.core.v3.HealthStatus`.
    #[prost(int32, tag = "2")]
    #[serde(serialize_with = "health_status_name")]
    pub health_status: i32,
    /// An encoded `Metadata` message. On the wire an embedded message and a bytes field
    /// are the same, so endpoints sharing a probe policy share one encoding.
    #[prost(bytes = "bytes", tag = "3")]
    #[serde(serialize_with = "decoded_metadata")]
    pub metadata: prost::bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Endpoint {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
    #[prost(string, tag = "3")]
    pub hostname: String,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct SocketAddress {
    #[prost(string, tag = "2")]
    pub address: String,
    #[prost(uint32, tag = "3")]
    pub port_value: u32,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Metadata {
    #[prost(btree_map = "string, message", tag = "1")]
    pub filter_metadata: BTreeMap<String, Struct>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub typed_filter_metadata: BTreeMap<String, Any>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Struct {
    #[prost(btree_map = "string, message", tag = "1")]
    pub fields: BTreeMap<String, Value>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Value {
    #[prost(oneof = "Kind", tags = "2, 3")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof, serde::Serialize)]
#[serde(untagged)]
pub enum Kind {
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    String(String),
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    #[serde(skip)]
    pub value: Vec<u8>,
}

fn health_status_name<S: serde::Serializer>(value: &i32, serializer: S) -> Result<S::Ok, S::Error> {
    use envoy_types::pb::envoy::config::core::v3::HealthStatus;
    let name = HealthStatus::try_from(*value).map_or("UNKNOWN", |h| h.as_str_name());
    serializer.serialize_str(name)
}

fn decoded_metadata<S: serde::Serializer>(bytes: &prost::bytes::Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    if bytes.is_empty() {
        return serializer.serialize_none();
    }
    <Metadata as prost::Message>::decode(bytes.as_ref()).map_err(serde::ser::Error::custom)?.serialize(serializer)
}
