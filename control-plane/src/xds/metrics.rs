//! The xDS port's metrics, registered by the xDS server itself. Labels are bounded:
//! types, methods and flavours, never node ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::kind::{Flavour, StreamKind};
use crate::cache::ResourceType;
use crate::histograms;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// ads, cds, eds, lds or rds: which method the stream uses.
    pub method: &'static str,
    /// delta or sotw.
    pub flavour: &'static str,
}

/// The per-type series a stream touches on every response, resolved once.
#[derive(Clone)]
pub struct TypeSeries {
    pub responses: Counter,
    pub resources_sent: Counter,
    pub resources_removed: Counter,
    pub bytes_sent: Counter,
    pub acks: Counter,
    pub nacks: Counter,
    pub convergence: Histogram,
}

pub struct XdsMetrics {
    per_type: [TypeSeries; ResourceType::COUNT],
    pub streams: Family<MethodLabel, Gauge>,
    pub push_latency: Histogram,
    pub stuck_streams: Gauge,
}

impl Default for XdsMetrics {
    /// Registered nowhere: for tests and benches.
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl XdsMetrics {
    pub fn register(root: &mut Registry) -> Self {
        let responses = Family::<TypeLabel, Counter>::default();
        let resources_sent = Family::<TypeLabel, Counter>::default();
        let resources_removed = Family::<TypeLabel, Counter>::default();
        let bytes_sent = Family::<TypeLabel, Counter>::default();
        let acks = Family::<TypeLabel, Counter>::default();
        let nacks = Family::<TypeLabel, Counter>::default();
        let convergence = Family::<TypeLabel, Histogram>::new_with_constructor(histograms::latency);
        let metrics = Self {
            per_type: ResourceType::ALL.map(|ty| {
                let label = TypeLabel { r#type: ty.short_name() };
                TypeSeries {
                    responses: responses.get_or_create(&label).clone(),
                    resources_sent: resources_sent.get_or_create(&label).clone(),
                    resources_removed: resources_removed.get_or_create(&label).clone(),
                    bytes_sent: bytes_sent.get_or_create(&label).clone(),
                    acks: acks.get_or_create(&label).clone(),
                    nacks: nacks.get_or_create(&label).clone(),
                    convergence: convergence.get_or_create(&label).clone(),
                }
            }),
            streams: Family::default(),
            push_latency: histograms::latency(),
            stuck_streams: Gauge::default(),
        };
        // Every method and flavour reads 0 from startup, not "no data".
        let kinds = std::iter::once(StreamKind::Aggregated).chain(ResourceType::ALL.map(StreamKind::Single));
        for kind in kinds {
            for flavour in [Flavour::Delta, Flavour::Sotw] {
                metrics.streams_of(kind, flavour);
            }
        }
        root.register_with_unit(
            "push_latency",
            "From a source change being observed to a response carrying it being written",
            Unit::Seconds,
            metrics.push_latency.clone(),
        );
        root.register_with_unit("convergence", "From a response being written to its ACK", Unit::Seconds, convergence);
        let xds = root.sub_registry_with_prefix("xds");
        xds.register("streams", "Connected xDS streams", metrics.streams.clone());
        xds.register("responses", "xDS responses sent", responses);
        xds.register("resources_sent", "Resources sent in xDS responses", resources_sent);
        xds.register("resources_removed", "Names sent in removed_resources", resources_removed);
        xds.register_with_unit("sent", "Encoded xDS response bytes", Unit::Bytes, bytes_sent);
        xds.register("acks", "Responses acknowledged by clients", acks);
        xds.register("nacks", "Responses rejected by clients", nacks);
        xds.register(
            "stuck_streams",
            "Streams whose last response has gone unwritten for 2 s: clients that stopped reading",
            metrics.stuck_streams.clone(),
        );
        metrics
    }

    /// Counters of one type, without a lookup: streams use them on every response.
    pub fn series(&self, ty: ResourceType) -> &TypeSeries {
        &self.per_type[ty.index()]
    }

    /// The gauge of open streams of `kind`.
    pub fn streams_of(&self, kind: StreamKind, flavour: Flavour) -> Gauge {
        self.streams.get_or_create(&MethodLabel { method: kind.method(), flavour: flavour.name() }).clone()
    }
}
