//! A HealthProbe as the model holds it: validated by its source into plain values,
//! and the effective probe policy of an endpoint.

use std::net::IpAddr;
use std::sync::Arc;

use globset::GlobMatcher;
use ipnet::IpNet;

use super::object::ObjectKey;

pub const DEFAULT_INTERVAL_MS: u32 = 5_000;
pub const DEFAULT_TIMEOUT_MS: u32 = 1_000;
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;

/// A HealthProbe as a source saw it: valid, or the precise reason it is not.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthProbe {
    pub key: ObjectKey,
    /// RFC 3339 as Kubernetes writes it, so string order is time order.
    pub created: Option<String>,
    pub generation: Option<i64>,
    pub valid: Result<Arc<ValidProbe>, FieldError>,
}

/// Why an object was rejected: the field path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The numbers that decide how one endpoint is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbePolicy {
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    Http { path: String, host: Option<String> },
    Tcp,
    Grpc { service_name: Option<String> },
}

/// Values for the endpoints an override matches; every matcher set must match.
#[derive(Clone, Debug)]
pub struct Override {
    pub zone: Option<String>,
    pub node_name: Option<String>,
    /// The glob as written, and compiled.
    pub pod_name: Option<(String, GlobMatcher)>,
    pub address: Option<IpNet>,
    pub policy: ProbePolicy,
}

impl PartialEq for Override {
    fn eq(&self, other: &Self) -> bool {
        let glob = |o: &Self| o.pod_name.as_ref().map(|(text, _)| text.clone());
        (&self.zone, &self.node_name, glob(self), self.address, self.policy)
            == (&other.zone, &other.node_name, glob(other), other.address, other.policy)
    }
}

/// The endpoint facts an override can match on.
#[derive(Clone, Copy, Debug)]
pub struct EndpointFacts<'a> {
    pub address: IpAddr,
    pub zone: Option<&'a str>,
    pub node_name: Option<&'a str>,
    pub pod_name: Option<&'a str>,
}

impl Override {
    fn matches(&self, endpoint: &EndpointFacts<'_>) -> bool {
        fn same(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|want| have == Some(want))
        }
        same(&self.zone, endpoint.zone)
            && same(&self.node_name, endpoint.node_name)
            && self.pod_name.as_ref().is_none_or(|(_, glob)| endpoint.pod_name.is_some_and(|pod| glob.is_match(pod)))
            && self.address.is_none_or(|net| net.contains(&endpoint.address))
    }
}

/// A probe that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidProbe {
    pub key: ObjectKey,
    pub service: String,
    pub port: Option<u16>,
    pub check: CheckKind,
    pub base: ProbePolicy,
    /// The first override that matches an endpoint wins.
    pub overrides: Vec<Override>,
}

impl ValidProbe {
    /// The base policy merged with the first override that matches the endpoint.
    pub fn policy_for(&self, endpoint: &EndpointFacts<'_>) -> ProbePolicy {
        self.overrides.iter().find(|o| o.matches(endpoint)).map_or(self.base, |o| o.policy)
    }

    pub fn covers_port(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }
}
