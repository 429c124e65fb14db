//! Where a client is, and where a Service asks its traffic to stay: the zone and node of a
//! client, the Nodes that say which zone a node is in, and `trafficDistribution`.

use std::fmt;
use std::sync::Arc;

use super::{ObjectKey, ObjectMap};

/// What a Service's `spec.trafficDistribution` (or the topology-aware-routing annotation)
/// asks for. `PreferClose` is Kubernetes' older name for `PreferSameZone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficDistribution {
    PreferSameZone,
    PreferSameNode,
}

impl TrafficDistribution {
    /// Kubernetes' spelling; values this version does not know mean no preference, as
    /// kube-proxy reads them.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "PreferClose" | "PreferSameZone" => Some(Self::PreferSameZone),
            "PreferSameNode" => Some(Self::PreferSameNode),
            _ => None,
        }
    }
}

/// A Kubernetes Node, as far as places go: the zone its `topology.kubernetes.io/zone` label names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its name; Nodes have no namespace, so the key's is empty.
    pub key: ObjectKey,
    pub zone: Option<Arc<str>>,
}

/// The zone of each Node, by Node name (Nodes have no namespace: theirs is empty).
pub type Nodes = ObjectMap<Node>;

/// Where a client is: its zone and its node, each when known. Values come from Nodes and
/// clients, so a place is only ever compared, never trusted to be one of ours.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub zone: Option<Arc<str>>,
    pub node: Option<Arc<str>>,
}

impl Place {
    pub fn is_nowhere(&self) -> bool {
        self.zone.is_none() && self.node.is_none()
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zone {} node {}", self.zone.as_deref().unwrap_or("-"), self.node.as_deref().unwrap_or("-"))
    }
}

/// Who said where a client is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PlaceSource {
    /// Nobody: the client is treated as if no Service had a preference.
    #[default]
    Unknown,
    /// The client's own node description (bootstrap `node.locality.zone`, node metadata
    /// `node_name`): believed only where its identity does not say otherwise.
    Client,
    /// The node the API server bound the client's token to.
    Token,
    /// The `topology.kubernetes.io/zone` label of the client's token-bound Node.
    NodeLabel,
}

impl PlaceSource {
    pub fn name(self) -> &'static str {
        match self {
            PlaceSource::Unknown => "unknown",
            PlaceSource::Client => "client",
            PlaceSource::Token => "token",
            PlaceSource::NodeLabel => "node-label",
        }
    }
}

/// What a client and its identity say about its place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlaceClaim {
    /// The node its verified token is bound to.
    pub bound_node: Option<String>,
    /// What the client itself says.
    pub zone: Option<String>,
    pub node: Option<String>,
}

/// A client's place, with who said each part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedPlace {
    pub place: Place,
    pub zone_source: PlaceSource,
    pub node_source: PlaceSource,
}

impl PlaceClaim {
    /// The place this claim comes to, given the Nodes the source knows. A token bound to a
    /// node outranks whatever the client says: its node is that node, and its zone that
    /// Node's label (none while the Node is unknown or unlabelled, rather than the client's word).
    pub fn resolve(&self, nodes: &Nodes) -> ResolvedPlace {
        let text = |value: &Option<String>| value.as_deref().filter(|v| !v.is_empty()).map(Arc::<str>::from);
        match text(&self.bound_node) {
            Some(node) => {
                let zone = nodes.get(&ObjectKey::new("", &node)).and_then(|n| n.zone.clone());
                ResolvedPlace {
                    zone_source: if zone.is_some() { PlaceSource::NodeLabel } else { PlaceSource::Unknown },
                    place: Place { zone, node: Some(node) },
                    node_source: PlaceSource::Token,
                }
            }
            None => {
                let (zone, node) = (text(&self.zone), text(&self.node));
                let source = |known: bool| if known { PlaceSource::Client } else { PlaceSource::Unknown };
                ResolvedPlace {
                    zone_source: source(zone.is_some()),
                    node_source: source(node.is_some()),
                    place: Place { zone, node },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &[(&str, Option<&str>)]) -> Nodes {
        list.iter()
            .map(|(name, zone)| {
                let key = ObjectKey::new("", name);
                (key.clone(), Arc::new(Node { key, zone: zone.map(Arc::from) }))
            })
            .collect()
    }

    #[test]
    fn a_token_bound_node_outranks_what_the_client_says_and_its_zone_comes_from_the_node_label() {
        let claim = PlaceClaim { bound_node: Some("n1".into()), zone: Some("zone-b".into()), node: Some("n9".into()) };
        let resolved = claim.resolve(&nodes(&[("n1", Some("zone-a"))]));
        assert_eq!(resolved.place, Place { zone: Some("zone-a".into()), node: Some("n1".into()) });
        assert_eq!((resolved.zone_source, resolved.node_source), (PlaceSource::NodeLabel, PlaceSource::Token));
        let unknown = claim.resolve(&nodes(&[]));
        assert_eq!(unknown.place.zone, None, "never the client's word while the Node is unknown");
    }

    #[test]
    fn without_a_bound_node_the_client_is_believed() {
        let claim = PlaceClaim { bound_node: None, zone: Some("zone-b".into()), node: None };
        let resolved = claim.resolve(&nodes(&[]));
        assert_eq!(resolved.place, Place { zone: Some("zone-b".into()), node: None });
        assert_eq!((resolved.zone_source, resolved.node_source), (PlaceSource::Client, PlaceSource::Unknown));
    }

    #[test]
    fn prefer_close_is_prefer_same_zone_and_unknown_values_mean_no_preference() {
        assert_eq!(TrafficDistribution::parse("PreferClose"), Some(TrafficDistribution::PreferSameZone));
        assert_eq!(TrafficDistribution::parse("PreferSameNode"), Some(TrafficDistribution::PreferSameNode));
        assert_eq!(TrafficDistribution::parse("Elsewhere"), None);
    }
}
