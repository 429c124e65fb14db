//! The core model: what the sources saw, and what it resolves to.
//!
//! Nothing here knows about Kubernetes clients or protobuf: sources convert
//! their objects into [`SourceState`], [`resolve`] turns it into a [`Model`],
//! and `translate` turns that into Envoy resources.

pub mod limits;
mod object;
mod probe;
mod resolve;
mod source_object;
mod verdicts;

#[cfg(test)]
pub(crate) mod fixtures;

pub use object::{
    AddressType, AppProtocol, EndpointConditions, ObjectKey, PortProtocol, Service, ServicePort, Slice, SliceEndpoint,
    SlicePort, TargetPort,
};
pub use probe::{
    CheckKind, DEFAULT_FAILURE_THRESHOLD, DEFAULT_INTERVAL_MS, DEFAULT_SUCCESS_THRESHOLD, DEFAULT_TIMEOUT_MS,
    EndpointFacts, FieldError, Override, Probe, ProbePolicy, ValidProbe,
};
pub use resolve::{
    Diagnostic, EndpointHealth, Model, ProbeCoverage, ProbeStatus, RefProblem, ResolvedEndpoint, ResolvedPort,
    ResolvedService, resolve,
};
pub use source_object::{ObjectKind, SourceObject};
pub use verdicts::CheckVerdicts;

use std::collections::BTreeMap;
use std::sync::Arc;

/// Everything a source currently knows, keyed by namespace/name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceState {
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    pub slices: BTreeMap<ObjectKey, Arc<Slice>>,
    pub probes: BTreeMap<ObjectKey, Arc<Probe>>,
}
