//! Services and EndpointSlices as plain data.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// namespace/name of an object. Shared strings: persistent maps copy keys on every edit of
/// a node, so a key must cost no allocation to copy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectKey {
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        Self { namespace: Arc::from(namespace.as_ref()), name: Arc::from(name.as_ref()) }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl PortProtocol {
    /// Kubernetes spelling; unknown protocols are kept apart from TCP so they never match it.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty for the single unnamed port Kubernetes allows.
    pub name: String,
    pub port: u16,
    pub protocol: PortProtocol,
    pub target_port: TargetPort,
    pub app_protocol: AppProtocol,
}

/// What a port's `appProtocol` says about the upstream, as far as routing cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// Unset or anything else: HTTP/1.1 upstream.
    #[default]
    Other,
    /// `grpc`: HTTP/2.
    Grpc,
    /// `h2c` or `kubernetes.io/h2c`: HTTP/2 without TLS.
    H2c,
}

impl AppProtocol {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("grpc") => Self::Grpc,
            Some("h2c" | "kubernetes.io/h2c") => Self::H2c,
            _ => Self::Other,
        }
    }

    /// The upstream speaks HTTP/2, so its cluster must too.
    pub fn is_http2(self) -> bool {
        self != Self::Other
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ObjectKey,
    pub ports: Vec<ServicePort>,
    /// ExternalName Services have no endpoints and produce nothing.
    pub external_name: bool,
    /// Where its traffic should stay, if anywhere.
    pub traffic_distribution: Option<super::TrafficDistribution>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressType {
    Ipv4,
    Ipv6,
    /// FQDN slices are deprecated in Kubernetes and produce nothing.
    Fqdn,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub port: u16,
    pub protocol: PortProtocol,
}

/// Kubernetes endpoint conditions; `None` means unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

impl EndpointConditions {
    /// Kubernetes asks consumers to read an unknown `ready` as ready.
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }

    /// `serving` defaults to `ready` when the cluster does not report it.
    pub fn is_serving(&self) -> bool {
        self.serving.unwrap_or_else(|| self.is_ready())
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// Kubernetes: addresses are fungible and consumers may use the first; we do.
    pub address: IpAddr,
    pub conditions: EndpointConditions,
    pub zone: Option<String>,
    pub node_name: Option<String>,
    pub pod_name: Option<String>,
    pub hostname: Option<String>,
    pub hints: EndpointHints,
}

/// Where the EndpointSlice controller says an endpoint should be used from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointHints {
    pub for_zones: Vec<String>,
    pub for_nodes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    pub key: ObjectKey,
    /// From the `kubernetes.io/service-name` label; slices without it belong to no Service.
    pub service_name: Option<String>,
    pub address_type: AddressType,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}
