//! The xDS resource types edgexds serves: one row each, with everything that names the type
//! on the wire, so adding a type is adding a row (and what translates into it).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Cluster,
    ClusterLoadAssignment,
    Listener,
    RouteConfiguration,
}

/// How one type is named: its type URL, the gRPC service that serves it alone, the word its
/// methods end in (`Delta<word>`, `Stream<word>`, `Fetch<word>`), and the short name
/// operators know from Envoy's stats and logs.
pub struct TypeRow {
    pub ty: ResourceType,
    pub type_url: &'static str,
    pub service: &'static str,
    pub methods: &'static str,
    pub short_name: &'static str,
}

/// In the order Envoy needs them on ADS: clusters before their endpoints, and both before
/// the listeners and routes that point at them.
const TABLE: [TypeRow; ResourceType::COUNT] = [
    TypeRow {
        ty: ResourceType::Cluster,
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        service: "envoy.service.cluster.v3.ClusterDiscoveryService",
        methods: "Clusters",
        short_name: "cds",
    },
    TypeRow {
        ty: ResourceType::ClusterLoadAssignment,
        type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        service: "envoy.service.endpoint.v3.EndpointDiscoveryService",
        methods: "Endpoints",
        short_name: "eds",
    },
    TypeRow {
        ty: ResourceType::Listener,
        type_url: "type.googleapis.com/envoy.config.listener.v3.Listener",
        service: "envoy.service.listener.v3.ListenerDiscoveryService",
        methods: "Listeners",
        short_name: "lds",
    },
    TypeRow {
        ty: ResourceType::RouteConfiguration,
        type_url: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        service: "envoy.service.route.v3.RouteDiscoveryService",
        methods: "Routes",
        short_name: "rds",
    },
];

impl ResourceType {
    pub const COUNT: usize = 4;

    /// In ADS order (see [`TABLE`]).
    pub const ALL: [ResourceType; Self::COUNT] = {
        let mut all = [ResourceType::Cluster; Self::COUNT];
        let mut i = 0;
        while i < Self::COUNT {
            all[i] = TABLE[i].ty;
            i += 1;
        }
        all
    };

    /// This type's row of the table.
    pub const fn row(self) -> &'static TypeRow {
        let mut i = 0;
        while i < Self::COUNT {
            if TABLE[i].ty as usize == self as usize {
                return &TABLE[i];
            }
            i += 1;
        }
        panic!("every type has a row")
    }

    pub const fn type_url(self) -> &'static str {
        self.row().type_url
    }

    /// The short name operators know from Envoy's stats and logs.
    pub const fn short_name(self) -> &'static str {
        self.row().short_name
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

    /// A slot of its own in per-type arrays; not the ADS order.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_one_row_and_each_name_is_its_own() {
        let mut seen = std::collections::BTreeSet::new();
        for ty in ResourceType::ALL {
            let row = ty.row();
            assert_eq!(row.ty, ty);
            for name in [row.type_url, row.service, row.methods, row.short_name] {
                assert!(seen.insert(name), "{name} twice");
            }
        }
        let slots: std::collections::BTreeSet<usize> = ResourceType::ALL.iter().map(|t| t.index()).collect();
        assert_eq!(slots.len(), ResourceType::COUNT);
    }

    #[test]
    fn ads_order_puts_clusters_before_their_endpoints_and_listeners_before_their_routes() {
        let position = |ty| ResourceType::ALL.iter().position(|t| *t == ty).unwrap();
        for ty in ResourceType::ALL {
            if let Some(dependent) = ty.dependent() {
                assert!(position(ty) < position(dependent), "{ty} before {dependent}");
            }
        }
        assert!(position(ResourceType::ClusterLoadAssignment) < position(ResourceType::Listener));
    }
}
