//! Authenticates every gRPC request on the xDS port — delta ADS/CDS/EDS, CSDS, HDS and
//! whatever is added later — before it reaches a service, except gRPC health, which
//! kubelet and load balancers probe without credentials.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use tokio::sync::watch;
use tonic::Status;

use super::Identity;
use super::metrics::AuthMetrics;
use super::tokens::{TokenError, TokenReviewer};

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

    /// Who the caller from `peer` is (`None` when authentication is off and it presented no
    /// certificate), or why it is not let in.
    pub async fn authenticate(
        &self,
        certificate: Option<&Identity>,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Option<Authenticated>, AuthFailure> {
        if self.modes.mtls
            && let Some(identity) = certificate
        {
            self.metrics.request("mtls", "accepted");
            return Ok(Some(Authenticated { identity: identity.clone(), revocation: None }));
        }
        if self.modes.token
            && let Some(tokens) = &self.tokens
            && let Some(token) = bearer(headers)
        {
            return match tokens.verify(token, peer).await {
                Ok(verified) => {
                    self.metrics.request("token", "accepted");
                    let revocation = Some(Revocation::new(verified.revoked));
                    Ok(Some(Authenticated { identity: verified.identity, revocation }))
                }
                Err(TokenError::RateLimited) => {
                    self.metrics.request("token", "rate_limited");
                    Err(AuthFailure::RateLimited)
                }
                Err(TokenError::Status(status)) => {
                    let result = if status.code() == tonic::Code::Unavailable { "unavailable" } else { "refused" };
                    self.metrics.request("token", result);
                    Err(AuthFailure::Refused(status))
                }
            };
        }
        if !self.modes.any() {
            return Ok(certificate.map(|identity| Authenticated { identity: identity.clone(), revocation: None }));
        }
        self.metrics.request("none", "refused");
        Err(AuthFailure::Refused(Status::unauthenticated(format!("edgexds expects {}", self.modes.expected()))))
    }
}

/// A caller let in: who it is, and for a token, whether the API server still honours it.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub identity: Identity,
    pub revocation: Option<Revocation>,
}

/// Why a caller is not let in.
#[derive(Debug)]
pub enum AuthFailure {
    /// The status it gets: refused, or not verifiable now.
    Refused(Status),
    /// Its address has caused more token reviews than its rate allows (a per-client limit).
    RateLimited,
}

/// Turns true once the token a request was let in with is no longer honoured; the port ends
/// a stream opened with it then.
#[derive(Clone, Debug)]
pub struct Revocation(watch::Receiver<bool>);

impl Revocation {
    /// Follows `revoked`, which turns true on revocation.
    pub fn new(revoked: watch::Receiver<bool>) -> Self {
        Self(revoked)
    }

    /// Resolves once the token is revoked; never, if it is not.
    pub async fn revoked(&mut self) {
        if self.0.wait_for(|revoked| *revoked).await.is_err() {
            std::future::pending::<()>().await;
        }
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
        let Err(AuthFailure::Refused(refused)) = auth.authenticate(None, &headers(Some("Bearer x")), None).await else {
            panic!("let in")
        };
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>"));
        let id = Identity::from_spiffe("spiffe://td/ns/shop/sa/web").unwrap();
        let authenticated = auth.authenticate(Some(&id), &headers(None), None).await.unwrap();
        assert_eq!(authenticated.map(|a| a.identity), Some(id));
    }

    #[tokio::test]
    async fn with_tokens_a_request_without_a_bearer_token_is_unauthenticated() {
        let auth = Authenticator::new(AuthModes { mtls: false, token: true }, None, AuthMetrics::default());
        for value in [None, Some("Basic abc"), Some("Bearer ")] {
            let Err(AuthFailure::Refused(refused)) = auth.authenticate(None, &headers(value), None).await else {
                panic!("let in")
            };
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{value:?}");
            assert!(refused.message().contains("ServiceAccount token"), "{}", refused.message());
        }
    }

    #[tokio::test]
    async fn without_authentication_everyone_is_in_and_health_is_always_open() {
        let auth = Authenticator::open();
        assert!(auth.authenticate(None, &headers(None), None).await.unwrap().is_none());
        assert!(exempt("/grpc.health.v1.Health/Check") && exempt("/grpc.health.v1.Health/Watch"));
        assert!(!exempt("/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"));
    }
}
