//! Kubernetes ServiceAccount tokens, verified by the API server's TokenReview and cached
//! per token hash until the token expires.
//!
//! The cache is what keeps a fleet of reconnecting proxies from costing a TokenReview each:
//! one review per token per lifetime. It is bounded, holds hashes rather than tokens, and
//! remembers refusals briefly so a client repeating a bad token costs one review per
//! [`REFUSAL_TTL`]. While the API server is unreachable, cached tokens keep working until
//! they expire, and unknown ones are refused: failing open would let anyone in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;
use tonic::Status;
use tracing::{debug, warn};

use super::Identity;
use super::metrics::AuthMetrics;

/// Tokens remembered at most; beyond, expired entries go first, then arbitrary ones.
pub const MAX_CACHED_TOKENS: usize = 10_000;
/// How long a refusal is remembered.
pub const REFUSAL_TTL: Duration = Duration::from_secs(10);
/// How long an accepted token without an `exp` claim is trusted before it is reviewed again.
const NO_EXPIRY_TTL: Duration = Duration::from_secs(300);
/// Reviews in flight at once: a flood of new tokens must not become a flood at the API server.
const MAX_REVIEWS_IN_FLIGHT: usize = 16;
/// How long a review may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

type TokenHash = [u8; 32];

struct Cached {
    outcome: Result<Identity, String>,
    until: Instant,
}

pub struct TokenReviewer {
    client: kube::Client,
    audiences: Vec<String>,
    cache: Mutex<HashMap<TokenHash, Cached>>,
    in_flight: Semaphore,
    metrics: AuthMetrics,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audiences: Vec<String>, metrics: AuthMetrics) -> Arc<Self> {
        Arc::new(Self {
            client,
            audiences,
            cache: Mutex::default(),
            in_flight: Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
            metrics,
        })
    }

    /// The identity behind `token`, from the cache or a TokenReview.
    pub async fn verify(&self, token: &str) -> Result<Identity, Status> {
        let key = hash(token);
        if let Some(cached) = self.cached(&key) {
            self.metrics.token_review("cached");
            return cached.map_err(Status::unauthenticated);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.metrics.token_review("busy");
            return Err(Status::unavailable("too many token reviews in flight; retry"));
        };
        let review = tokio::time::timeout(REVIEW_TIMEOUT, self.review(token)).await;
        let outcome = match review {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
                // Not an outage but a deployment error: say so where an operator looks.
                self.metrics.token_review("forbidden");
                warn!(message = %status.message, "cannot verify tokens: edgexds may not create tokenreviews (RBAC)");
                return Err(Status::unavailable(
                    "cannot verify the token: edgexds is not allowed to create TokenReviews (RBAC)",
                ));
            }
            Ok(Err(error)) => {
                self.metrics.token_review("unreachable");
                debug!(%error, "TokenReview failed");
                return Err(Status::unavailable(
                    "cannot verify the token: the Kubernetes API is unreachable (tokens verified before keep working)",
                ));
            }
            Err(_) => {
                self.metrics.token_review("unreachable");
                return Err(Status::unavailable("cannot verify the token: the TokenReview timed out"));
            }
        };
        let until = match &outcome {
            Ok(_) => expiry(token).map_or(Instant::now() + NO_EXPIRY_TTL, |left| Instant::now() + left),
            Err(_) => Instant::now() + REFUSAL_TTL,
        };
        self.metrics.token_review(if outcome.is_ok() { "accepted" } else { "refused" });
        self.remember(key, Cached { outcome: outcome.clone(), until });
        outcome.map_err(Status::unauthenticated)
    }

    fn cached(&self, key: &TokenHash) -> Option<Result<Identity, String>> {
        let cache = crate::lock::lock(&self.cache);
        cache.get(key).filter(|c| c.until > Instant::now()).map(|c| c.outcome.clone())
    }

    fn remember(&self, key: TokenHash, entry: Cached) {
        let mut cache = crate::lock::lock(&self.cache);
        if cache.len() >= MAX_CACHED_TOKENS {
            let now = Instant::now();
            cache.retain(|_, c| c.until > now);
            while cache.len() >= MAX_CACHED_TOKENS {
                let Some(any) = cache.keys().next().copied() else { break };
                cache.remove(&any);
            }
        }
        cache.insert(key, entry);
        self.metrics.cached_tokens.set(cache.len() as i64);
    }

    /// `Ok(Err(why))` is a refusal by the API server; `Err` means no answer.
    async fn review(&self, token: &str) -> kube::Result<Result<Identity, String>> {
        let request = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: Some(self.audiences.clone()) },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &request).await?;
        Ok(identity_of(&reviewed, &self.audiences))
    }
}

/// The identity a review vouches for, or why it does not.
fn identity_of(review: &TokenReview, audiences: &[String]) -> Result<Identity, String> {
    let status = review.status.as_ref().ok_or("the TokenReview has no status")?;
    if status.authenticated != Some(true) {
        return Err(format!(
            "token rejected by the Kubernetes API: {}",
            status.error.as_deref().unwrap_or("not authenticated")
        ));
    }
    let granted = status.audiences.as_deref().unwrap_or_default();
    if !audiences.is_empty() && !granted.iter().any(|a| audiences.contains(a)) {
        return Err(format!("the token is not for audience {}", audiences.join(" or ")));
    }
    let user = status.user.as_ref().ok_or("the TokenReview names no user")?;
    let username = user.username.as_deref().unwrap_or_default();
    let Some((namespace, account)) = username.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':'))
    else {
        return Err(format!("{username} is not a ServiceAccount"));
    };
    let extra = |key: &str| {
        user.extra
            .as_ref()
            .and_then(|e| e.get(&format!("authentication.kubernetes.io/{key}")))
            .and_then(|v| v.first())
            .cloned()
    };
    Ok(Identity {
        namespace: namespace.to_owned(),
        service_account: account.to_owned(),
        pod: extra("pod-name"),
        node: extra("node-name"),
        trust_domain: None,
    })
}

fn hash(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// How long until the token's `exp` claim. The API server verified the signature; this
/// only reads when to ask it again.
fn expiry(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    fn review(authenticated: bool, username: &str, audiences: &[&str], extra: &[(&str, &str)]) -> TokenReview {
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(authenticated),
                audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
                user: Some(UserInfo {
                    username: Some(username.to_owned()),
                    extra: Some(
                        extra
                            .iter()
                            .map(|(k, v)| (format!("authentication.kubernetes.io/{k}"), vec![v.to_string()]))
                            .collect(),
                    ),
                    ..Default::default()
                }),
                error: (!authenticated).then(|| "token expired".to_owned()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_review_yields_the_service_account_and_the_pod_and_node_a_bound_token_carries() {
        let audiences = vec!["edgexds".to_owned()];
        let bound = review(
            true,
            "system:serviceaccount:edge:checker",
            &["edgexds"],
            &[("pod-name", "c-1"), ("node-name", "node-2")],
        );
        let id = identity_of(&bound, &audiences).unwrap();
        assert_eq!(id.name(), "edge/checker");
        assert_eq!((id.pod.as_deref(), id.node.as_deref()), (Some("c-1"), Some("node-2")));
        let other_audience = review(true, "system:serviceaccount:edge:checker", &["api"], &[]);
        assert_eq!(identity_of(&other_audience, &audiences).unwrap_err(), "the token is not for audience edgexds");
        let user = review(true, "jane", &["edgexds"], &[]);
        assert_eq!(identity_of(&user, &audiences).unwrap_err(), "jane is not a ServiceAccount");
        let refused = review(false, "", &[], &[]);
        assert_eq!(
            identity_of(&refused, &audiences).unwrap_err(),
            "token rejected by the Kubernetes API: token expired"
        );
    }

    #[test]
    fn the_expiry_comes_from_the_exp_claim_and_garbage_has_none() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{}}}", now + 600));
        let left = expiry(&format!("header.{claims}.signature")).unwrap();
        assert!(left <= Duration::from_secs(600) && left >= Duration::from_secs(590), "{left:?}");
        assert_eq!(expiry("not-a-jwt"), None);
        assert_eq!(expiry("a.!!!.c"), None);
    }
}
