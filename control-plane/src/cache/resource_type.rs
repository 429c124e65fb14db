//! The xDS resource types edgexds serves, and their type URLs.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Cluster,
    ClusterLoadAssignment,
}

impl ResourceType {
    /// In the order Envoy needs them on ADS: clusters before their endpoints.
    pub const ALL: [ResourceType; 2] = [ResourceType::Cluster, ResourceType::ClusterLoadAssignment];

    pub const fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::ClusterLoadAssignment => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// The short name operators know from Envoy's stats and logs.
    pub const fn short_name(self) -> &'static str {
        match self {
            Self::Cluster => "cds",
            Self::ClusterLoadAssignment => "eds",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}
