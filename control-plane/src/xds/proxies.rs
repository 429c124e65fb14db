//! Which proxies are connected and whether they are in sync, for `/debug/proxies`,
//! `edgexds proxy-status` and CSDS: each stream registers its [`StreamHandle`], and
//! reports are built from what streams publish and answer, never from their live state.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use envoy_types::pb::envoy::config::core::v3::Node;

use super::view::{StreamHandle, StreamView, TypeView};
use crate::cache::ResourceType;

/// A response not ACKed for this long makes its proxy STALE.
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// Bound on remembered (node, type, version) NACKs, so logging once per version stays bounded.
const NACK_MEMORY: usize = 4096;

use crate::lock::lock;

#[derive(Default)]
pub struct ProxyRegistry {
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, StreamHandle>>,
    nacks_seen: Mutex<HashSet<(String, ResourceType, String)>>,
    /// The hash of the sidecar template this process injects, when it injects: a sidecar
    /// reporting another one was injected from an older template or version.
    current_template: Option<String>,
}

/// The node metadata key an injected sidecar reports its template hash in.
pub const TEMPLATE_METADATA: &str = "edgexds.io/template";

/// Removes its stream from the registry when dropped.
pub struct Registration {
    registry: Arc<ProxyRegistry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.streams).remove(&self.id);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SyncState {
    Synced,
    Stale,
    Nacked,
}

impl SyncState {
    pub const ALL: [SyncState; 3] = [SyncState::Synced, SyncState::Stale, SyncState::Nacked];

    /// As `proxy-status` and the `state` metric label name it (and its JSON form).
    pub fn name(self) -> &'static str {
        match self {
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
            SyncState::Nacked => "NACKED",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeReport {
    pub subscribed: String,
    pub resources: usize,
    pub version_sent: Option<String>,
    pub version_acked: Option<String>,
    pub pending_nonce: Option<String>,
    pub last_nack: Option<NackReport>,
}

/// A client's zone and node, each with who said it: `token` (the node its token is bound
/// to), `node-label` (that Node's zone label), `client` (its own bootstrap), or `unknown`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceReport {
    pub zone: Option<String>,
    pub zone_from: String,
    pub node: Option<String>,
    pub node_from: String,
}

impl PlaceReport {
    fn of(place: &crate::model::ResolvedPlace) -> Self {
        Self {
            zone: place.place.zone.as_deref().map(str::to_owned),
            zone_from: place.zone_source.name().to_owned(),
            node: place.place.node.as_deref().map(str::to_owned),
            node_from: place.node_source.name().to_owned(),
        }
    }

    /// `zone-a (node-label), node-1 (token)`, as `proxy-status` shows it.
    pub fn render(&self) -> String {
        let part = |value: &Option<String>, from: &str| match value {
            Some(value) => format!("{value} ({from})"),
            None => "-".to_owned(),
        };
        format!("{}, {}", part(&self.zone, &self.zone_from), part(&self.node, &self.node_from))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackReport {
    pub version: String,
    pub message: String,
    pub at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyReport {
    pub node_id: String,
    pub cluster: String,
    pub locality: String,
    pub user_agent: String,
    /// What kind of client: `envoy 1.40.0`, or gRPC with its language and version, e.g.
    /// `gRPC Python 1.85.3` (proxyless).
    #[serde(default)]
    pub client: String,
    pub method: String,
    /// delta or sotw.
    #[serde(default)]
    pub flavour: String,
    /// Who the client authenticated as, when the xDS port asks (`--xds-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub connected_since: String,
    pub state: SyncState,
    pub types: BTreeMap<String, TypeReport>,
    /// Where the client is as its Services' traffic preferences see it, and who said so.
    #[serde(default)]
    pub place: PlaceReport,
    /// The template hash an injected sidecar reports (node metadata `edgexds.io/template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_template: Option<String>,
    /// Injected from another template or edgexds version than this one injects now: its
    /// workload needs a restart to get the current sidecar.
    #[serde(default)]
    pub outdated: bool,
}

/// The template hash a stream's node reports, if it is an injected sidecar.
fn template_of(stream: &StreamView) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let field = stream.node.as_ref()?.metadata.as_ref()?.fields.get(TEMPLATE_METADATA)?;
    match field.kind.as_ref()? {
        Kind::StringValue(hash) => Some(hash.chars().take(64).collect()),
        _ => None,
    }
}

impl ProxyRegistry {
    /// A registry that judges injected sidecars against `current_template`.
    pub fn with_template(current_template: Option<String>) -> Self {
        Self { current_template, ..Self::default() }
    }

    /// Whether a sidecar reporting `injected` came from another template than the one this
    /// process injects now (never, when it injects nothing).
    fn outdated(&self, injected: Option<&str>) -> bool {
        matches!((injected, &self.current_template), (Some(injected), Some(current)) if injected != current)
    }

    /// Connected streams whose sidecar was injected from another template than the current.
    pub fn outdated_sidecars(&self) -> usize {
        self.streams().iter().filter(|s| self.outdated(template_of(&s.view()).as_deref())).count()
    }

    pub fn register(self: &Arc<Self>, stream: StreamHandle) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.streams).insert(id, stream);
        Registration { registry: self.clone(), id }
    }

    /// Every connected stream, in connection order.
    pub fn streams(&self) -> Vec<StreamHandle> {
        lock(&self.streams).values().cloned().collect()
    }

    /// True the first time this node rejects this version of this type.
    pub fn first_nack(&self, node: &str, ty: ResourceType, version: &str) -> bool {
        let mut seen = lock(&self.nacks_seen);
        if seen.len() >= NACK_MEMORY {
            seen.clear();
        }
        seen.insert((node.to_owned(), ty, version.to_owned()))
    }

    /// Every connected proxy, as its stream shows it; what each holds is asked of all at once.
    pub async fn report(&self) -> Vec<ProxyReport> {
        let streams = self.streams();
        let holdings = futures::future::join_all(streams.iter().map(StreamHandle::holdings)).await;
        streams
            .iter()
            .zip(holdings)
            .map(|(stream, held)| {
                let counts = held.map(|held| held.map(|t| t.map(|names| names.len())));
                let mut report = report(&stream.view(), counts.unwrap_or_default());
                report.outdated = self.outdated(report.sidecar_template.as_deref());
                report
            })
            .collect()
    }
}

pub fn sync_state(stream: &StreamView) -> SyncState {
    let types = || ResourceType::ALL.into_iter().filter_map(|ty| stream.type_view(ty));
    if types().any(TypeView::nacked) {
        SyncState::Nacked
    } else if types().any(|t| t.pending().is_some_and(|p| p.at.elapsed() > STALE_AFTER)) {
        SyncState::Stale
    } else {
        SyncState::Synced
    }
}

/// `held`: how many resources the client holds of each type, if its stream answered.
fn report(stream: &StreamView, held: [Option<usize>; ResourceType::COUNT]) -> ProxyReport {
    let none = Node::default();
    let node = stream.node.as_deref().unwrap_or(&none);
    let locality = node.locality.as_ref().map_or_else(String::new, |l| {
        [l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    });
    let build = match &node.user_agent_version_type {
        Some(envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        Some(envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .map_or_else(String::new, |v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch)),
        None => String::new(),
    };
    let types = ResourceType::ALL
        .iter()
        .filter_map(|ty| stream.type_view(*ty).map(|t| (*ty, t)))
        .map(|(ty, t)| {
            let subscribed = if t.wildcard { "*".to_owned() } else { t.names.to_string() };
            let report = TypeReport {
                subscribed,
                resources: held[ty.index()].unwrap_or_default(),
                version_sent: t.sent.as_ref().map(|s| s.version.clone()),
                version_acked: t.acked.as_ref().map(|s| s.version.clone()),
                pending_nonce: t.pending().map(|p| p.nonce.clone()),
                last_nack: t.last_nack.as_ref().map(|n| NackReport {
                    version: n.version.clone(),
                    message: n.message.clone(),
                    at: crate::timestamp::rfc3339(n.wall),
                }),
            };
            (ty.short_name().to_owned(), report)
        })
        .collect();
    ProxyReport {
        node_id: node.id.clone(),
        cluster: node.cluster.clone(),
        locality,
        user_agent: format!("{} {}", node.user_agent_name, build).trim().to_owned(),
        client: client_kind(&node.user_agent_name, &build),
        method: stream.kind.method().to_owned(),
        flavour: stream.flavour.name().to_owned(),
        identity: stream.identity.as_ref().map(ToString::to_string),
        connected_since: crate::timestamp::rfc3339(stream.connected_at),
        state: sync_state(stream),
        types,
        place: PlaceReport::of(&stream.place),
        sidecar_template: template_of(stream),
        outdated: false,
    }
}
/// The client as an operator names it. gRPC's C-core wrappers announce themselves as
/// `gRPC C-core <platform> <language>` with version `C-core <n> <language> <version>`: the
/// language and its own version are the last words of each.
fn client_kind(name: &str, version: &str) -> String {
    let last = |text: &str| text.split_whitespace().last().unwrap_or_default().to_owned();
    if name.starts_with("gRPC") {
        format!("gRPC {} {}", last(name), last(version)).trim().to_owned()
    } else {
        format!("{name} {version}").trim().to_owned()
    }
}

/// `edgexds_xds_proxies{flavour, client, state}`: connected streams by flavour, kind of client
/// (`envoy`, or `grpc-<language>`: bounded, no versions) and sync state, counted from the
/// streams' views at each scrape. Every state is present at 0 for each flavour and client
/// kind seen.
pub struct ProxiesCollector(pub Arc<ProxyRegistry>);

impl std::fmt::Debug for ProxiesCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxiesCollector")
    }
}

impl ProxiesCollector {
    /// `(flavour, client, state)` → streams, zero rows included for every state.
    pub fn counts(&self) -> BTreeMap<(String, String, &'static str), i64> {
        let mut counts = BTreeMap::new();
        for flavour in ["delta", "sotw"] {
            for state in SyncState::ALL {
                counts.insert((flavour.to_owned(), "envoy".to_owned(), state.name()), 0);
            }
        }
        for stream in self.0.streams() {
            let view = stream.view();
            let node = view.node.as_deref();
            let client = client_label(node.map_or("", |n| n.user_agent_name.as_str())).to_owned();
            let state = sync_state(&view).name();
            let flavour = view.flavour.name().to_owned();
            for zero in SyncState::ALL {
                counts.entry((flavour.clone(), client.clone(), zero.name())).or_insert(0);
            }
            *counts.entry((flavour, client, state)).or_insert(0) += 1;
        }
        counts
    }
}

/// The `client` label for a node's `user_agent_name`, from a fixed set: the name is the
/// client's to choose, and a label value per invented name would let clients grow the
/// metric without bound.
fn client_label(agent: &str) -> &'static str {
    const GRPC: [(&str, &str); 8] = [
        ("python", "grpc-python"),
        ("go", "grpc-go"),
        ("java", "grpc-java"),
        ("c++", "grpc-cpp"),
        ("ruby", "grpc-ruby"),
        ("php", "grpc-php"),
        ("node", "grpc-node"),
        ("c#", "grpc-csharp"),
    ];
    match agent.split_whitespace().next() {
        Some("envoy") => "envoy",
        Some("gRPC") => {
            let language = agent.split_whitespace().last().unwrap_or_default().to_ascii_lowercase();
            GRPC.iter().find(|(name, _)| *name == language).map_or("grpc-other", |(_, label)| label)
        }
        Some(_) => "other",
        None => "unknown",
    }
}

impl prometheus_client::collector::Collector for ProxiesCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let mut family = encoder.encode_descriptor(
            "xds_proxies",
            "Connected xDS streams by flavour, kind of client and sync state",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((flavour, client, state), count) in self.counts() {
            let labels = [("flavour", flavour.as_str()), ("client", client.as_str()), ("state", state)];
            let metric = family.encode_family(&labels)?;
            ConstGauge::new(count).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod client_label_tests {
    use super::client_label;

    #[test]
    fn the_client_label_comes_from_a_fixed_set_whatever_a_node_calls_itself() {
        assert_eq!(client_label("envoy"), "envoy");
        assert_eq!(client_label("gRPC C-core linux Python"), "grpc-python");
        assert_eq!(client_label("gRPC Go"), "grpc-go");
        assert_eq!(client_label("gRPC C-core linux Brainfuck"), "grpc-other");
        assert_eq!(client_label("my-own-proxy-v17"), "other");
        assert_eq!(client_label(""), "unknown");
    }
}
