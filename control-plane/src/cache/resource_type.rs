//! The xDS resource types edgexds serves, and their type URLs.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Cluster,
    ClusterLoadAssignment,
    Listener,
    RouteConfiguration,
}

impl ResourceType {
    pub const COUNT: usize = 4;

    /// In the order Envoy needs them on ADS: clusters before their endpoints, and both
    /// before the listeners and routes that point at them.
    pub const ALL: [ResourceType; Self::COUNT] =
        [Self::Cluster, Self::ClusterLoadAssignment, Self::Listener, Self::RouteConfiguration];

    pub const fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::ClusterLoadAssignment => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Self::RouteConfiguration => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// State-of-the-world responses of this type carry every subscribed resource, so a
    /// name left out is gone; for the others a response carries only what it updates.
    pub const fn full_state(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }

    /// The type whose resources follow a changed resource of this one: a cluster's
    /// endpoints and a listener's routes, under the same name.
    pub const fn dependent(self) -> Option<Self> {
        match self {
            Self::Cluster => Some(Self::ClusterLoadAssignment),
            Self::Listener => Some(Self::RouteConfiguration),
            _ => None,
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
            Self::Listener => "lds",
            Self::RouteConfiguration => "rds",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}
