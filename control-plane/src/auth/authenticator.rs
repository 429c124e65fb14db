//! Authenticates every gRPC request on the xDS port — delta ADS/CDS/EDS, CSDS, HDS and
//! whatever is added later — before it reaches a service, except gRPC health, which
//! kubelet and load balancers probe without credentials.

use std::sync::Arc;

use axum::http::HeaderMap;
use tonic::Status;

use super::Identity;
use super::metrics::AuthMetrics;
use super::tokens::TokenReviewer;

/// The ways a client may prove who it is; any one suffices. None: everyone is let in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthModes {
    pub mtls: bool,
    pub token: bool,
}

impl AuthModes {
    pub fn any(&self) -> bool {
        self.mtls || self.token
    }

    fn expected(&self) -> &'static str {
        match (self.mtls, self.token) {
            (true, true) => "a client certificate with a SPIFFE ID, or a ServiceAccount token (authorization: Bearer)",
            (true, false) => {
                "a client certificate with a SPIFFE ID spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>"
            }
            _ => "a Kubernetes ServiceAccount token in the authorization metadata (Bearer)",
        }
    }
}

pub struct Authenticator {
    modes: AuthModes,
    tokens: Option<Arc<TokenReviewer>>,
    metrics: AuthMetrics,
}

/// gRPC health is open: probes carry no credentials and learn nothing but "serving".
pub fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

impl Authenticator {
    /// `tokens` is needed when `modes.token` is on.
    pub fn new(modes: AuthModes, tokens: Option<Arc<TokenReviewer>>, metrics: AuthMetrics) -> Arc<Self> {
        Arc::new(Self { modes, tokens, metrics })
    }

    /// Whether clients must authenticate, and so whether identities are checked.
    pub fn enforced(&self) -> bool {
        self.modes.any()
    }

    /// Lets everyone in; a certificate's identity still counts when one is presented.
    pub fn open() -> Arc<Self> {
        Self::new(AuthModes::default(), None, AuthMetrics::default())
    }

    /// The caller's identity (`None` when authentication is off and it presented none), or
    /// `UNAUTHENTICATED` saying what was expected.
    pub async fn authenticate(
        &self,
        certificate: Option<&Identity>,
        headers: &HeaderMap,
    ) -> Result<Option<Identity>, Status> {
        if self.modes.mtls
            && let Some(identity) = certificate
        {
            self.metrics.request("mtls", "accepted");
            return Ok(Some(identity.clone()));
        }
        if self.modes.token
            && let Some(tokens) = &self.tokens
            && let Some(token) = bearer(headers)
        {
            return match tokens.verify(token).await {
                Ok(identity) => {
                    self.metrics.request("token", "accepted");
                    Ok(Some(identity))
                }
                Err(status) => {
                    let result = if status.code() == tonic::Code::Unavailable { "unavailable" } else { "refused" };
                    self.metrics.request("token", result);
                    Err(status)
                }
            };
        }
        if !self.modes.any() {
            return Ok(certificate.cloned());
        }
        self.metrics.request("none", "refused");
        Err(Status::unauthenticated(format!("edgexds expects {}", self.modes.expected())))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[tokio::test]
    async fn with_mtls_a_request_without_a_spiffe_certificate_is_unauthenticated_and_says_what_is_expected() {
        let auth = Authenticator::new(AuthModes { mtls: true, token: false }, None, AuthMetrics::default());
        let refused = auth.authenticate(None, &headers(Some("Bearer x"))).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>"));
        let id = Identity::from_spiffe("spiffe://td/ns/shop/sa/web").unwrap();
        assert_eq!(auth.authenticate(Some(&id), &headers(None)).await.unwrap(), Some(id));
    }

    #[tokio::test]
    async fn with_tokens_a_request_without_a_bearer_token_is_unauthenticated() {
        let auth = Authenticator::new(AuthModes { mtls: false, token: true }, None, AuthMetrics::default());
        for value in [None, Some("Basic abc"), Some("Bearer ")] {
            let refused = auth.authenticate(None, &headers(value)).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{value:?}");
            assert!(refused.message().contains("ServiceAccount token"), "{}", refused.message());
        }
    }

    #[tokio::test]
    async fn without_authentication_everyone_is_in_and_health_is_always_open() {
        let auth = Authenticator::open();
        assert_eq!(auth.authenticate(None, &headers(None)).await.unwrap(), None);
        assert!(exempt("/grpc.health.v1.Health/Check") && exempt("/grpc.health.v1.Health/Watch"));
        assert!(!exempt("/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"));
    }
}
