//! The core model: what the sources saw, and what it resolves to.
//!
//! Nothing here knows about Kubernetes clients or protobuf: sources convert
//! their objects into [`SourceState`], [`resolve`] turns it into a [`Model`],
//! and `translate` turns that into Envoy resources.

mod incremental;
pub mod limits;
mod object;
mod place;
mod probe;
pub mod re2;
mod resolve;
mod route;
mod route_status;
mod source_object;
mod verdicts;

#[cfg(test)]
pub(crate) mod fixtures;

pub use incremental::ModelIndex;
pub use object::{
    AddressType, AppProtocol, EndpointConditions, EndpointHints, EndpointSlice, ObjectKey, PortProtocol, Service,
    ServicePort, SliceEndpoint, SlicePort, TargetPort,
};
pub use place::{Node, Nodes, Place, PlaceClaim, PlaceSource, ResolvedPlace, TrafficDistribution};
pub use probe::{
    CheckKind, DEFAULT_FAILURE_THRESHOLD, DEFAULT_INTERVAL_MS, DEFAULT_SUCCESS_THRESHOLD, DEFAULT_TIMEOUT_MS,
    EndpointFacts, FieldError, HealthProbe, Override, ProbePolicy, ValidProbe,
};
pub use resolve::{
    Diagnostic, EndpointHealth, Model, ProbeCoverage, ProbeStatus, RefProblem, ResolvedEndpoint, ResolvedPort,
    ResolvedService, resolve,
};
pub use route::{
    AttachedRoute, BackendRef, HeaderEdits, HttpRoute, ParentRef, PathMatch, PathRewrite, RequestMatch, RouteFilter,
    RouteId, RouteKind, RouteRetry, RouteRule, RouteTimeouts, ValueMatch,
};
pub use route_status::{ParentStatus, RouteCondition, route_status};
pub use source_object::{ObjectKind, SourceObject};
pub use verdicts::CheckVerdicts;

use std::sync::Arc;

/// Objects of one kind by namespace/name. A persistent map: a copy costs nothing and
/// shares every node an edit did not touch, so a source publishes its state per change in
/// O(log n), and the pipeline finds what changed by skipping what is shared.
pub type ObjectMap<T> = imbl::OrdMap<ObjectKey, Arc<T>>;

/// Everything a source currently knows, keyed by namespace/name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceState {
    pub services: ObjectMap<Service>,
    pub slices: ObjectMap<EndpointSlice>,
    pub probes: ObjectMap<HealthProbe>,
    /// Nodes, for the zone of a client whose token is bound to one (namespace empty).
    pub nodes: Nodes,
    /// Gateway API HTTPRoutes and GRPCRoutes, by kind and namespace/name.
    pub routes: imbl::OrdMap<RouteId, Arc<HttpRoute>>,
    /// Objects the source refused, and why (with the file and line, for manifests); an
    /// object refused after it was accepted stays in the maps above in its last accepted version.
    pub refused: imbl::OrdSet<Diagnostic>,
}
