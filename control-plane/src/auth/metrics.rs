//! Authentication's metrics, registered under `edgexds_auth_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// How the client authenticated (mtls, token) or tried to (none).
    pub method: &'static str,
    /// accepted, refused, unavailable (the token could not be verified now).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// For token reviews: cached, cached_refusal, invalid (refused without a review),
    /// rate_limited, busy, accepted, refused, rechecked, revoked, unreachable, forbidden.
    /// For TLS reloads: loaded, failed.
    pub result: &'static str,
}

#[derive(Clone, Default)]
pub struct AuthMetrics {
    pub requests: Family<OutcomeLabel, Counter>,
    pub token_reviews: Family<ResultLabel, Counter>,
    pub cached_tokens: Gauge,
    pub tls_reloads: Family<ResultLabel, Counter>,
    /// When the serving certificate in force expires, Unix seconds.
    pub certificate_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl AuthMetrics {
    pub fn register(root: &mut Registry) -> Self {
        let metrics = Self::default();
        let auth = root.sub_registry_with_prefix("auth");
        auth.register("requests", "Authenticated gRPC requests (streams) on the xDS port", metrics.requests.clone());
        auth.register(
            "token_reviews",
            "Token verifications: answered from the cache, or by a TokenReview",
            metrics.token_reviews.clone(),
        );
        auth.register("cached_tokens", "Token verdicts held in the cache", metrics.cached_tokens.clone());
        auth.register(
            "tls_reloads",
            "Reloads of the xDS TLS files after they changed: loaded, or failed (the previous certificate kept)",
            metrics.tls_reloads.clone(),
        );
        auth.register_with_unit(
            "certificate_expiry_timestamp",
            "When the xDS port's serving certificate in force expires (the injection webhook serves the same one), in seconds since the Unix epoch",
            prometheus_client::registry::Unit::Seconds,
            metrics.certificate_expiry.clone(),
        );
        // Present at 0 from startup, so alerts and panels read 0, not "no data".
        for (method, result) in [("mtls", "accepted"), ("token", "accepted"), ("token", "refused"), ("none", "refused")]
        {
            metrics.requests.get_or_create(&OutcomeLabel { method, result }).inc_by(0);
        }
        for result in ["cached", "accepted", "refused", "invalid", "rate_limited", "unreachable", "forbidden"] {
            metrics.token_reviews.get_or_create(&ResultLabel { result }).inc_by(0);
        }
        for result in ["loaded", "failed"] {
            metrics.tls_reloads.get_or_create(&ResultLabel { result }).inc_by(0);
        }
        metrics
    }

    pub fn request(&self, method: &'static str, result: &'static str) {
        self.requests.get_or_create(&OutcomeLabel { method, result }).inc();
    }

    pub fn tls_reload(&self, result: &'static str) {
        self.tls_reloads.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn token_review(&self, result: &'static str) {
        self.token_reviews.get_or_create(&ResultLabel { result }).inc();
    }
}
