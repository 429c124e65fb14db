//! The port's own metrics: open connections, failed TLS handshakes, and every limit's hits,
//! each series present from startup so an alert on it reads 0, not "no data".

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::limits::Limit;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    /// Which per-client limit refused or cut an input (see the README's limits table).
    limit: &'static str,
}

/// One counter per limit, resolved once: enforcement sites count without a lookup.
#[derive(Clone)]
pub struct LimitHits([Counter; Limit::COUNT]);

impl LimitHits {
    /// Counts one input refused or cut by `limit`.
    pub fn hit(&self, limit: Limit) {
        self.0[limit as usize].inc();
    }

    pub fn count(&self, limit: Limit) -> u64 {
        self.0[limit as usize].get()
    }
}

impl Default for LimitHits {
    /// Registered nowhere: for tests.
    fn default() -> Self {
        PortMetrics::default().limit_hits
    }
}

#[derive(Clone)]
pub struct PortMetrics {
    pub connections: Gauge,
    /// Connections that have not yet had a stream let in by authentication.
    pub unauthenticated_connections: Gauge,
    /// Bytes of request messages started but not yet received whole, across every stream.
    pub pending_request_bytes: Gauge,
    pub tls_handshake_failures: Counter,
    pub limit_hits: LimitHits,
}

impl Default for PortMetrics {
    /// Registered nowhere: for tests.
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl PortMetrics {
    pub fn register(root: &mut Registry) -> Self {
        let family = Family::<LimitLabel, Counter>::default();
        let limit_hits =
            LimitHits(Limit::ALL.map(|limit| family.get_or_create(&LimitLabel { limit: limit.label() }).clone()));
        root.register("limit_hits", "Inputs refused or cut by a per-client limit, by limit", family);
        let metrics = Self {
            connections: Gauge::default(),
            unauthenticated_connections: Gauge::default(),
            pending_request_bytes: Gauge::default(),
            tls_handshake_failures: Counter::default(),
            limit_hits,
        };
        let xds = root.sub_registry_with_prefix("xds");
        xds.register("connections", "Open connections on the xDS port", metrics.connections.clone());
        xds.register(
            "unauthenticated_connections",
            "Open connections on the xDS port that have not yet had a stream let in by authentication (--max-unauthenticated-connections)",
            metrics.unauthenticated_connections.clone(),
        );
        xds.register(
            "pending_request_bytes",
            "Bytes of request messages started but not yet received whole, across every stream (--max-pending-request-bytes)",
            metrics.pending_request_bytes.clone(),
        );
        xds.register(
            "tls_handshake_failures",
            "TLS handshakes on the xDS port that failed (garbage, an untrusted client certificate, a protocol error)",
            metrics.tls_handshake_failures.clone(),
        );
        metrics
    }
}
