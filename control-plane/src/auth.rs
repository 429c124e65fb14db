//! Who is calling: TLS for the xDS port (with certificate reload), the identity of a
//! client from its certificate or its ServiceAccount token (TokenReview, cached), and the
//! check every request on the port passes. Kept apart from the xDS and HDS services, which
//! only read the [`Identity`] a request carries.

pub mod access;
pub mod authenticator;
pub mod identity;
pub mod metrics;
pub mod tls;
pub mod tokens;

pub use access::Access;
pub use authenticator::{AuthModes, Authenticator};
pub use identity::Identity;
pub use tls::{ClientCerts, ServerTls, TlsSettings};
pub use tokens::TokenReviewer;

use std::sync::Arc;

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
