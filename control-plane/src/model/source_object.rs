//! One object a source delivers, whichever kind it is, and how it enters a [`SourceState`].
//! Both sources (the manifests directory and the Kubernetes watches) use this one type.

use std::sync::Arc;

use super::SourceState;
use super::object::{EndpointSlice, ObjectKey, Service};
use super::place::Node;
use super::probe::HealthProbe;
use super::route::{HttpRoute, RouteKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Service,
    EndpointSlice,
    HealthProbe,
    Node,
    HttpRoute,
    GrpcRoute,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Service,
        ObjectKind::EndpointSlice,
        ObjectKind::HealthProbe,
        ObjectKind::Node,
        ObjectKind::HttpRoute,
        ObjectKind::GrpcRoute,
    ];

    /// The Kubernetes kind, as manifests and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::HealthProbe => "HealthProbe",
            ObjectKind::Node => "Node",
            ObjectKind::HttpRoute => "HTTPRoute",
            ObjectKind::GrpcRoute => "GRPCRoute",
        }
    }

    /// The kind as a metric label: lower case, as Kubernetes' resource names are.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Service => "service",
            ObjectKind::EndpointSlice => "endpointslice",
            ObjectKind::HealthProbe => "healthprobe",
            ObjectKind::Node => "node",
            ObjectKind::HttpRoute => "httproute",
            ObjectKind::GrpcRoute => "grpcroute",
        }
    }

    /// The route kind this object kind is, if it is one.
    pub fn route(self) -> Option<RouteKind> {
        match self {
            ObjectKind::HttpRoute => Some(RouteKind::Http),
            ObjectKind::GrpcRoute => Some(RouteKind::Grpc),
            _ => None,
        }
    }
}

impl From<RouteKind> for ObjectKind {
    fn from(kind: RouteKind) -> Self {
        match kind {
            RouteKind::Http => ObjectKind::HttpRoute,
            RouteKind::Grpc => ObjectKind::GrpcRoute,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum SourceObject {
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    HealthProbe(Arc<HealthProbe>),
    Node(Arc<Node>),
    /// An HTTPRoute or a GRPCRoute, as its `kind` says.
    Route(Arc<HttpRoute>),
}

impl SourceObject {
    pub fn key(&self) -> &ObjectKey {
        match self {
            SourceObject::Service(s) => &s.key,
            SourceObject::EndpointSlice(s) => &s.key,
            SourceObject::HealthProbe(p) => &p.key,
            SourceObject::Node(n) => &n.key,
            SourceObject::Route(r) => &r.key,
        }
    }

    pub fn kind(&self) -> ObjectKind {
        match self {
            SourceObject::Service(_) => ObjectKind::Service,
            SourceObject::EndpointSlice(_) => ObjectKind::EndpointSlice,
            SourceObject::HealthProbe(_) => ObjectKind::HealthProbe,
            SourceObject::Node(..) => ObjectKind::Node,
            SourceObject::Route(r) => ObjectKind::from(r.kind),
        }
    }

    /// Whether `state` holds exactly this object.
    pub fn is_in(&self, state: &SourceState) -> bool {
        match self {
            SourceObject::Service(s) => state.services.get(&s.key) == Some(s),
            SourceObject::EndpointSlice(s) => state.slices.get(&s.key) == Some(s),
            SourceObject::HealthProbe(p) => state.probes.get(&p.key) == Some(p),
            SourceObject::Node(n) => state.nodes.get(&n.key) == Some(n),
            SourceObject::Route(r) => state.routes.get(&r.id()) == Some(r),
        }
    }

    /// Puts the object into `state`; says whether it replaced one with the same key.
    pub fn insert_into(self, state: &mut SourceState) -> bool {
        match self {
            SourceObject::Service(s) => state.services.insert(s.key.clone(), s).is_some(),
            SourceObject::EndpointSlice(s) => state.slices.insert(s.key.clone(), s).is_some(),
            SourceObject::HealthProbe(p) => state.probes.insert(p.key.clone(), p).is_some(),
            SourceObject::Node(n) => state.nodes.insert(n.key.clone(), n).is_some(),
            SourceObject::Route(r) => state.routes.insert(r.id(), r).is_some(),
        }
    }
}

impl SourceState {
    /// Removes the object of `kind` named `key`; says whether there was one.
    pub fn remove(&mut self, kind: ObjectKind, key: &ObjectKey) -> bool {
        match kind {
            ObjectKind::Service => self.services.remove(key).is_some(),
            ObjectKind::EndpointSlice => self.slices.remove(key).is_some(),
            ObjectKind::HealthProbe => self.probes.remove(key).is_some(),
            ObjectKind::Node => self.nodes.remove(key).is_some(),
            ObjectKind::HttpRoute | ObjectKind::GrpcRoute => {
                kind.route().is_some_and(|route| self.routes.remove(&(route, key.clone())).is_some())
            }
        }
    }

    pub fn contains(&self, kind: ObjectKind, key: &ObjectKey) -> bool {
        match kind {
            ObjectKind::Service => self.services.contains_key(key),
            ObjectKind::EndpointSlice => self.slices.contains_key(key),
            ObjectKind::HealthProbe => self.probes.contains_key(key),
            ObjectKind::Node => self.nodes.contains_key(key),
            ObjectKind::HttpRoute | ObjectKind::GrpcRoute => {
                kind.route().is_some_and(|route| self.routes.contains_key(&(route, key.clone())))
            }
        }
    }
}
