//! Kubernetes ServiceAccount tokens: checked here first ([`super::jwt`]), then verified by
//! the API server's TokenReview, cached per token hash, and verified again on a schedule so
//! that a token the API server no longer honours stops working here too.
//!
//! What a flood of bad tokens costs is paid by the one sending them:
//! - a token that is not a JWT, is expired, is for another audience or issuer, or is not
//!   signed by the cluster's keys is refused without a review;
//! - reviews are limited per client address, and a client past its rate is refused;
//! - reviews wait briefly for a free slot (a burst of newcomers is queued, not refused);
//! - refusals are remembered apart from verified tokens, so they never evict them.
//!
//! Revocation: a verified token is trusted for [`TokenSettings::recheck`] after its last
//! review; used after that, it is reviewed again, and tokens of open streams are reviewed
//! again in the background. A token the API server refuses closes its streams. The API
//! server itself caches review answers for 10 s, so a deleted pod's token stops working here
//! within the recheck interval plus those 10 s. While the API server is unreachable, verified
//! tokens keep working until they expire, and unknown ones are refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tokio::sync::{Semaphore, watch};
use tonic::Status;
use tracing::{debug, info, warn};

use super::Identity;
use super::jwt::{self, IssuerKeys, LocalRefusal};
use super::metrics::AuthMetrics;
use crate::lock::lock;
use crate::shutdown::{self, Shutdown};

/// Verified tokens remembered at most; beyond, expired ones go first, then ones no stream uses.
pub const MAX_CACHED_TOKENS: usize = 10_000;
/// Refusals remembered at most, apart from verified tokens.
const MAX_REFUSALS: usize = 2_048;
/// How long a refusal is remembered.
pub const REFUSAL_TTL: Duration = Duration::from_secs(10);
/// How long an accepted token without an `exp` claim is trusted before it is reviewed again.
const NO_EXPIRY_TTL: Duration = Duration::from_secs(300);
/// Reviews in flight at once: a flood of new tokens must not become a flood at the API server.
const MAX_REVIEWS_IN_FLIGHT: usize = 16;
/// How long a review may wait for a slot: newcomers in a burst are queued, not refused.
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// How long a review may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Client addresses whose review rate is tracked at most; idle ones are forgotten first.
const MAX_PEERS: usize = 4_096;
/// The issuer's keys are fetched again this often, and at most this often when a token names
/// a key they lack (the API server rotated its keys).
const KEYS_REFRESH: Duration = Duration::from_secs(600);
const KEYS_RETRY: Duration = Duration::from_secs(30);

type TokenHash = [u8; 32];

/// How tokens are verified.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// The audiences a token must be for; none: any.
    pub audiences: Vec<String>,
    /// How long a review's verdict is trusted before the token is reviewed again.
    pub recheck: Duration,
}

/// How long a review's verdict is trusted by default: with the API server's own 10 s cache,
/// a revoked token stops working within about 50 s, while 1,000 open streams cost the API
/// server about 33 reviews a second.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(30);

impl Default for TokenSettings {
    fn default() -> Self {
        Self { audiences: Vec::new(), recheck: DEFAULT_RECHECK }
    }
}

/// A token verified: who it is, and a flag that turns true if the API server stops
/// honouring it (streams opened with it end then).
#[derive(Clone, Debug)]
pub struct Verified {
    pub identity: Identity,
    pub revoked: watch::Receiver<bool>,
}

/// Why a token was not verified.
#[derive(Debug)]
pub enum TokenError {
    /// Refused, or not verifiable now: the status says which, and why.
    Status(Status),
    /// This client address has caused more reviews than its rate allows.
    RateLimited,
}

struct Trusted {
    identity: Identity,
    /// The token's expiry, or how long a token without one is trusted.
    expires: Instant,
    /// When the API server last vouched for it.
    reviewed: Instant,
    /// Kept to review it again while streams use it.
    token: Arc<str>,
    revoked: watch::Sender<bool>,
}

/// What the cache says of a token.
enum Cached {
    Fresh(Verified),
    Stale(Verified),
    Refused(String),
}

/// A token bucket per client address.
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Keys {
    keys: Option<Arc<IssuerKeys>>,
    fetched: Option<Instant>,
    warned: bool,
}

pub struct TokenReviewer {
    client: kube::Client,
    settings: TokenSettings,
    /// Reviews a second one client address may cause (and as many at once, as a burst).
    reviews_per_peer: u32,
    trusted: Mutex<HashMap<TokenHash, Trusted>>,
    refused: Mutex<HashMap<TokenHash, (String, Instant)>>,
    peers: Mutex<HashMap<IpAddr, Bucket>>,
    keys: tokio::sync::Mutex<Keys>,
    in_flight: Semaphore,
    metrics: AuthMetrics,
}

impl TokenReviewer {
    pub fn new(
        client: kube::Client,
        settings: TokenSettings,
        reviews_per_peer: u32,
        metrics: AuthMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            settings,
            reviews_per_peer,
            trusted: Mutex::default(),
            refused: Mutex::default(),
            peers: Mutex::default(),
            keys: tokio::sync::Mutex::default(),
            in_flight: Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
            metrics,
        })
    }

    /// The identity behind `token`, sent from `peer`: from the cache, or after local checks
    /// and a TokenReview.
    pub async fn verify(&self, token: &str, peer: Option<IpAddr>) -> Result<Verified, TokenError> {
        let key = hash(token);
        let stale = match self.cached(&key) {
            Some(Cached::Fresh(verified)) => {
                self.metrics.token_review("cached");
                return Ok(verified);
            }
            Some(Cached::Refused(why)) => {
                self.metrics.token_review("cached_refusal");
                return Err(TokenError::Status(Status::unauthenticated(why)));
            }
            Some(Cached::Stale(verified)) => Some(verified),
            None => None,
        };
        if let Some(verified) = stale {
            return self.verify_again(key, token, peer, verified).await;
        }
        if let Err(why) = self.check_locally(token).await {
            self.metrics.token_review("invalid");
            self.remember_refusal(key, why.clone());
            return Err(TokenError::Status(Status::unauthenticated(why)));
        }
        if !self.take_review(peer) {
            self.metrics.token_review("rate_limited");
            return Err(TokenError::RateLimited);
        }
        let Ok(Ok(_slot)) = tokio::time::timeout(QUEUE_WAIT, self.in_flight.acquire()).await else {
            self.metrics.token_review("busy");
            return Err(TokenError::Status(Status::unavailable("too many token reviews in flight; retry")));
        };
        match self.review_and_record(key, token, false).await {
            Ok(Ok(verified)) => Ok(verified),
            Ok(Err(why)) => Err(TokenError::Status(Status::unauthenticated(why))),
            Err(status) => Err(TokenError::Status(status)),
        }
    }

    /// Reviews `token` and records the answer: trusted (again), or refused; a token trusted
    /// before (`known`) and now refused is revoked, which ends its streams. `Err`: no answer.
    async fn review_and_record(
        &self,
        key: TokenHash,
        token: &str,
        known: bool,
    ) -> Result<Result<Verified, String>, Status> {
        Ok(match self.review(token).await? {
            Ok(identity) => {
                self.metrics.token_review(if known { "rechecked" } else { "accepted" });
                Ok(self.trust(key, token, identity))
            }
            Err(why) if known => {
                self.metrics.token_review("revoked");
                self.revoke(key, why.clone());
                Err(why)
            }
            Err(why) => {
                self.metrics.token_review("refused");
                self.remember_refusal(key, why.clone());
                Err(why)
            }
        })
    }

    /// A cached verdict: a verified token, fresh (reviewed within the recheck interval) or
    /// stale, or a recent refusal.
    fn cached(&self, key: &TokenHash) -> Option<Cached> {
        let now = Instant::now();
        if let Some(trusted) = lock(&self.trusted).get(key).filter(|t| t.expires > now) {
            let verified = Verified { identity: trusted.identity.clone(), revoked: trusted.revoked.subscribe() };
            return Some(match now.duration_since(trusted.reviewed) < self.settings.recheck {
                true => Cached::Fresh(verified),
                false => Cached::Stale(verified),
            });
        }
        let refused = lock(&self.refused);
        refused.get(key).filter(|(_, until)| *until > now).map(|(why, _)| Cached::Refused(why.clone()))
    }

    /// A verified token used after its recheck interval: reviewed again when a review can be
    /// had now; if none can (the client's rate, no free slot, the API server away), it keeps
    /// working on its last verdict, and its streams are rechecked in the background.
    async fn verify_again(
        &self,
        key: TokenHash,
        token: &str,
        peer: Option<IpAddr>,
        last: Verified,
    ) -> Result<Verified, TokenError> {
        let slot = self.in_flight.try_acquire();
        if slot.is_err() || !self.take_review(peer) {
            self.metrics.token_review("cached");
            return Ok(last);
        }
        match self.review_and_record(key, token, true).await {
            Ok(Ok(verified)) => Ok(verified),
            Ok(Err(why)) => Err(TokenError::Status(Status::unauthenticated(why))),
            // The API server is away: what was verified keeps working.
            Err(_) => Ok(last),
        }
    }

    /// Ends the streams `key` opened and remembers why it is refused.
    fn revoke(&self, key: TokenHash, why: String) {
        info!(%why, "a token in use is no longer honoured; its streams end");
        if let Some(trusted) = lock(&self.trusted).remove(&key) {
            trusted.revoked.send_replace(true);
        }
        self.remember_refusal(key, why);
    }

    /// The checks that need no review; the issuer's keys are fetched when they are not known.
    async fn check_locally(&self, token: &str) -> Result<(), String> {
        let keys = self.issuer_keys(false).await;
        match jwt::check(token, &self.settings.audiences, keys.as_deref()) {
            Ok(()) => Ok(()),
            Err(LocalRefusal::Invalid(why)) => Err(why),
            Err(LocalRefusal::UnknownKey(kid)) => {
                // The API server may have rotated its keys: fetch them again (at most so often).
                let keys = self.issuer_keys(true).await;
                match jwt::check(token, &self.settings.audiences, keys.as_deref()) {
                    Ok(()) => Ok(()),
                    Err(LocalRefusal::Invalid(why)) => Err(why),
                    Err(LocalRefusal::UnknownKey(_)) => {
                        Err(format!("the token is signed with key {kid:?}, which this cluster does not publish"))
                    }
                }
            }
        }
    }

    /// The issuer's keys, fetched when missing or old, or (`stale`) when a token names one they lack.
    async fn issuer_keys(&self, stale: bool) -> Option<Arc<IssuerKeys>> {
        let mut keys = self.keys.lock().await;
        let due = match keys.fetched {
            None => true,
            Some(at) if keys.keys.is_none() || stale => at.elapsed() >= KEYS_RETRY,
            Some(at) => at.elapsed() >= KEYS_REFRESH,
        };
        if due {
            keys.fetched = Some(Instant::now());
            match self.fetch_keys().await {
                Ok(fetched) => {
                    if keys.keys.is_none() {
                        info!(issuer = %fetched.issuer, "tokens are checked against the issuer's published keys");
                    }
                    keys.keys = Some(Arc::new(fetched));
                }
                Err(error) if !keys.warned => {
                    keys.warned = true;
                    warn!(%error, "cannot read the service-account issuer's keys; tokens are checked by TokenReview alone");
                }
                Err(error) => debug!(%error, "cannot read the service-account issuer's keys"),
            }
        }
        keys.keys.clone()
    }

    async fn fetch_keys(&self) -> Result<IssuerKeys, String> {
        let discovery = self.get_text("/.well-known/openid-configuration").await?;
        let jwks = self.get_text("/openid/v1/jwks").await?;
        IssuerKeys::parse(&discovery, &jwks)
    }

    async fn get_text(&self, path: &'static str) -> Result<String, String> {
        let request = axum::http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
        match tokio::time::timeout(REVIEW_TIMEOUT, self.client.request_text(request)).await {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(error)) => Err(format!("{path}: {error}")),
            Err(_) => Err(format!("{path}: timed out")),
        }
    }

    /// Takes one review from `peer`'s budget; `false` when it has none left.
    fn take_review(&self, peer: Option<IpAddr>) -> bool {
        let Some(peer) = peer else { return true };
        let rate = f64::from(self.reviews_per_peer.max(1));
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            // Forget the addresses whose budget refilled: they cost nothing to recreate.
            peers.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < rate);
            if peers.len() >= MAX_PEERS {
                return false;
            }
        }
        let bucket = peers.entry(peer).or_insert(Bucket { tokens: rate, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }

    /// `Ok(Err(why))` is a refusal by the API server; `Err` means no answer, which keeps a
    /// token trusted before working (the API server is away) and refuses an unknown one.
    async fn review(&self, token: &str) -> Result<Result<Identity, String>, Status> {
        let request = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: Some(self.settings.audiences.clone()) },
            ..Default::default()
        };
        let api = Api::<TokenReview>::all(self.client.clone());
        match tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &request)).await {
            Ok(Ok(reviewed)) => Ok(identity_of(&reviewed, &self.settings.audiences)),
            Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
                // Not an outage but a deployment error: say so where an operator looks.
                self.metrics.token_review("forbidden");
                warn!(message = %status.message, "cannot verify tokens: edgexds may not create tokenreviews (RBAC)");
                Err(Status::unavailable(
                    "cannot verify the token: edgexds is not allowed to create TokenReviews (RBAC)",
                ))
            }
            Ok(Err(error)) => {
                self.metrics.token_review("unreachable");
                debug!(%error, "TokenReview failed");
                Err(Status::unavailable(
                    "cannot verify the token: the Kubernetes API is unreachable (tokens verified before keep working)",
                ))
            }
            Err(_) => {
                self.metrics.token_review("unreachable");
                Err(Status::unavailable("cannot verify the token: the TokenReview timed out"))
            }
        }
    }

    /// Trusts `token` as `identity` from now, until it expires or a review refuses it.
    fn trust(&self, key: TokenHash, token: &str, identity: Identity) -> Verified {
        let now = Instant::now();
        let expires = now + jwt::expires_in(token).unwrap_or(NO_EXPIRY_TTL);
        let mut trusted = lock(&self.trusted);
        if !trusted.contains_key(&key) && trusted.len() >= MAX_CACHED_TOKENS {
            trusted.retain(|_, t| t.expires > now);
            if trusted.len() >= MAX_CACHED_TOKENS {
                trusted.retain(|_, t| t.revoked.receiver_count() > 0);
            }
            while trusted.len() >= MAX_CACHED_TOKENS {
                let Some(any) = trusted.keys().next().copied() else { break };
                trusted.remove(&any);
            }
        }
        let entry = trusted.entry(key).or_insert_with(|| Trusted {
            identity: identity.clone(),
            expires,
            reviewed: now,
            token: Arc::from(token),
            revoked: watch::Sender::new(false),
        });
        entry.identity = identity.clone();
        entry.reviewed = now;
        let revoked = entry.revoked.subscribe();
        self.metrics.cached_tokens.set(trusted.len() as i64);
        Verified { identity, revoked }
    }

    fn remember_refusal(&self, key: TokenHash, why: String) {
        let now = Instant::now();
        let mut refused = lock(&self.refused);
        if refused.len() >= MAX_REFUSALS {
            refused.retain(|_, (_, until)| *until > now);
            while refused.len() >= MAX_REFUSALS {
                let Some(any) = refused.keys().next().copied() else { break };
                refused.remove(&any);
            }
        }
        refused.insert(key, (why, now + REFUSAL_TTL));
    }

    /// Reviews again, every quarter of the recheck interval, the tokens open streams use that
    /// were last reviewed more than the interval ago; a refused one ends its streams. Runs until
    /// shutdown.
    pub async fn run_rechecks(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut ticks = tokio::time::interval((self.settings.recheck / 4).max(Duration::from_millis(250)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown::requested(&mut shutdown) => return,
            }
            let due: Vec<(TokenHash, Arc<str>)> = {
                let now = Instant::now();
                let trusted = lock(&self.trusted);
                trusted
                    .iter()
                    .filter(|(_, t)| {
                        t.revoked.receiver_count() > 0 && now.duration_since(t.reviewed) >= self.settings.recheck
                    })
                    .map(|(key, t)| (*key, t.token.clone()))
                    .collect()
            };
            for (key, token) in due {
                let Ok(_slot) = self.in_flight.acquire().await else { return };
                // Without an answer (the API server away), what was verified keeps working.
                let _ = self.review_and_record(key, &token, true).await;
            }
        }
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
}
