//! Which gRPC method opened a delta xDS stream.

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
