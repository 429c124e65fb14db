//! TLS for the xDS port: the serving certificate and key (and the CA that client
//! certificates must chain to) come from PEM files and are re-read when they change, as a
//! rotated Secret or a cert-manager renewal rewrites them. Open connections keep the
//! certificate they were accepted with; a new file that does not load is logged and the
//! previous certificate kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::Identity;
use super::metrics::AuthMetrics;
use crate::shutdown::{self, Shutdown};

/// Files change in bursts (a Secret update swaps a symlink, editors write twice): wait for quiet.
const SETTLE: Duration = Duration::from_millis(200);

/// Whether clients must, may or need not present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCerts {
    NotAsked,
    /// Asked for and verified when presented; a client may authenticate otherwise (a token).
    Optional,
    Required,
}

#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA client certificates must chain to; needed unless `client_certs` is `NotAsked`.
    pub client_ca: Option<PathBuf>,
    pub client_certs: ClientCerts,
}

/// The current TLS configuration of the xDS port; cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    current: watch::Receiver<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads the files (an error if they do not load) and re-reads them on change until `shutdown`.
    pub fn start(settings: TlsSettings, metrics: AuthMetrics, shutdown: Shutdown) -> Result<Self, String> {
        let (config, expiry) = load(&settings)?;
        metrics.certificate_expiry.set(expiry);
        let (sender, current) = watch::channel(config);
        let (changed_tx, changed_rx) = mpsc::channel(1);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                // Full means a reload is pending already, which will read the newest files.
                let _ = changed_tx.try_send(());
            }
        })
        .map_err(|e| format!("cannot watch the TLS files: {e}"))?;
        for dir in watched_dirs(&settings) {
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        }
        let reloader = Reloader { settings, sender, changed: changed_rx, _watcher: watcher, metrics };
        tokio::spawn(reloader.run(shutdown));
        Ok(Self { current })
    }

    /// An acceptor with the certificate in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.borrow().clone())
    }

    /// The same certificate for an HTTPS server that is not gRPC: HTTP/1.1 offered beside h2
    /// (the API server calls webhooks over either).
    pub fn https_acceptor(&self) -> TlsAcceptor {
        let mut config = ServerConfig::clone(&self.current.borrow());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

/// The directories holding the files: a Kubernetes Secret volume replaces a symlinked
/// directory, which a watch on the files themselves would not see.
fn watched_dirs(settings: &TlsSettings) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [Some(&settings.cert), Some(&settings.key), settings.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|file| file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Re-reads the files when their directories change, keeping the watcher alive while it runs.
struct Reloader {
    settings: TlsSettings,
    sender: watch::Sender<Arc<ServerConfig>>,
    changed: mpsc::Receiver<()>,
    _watcher: notify::RecommendedWatcher,
    metrics: AuthMetrics,
}

impl Reloader {
    async fn run(mut self, mut shutdown: Shutdown) {
        let Self { settings, sender, changed, metrics, .. } = &mut self;
        reload_on_change(settings, sender, changed, metrics, &mut shutdown).await;
    }
}

async fn reload_on_change(
    settings: &TlsSettings,
    sender: &watch::Sender<Arc<ServerConfig>>,
    changed: &mut mpsc::Receiver<()>,
    metrics: &AuthMetrics,
    shutdown: &mut Shutdown,
) {
    let mut loaded = fingerprint(settings);
    loop {
        tokio::select! {
            Some(()) = changed.recv() => {}
            () = shutdown::requested(shutdown) => return,
        }
        tokio::time::sleep(SETTLE).await;
        while changed.try_recv().is_ok() {}
        let now = fingerprint(settings);
        if now == loaded {
            continue;
        }
        match load(settings) {
            Ok((config, expiry)) => {
                sender.send_replace(config);
                metrics.certificate_expiry.set(expiry);
                loaded = now;
                metrics.tls_reload("loaded");
                info!(cert = %settings.cert.display(), "xDS TLS files reloaded; new connections use them");
            }
            Err(error) => {
                metrics.tls_reload("failed");
                warn!(%error, "new xDS TLS files do not load; keeping the previous certificate");
            }
        }
    }
}

/// The files' contents, to tell a real change from a touch.
fn fingerprint(settings: &TlsSettings) -> Vec<Option<Vec<u8>>> {
    [Some(&settings.cert), Some(&settings.key), settings.client_ca.as_ref()]
        .into_iter()
        .map(|file| file.and_then(|f| std::fs::read(f).ok()))
        .collect()
}

/// The server configuration, and when its certificate expires (Unix seconds).
fn load(settings: &TlsSettings) -> Result<(Arc<ServerConfig>, f64), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", settings.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", settings.cert.display()));
    }
    // An expired certificate loads, and then every handshake fails: refuse it, and keep the
    // one in force.
    let (_, leaf) = x509_parser::parse_x509_certificate(certs[0].as_ref())
        .map_err(|e| format!("{}: not an X.509 certificate: {e}", settings.cert.display()))?;
    let validity = leaf.validity();
    let expiry = validity.not_after.timestamp() as f64;
    if !validity.is_valid() {
        return Err(format!(
            "{}: the certificate is valid from {} to {}, not now",
            settings.cert.display(),
            validity.not_before,
            validity.not_after
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| format!("{}: {e}", settings.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match settings.client_certs {
        ClientCerts::NotAsked => builder.with_no_client_auth(),
        ClientCerts::Optional | ClientCerts::Required => {
            let ca = settings.client_ca.as_ref().ok_or("client certificates need a client CA (--xds-client-ca)")?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
                roots
                    .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match settings.client_certs {
                ClientCerts::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("{}: {e}", ca.display()))?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", settings.cert.display(), settings.key.display()))?;
    // gRPC speaks HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), expiry))
}

/// The identity in a verified client certificate: its first SPIFFE URI SAN that names a
/// namespace and ServiceAccount.
pub fn peer_identity(connection: &rustls::ServerConnection) -> Option<Identity> {
    let leaf = connection.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Identity::from_spiffe(uri),
        _ => None,
    })
}
