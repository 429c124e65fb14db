//! Which gRPC method opened an xDS stream: the resource types it carries, and its flavour.

use crate::cache::ResourceType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `DeltaAggregatedResources`: every type on one stream.
    Aggregated,
    /// `DeltaClusters` or `DeltaEndpoints`: one type only.
    Single(ResourceType),
}

impl StreamKind {
    /// The short name operators see: ads, cds or eds.
    pub fn method(self) -> &'static str {
        match self {
            StreamKind::Aggregated => "ads",
            StreamKind::Single(ty) => ty.short_name(),
        }
    }
}

/// Which variant of the protocol a stream speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// Incremental xDS: `Delta*` methods, resources by name with removals.
    #[default]
    Delta,
    /// State of the world: `Stream*` methods, the whole subscribed set per response (for
    /// listeners and clusters), what proxyless gRPC clients speak.
    Sotw,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Delta => "delta",
            Flavour::Sotw => "sotw",
        }
    }
}
