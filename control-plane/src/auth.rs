//! Who is calling: TLS for the xDS port (with certificate reload), the identity of a
//! client from its certificate or its ServiceAccount token (TokenReview, cached), and the
//! check every request on the port passes. Kept apart from the xDS and HDS services, which
//! only read the [`Identity`] a request carries.
//!
//! Imports: none.

pub mod access;
pub mod authenticator;
pub mod identity;
pub mod jwt;
pub mod metrics;
pub mod tls;
pub mod tokens;

pub use access::Access;
pub use authenticator::{AuthFailure, AuthModes, Authenticated, Authenticator, Revocation};
pub use identity::Identity;
pub use tls::{ClientCerts, ServerTls, TlsSettings};
pub use tokens::{TokenReviewer, TokenSettings};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// What the xDS port asks of a client: TLS (when configured) and authentication.
#[derive(Clone)]
pub struct Security {
    pub tls: Option<ServerTls>,
    pub auth: Arc<Authenticator>,
    /// Who may read every proxy's state (CSDS).
    pub admin_identities: Vec<String>,
}

impl Security {
    /// Plaintext, and everyone let in.
    pub fn open() -> Self {
        Self { tls: None, auth: Authenticator::open(), admin_identities: Vec::new() }
    }
}

/// What the xDS port's security is made from.
pub struct AuthContext {
    pub tls: Option<TlsSettings>,
    pub modes: AuthModes,
    /// How ServiceAccount tokens are verified.
    pub tokens: TokenSettings,
    /// TokenReviews one client address may cause a second.
    pub reviews_per_peer: u32,
    /// Who may read every proxy's state (CSDS).
    pub admin_identities: Vec<String>,
    /// The client TokenReviews go through; without one, the in-cluster or kubeconfig one.
    pub review_client: Option<kube::Client>,
    pub metrics: metrics::AuthMetrics,
    pub shutdown: Shutdown,
}

/// Loads TLS (watched for rotation until shutdown) and sets up the authenticator; a token
/// reviewer needs a Kubernetes client.
pub async fn start(context: AuthContext) -> Result<Security> {
    let AuthContext { tls, modes, tokens, reviews_per_peer, admin_identities, review_client, metrics, shutdown } =
        context;
    let tls = match tls {
        Some(settings) => Some(ServerTls::start(settings, metrics.clone(), shutdown.clone()).map_err(Error::Tls)?),
        None => None,
    };
    let tokens = if modes.token {
        let client = match review_client {
            Some(client) => client,
            None => kube::Client::try_default().await.map_err(Error::KubeConfig)?,
        };
        let reviewer = TokenReviewer::new(client, tokens, reviews_per_peer, metrics.clone());
        tokio::spawn(reviewer.clone().run_rechecks(shutdown));
        Some(reviewer)
    } else {
        None
    };
    Ok(Security { tls, auth: Authenticator::new(modes, tokens, metrics), admin_identities })
}
