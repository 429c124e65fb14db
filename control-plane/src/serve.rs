//! Wires a source, the pipeline, the cache, the xDS port and the admin servers together.
//! Each subsystem starts from its own `spawn`, given a context that names what it needs;
//! this file only decides what goes where.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::auth::{self, AuthModes, Security, TlsSettings, TokenSettings};
use crate::cache::SnapshotCache;
use crate::error::{Error, Result};
use crate::hds::{self, HdsConfig, HdsHub, HdsServer};
use crate::inject;
use crate::kubernetes::{self, KubernetesConfig};
use crate::manifests;
use crate::ops::admin::{self, AdminState};
use crate::ops::metrics::MetricsRegistry;
use crate::pipeline::{self, PipelineConfig, PipelineMetrics, SourceMetrics};
use crate::port::{self, Limit, Limits, PortMetrics};
use crate::shutdown::{Shutdown, Task};
use crate::xds::{ClientStatus, ProxyRegistry, StreamEnv, XdsMetrics, XdsServer};

/// Streams and connections get this long to close after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where Services, EndpointSlices and HealthProbes come from.
#[derive(Clone)]
pub enum Source {
    /// A directory of manifests, watched for changes.
    Manifests(PathBuf),
    /// The Kubernetes API.
    Kubernetes(KubernetesSource),
}

/// What to watch in the Kubernetes API, and through which client.
#[derive(Clone, Default)]
pub struct KubernetesSource {
    /// Without a client, the in-cluster or kubeconfig one is used.
    pub client: Option<kube::Client>,
    pub namespaces: Vec<String>,
    pub service_selector: Option<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Manifests(dir) => write!(f, "manifests {}", dir.display()),
            Source::Kubernetes(k) => {
                write!(f, "kubernetes namespaces={:?} selector={:?}", k.namespaces, k.service_selector)
            }
        }
    }
}

/// A source with everything it needs to run: checked, and with its client.
enum Resolved {
    Manifests(PathBuf),
    Kubernetes(KubernetesConfig),
}

impl Source {
    async fn resolve(self) -> Result<Resolved> {
        match self {
            Source::Manifests(dir) if !dir.is_dir() => Err(Error::ManifestDir {
                path: dir,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            }),
            Source::Manifests(dir) => Ok(Resolved::Manifests(dir)),
            Source::Kubernetes(source) => {
                let client = match source.client {
                    Some(client) => client,
                    None => kube::Client::try_default().await.map_err(Error::KubeConfig)?,
                };
                let namespaces = source.namespaces;
                Ok(Resolved::Kubernetes(KubernetesConfig {
                    client,
                    namespaces,
                    service_selector: source.service_selector,
                }))
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub source: Source,
    pub xds_addr: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics`: what kubelet and Prometheus reach.
    pub admin_addr: SocketAddr,
    /// `/debug/*` and the log level: every proxy's state and the whole model, so loopback by default.
    pub debug_addr: SocketAddr,
    pub pipeline: PipelineConfig,
    /// Used when `pipeline.translate.active_health_checks` is `hds` or `both`.
    pub hds: HdsConfig,
    /// What one client may cost on the xDS port.
    pub limits: Limits,
    /// TLS and client authentication on the xDS port.
    pub xds_security: XdsSecurity,
    /// The sidecar injection webhook, when it is served.
    pub inject: Option<InjectConfig>,
}

impl InjectConfig {
    /// The template with the CA read from `ca_file`.
    async fn template_with_ca(&self) -> Result<inject::SidecarTemplate> {
        let file = self.ca_file.display();
        let ca_pem = tokio::fs::read_to_string(&self.ca_file)
            .await
            .map_err(|e| Error::Config(format!("--inject-ca-file {file}: {e}")))?;
        if !ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::Config(format!("--inject-ca-file {file}: no PEM certificate in it")));
        }
        Ok(inject::SidecarTemplate { ca_pem, ..self.template.clone() })
    }
}

/// The sidecar injection webhook: where it listens (HTTPS, with the xDS port's certificate)
/// and what it injects.
#[derive(Clone, Debug)]
pub struct InjectConfig {
    pub addr: SocketAddr,
    /// Its `ca_pem` is read from `ca_file` at start.
    pub template: inject::SidecarTemplate,
    /// The CA sidecars trust for the xDS port.
    pub ca_file: PathBuf,
}

/// How the xDS port proves itself and who may use it.
#[derive(Clone, Default)]
pub struct XdsSecurity {
    /// The Kubernetes client TokenReviews go through when the source has none (manifests);
    /// by default the in-cluster or KUBECONFIG one.
    pub review_client: Option<kube::Client>,
    pub tls: Option<TlsSettings>,
    pub auth: AuthModes,
    /// How ServiceAccount tokens are verified (`token` auth).
    pub tokens: TokenSettings,
    /// Who may read every proxy's state through CSDS, when clients authenticate.
    pub admin_identities: Vec<String>,
}

impl std::fmt::Debug for XdsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsSecurity")
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("tokens", &self.tokens)
            .field("admin_identities", &self.admin_identities)
            .finish_non_exhaustive()
    }
}

impl XdsSecurity {
    /// Refuses combinations that would not protect what they claim to.
    fn check(&self) -> Result<()> {
        if self.auth.any() && self.tls.is_none() {
            return Err(Error::Config(
                "--xds-auth mtls or token needs TLS (--xds-tls-cert and --xds-tls-key): a token sent in the clear can be replayed, and a certificate needs TLS to be presented".into(),
            ));
        }
        if self.auth.mtls && self.tls.as_ref().is_some_and(|t| t.client_ca.is_none()) {
            return Err(Error::Config("--xds-auth mtls needs --xds-client-ca".into()));
        }
        Ok(())
    }
}

/// A started control plane.
pub struct Running {
    pub xds_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub debug_addr: SocketAddr,
    /// Present when the injection webhook is served.
    pub webhook_addr: Option<SocketAddr>,
    pub cache: Arc<SnapshotCache>,
    /// Every subsystem's metrics, as `/metrics` serves them.
    pub metrics: Arc<MetricsRegistry>,
    pub xds_metrics: Arc<XdsMetrics>,
    pub proxies: Arc<ProxyRegistry>,
    pub models: crate::pipeline::ModelReceiver,
    /// Present when HDS is on.
    pub hds: Option<Arc<HdsHub>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(&'static str, Task)>,
}

/// The three listening sockets, bound before anything starts so a taken port fails at once.
struct Bound {
    xds: TcpListener,
    admin: TcpListener,
    debug: TcpListener,
    webhook: Option<TcpListener>,
}

impl Bound {
    async fn bind(config: &ServeConfig) -> Result<Self> {
        async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
            TcpListener::bind(addr).await.map_err(|source| Error::Bind { what, addr, source })
        }
        Ok(Self {
            xds: bind("xDS gRPC server", config.xds_addr).await?,
            admin: bind("admin server", config.admin_addr).await?,
            debug: bind("debug server", config.debug_addr).await?,
            webhook: match &config.inject {
                Some(inject) => Some(bind("injection webhook", inject.addr).await?),
                None => None,
            },
        })
    }
}

fn local_addr(what: &'static str, listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|source| Error::Serve { what, source })
}

/// Binds every port and starts every subsystem; serving begins once the source's first
/// state is translated.
pub async fn start(config: ServeConfig) -> Result<Running> {
    config.xds_security.check()?;
    let source = config.source.clone().resolve().await?;
    let bound = Bound::bind(&config).await?;
    let (xds_addr, admin_addr, debug_addr) = (
        local_addr("xDS gRPC server", &bound.xds)?,
        local_addr("admin server", &bound.admin)?,
        local_addr("debug server", &bound.debug)?,
    );
    let (shutdown_tx, shutdown) = watch::channel(false);
    let cache = Arc::new(SnapshotCache::default());
    // Each subsystem registers its own metrics; the registry is sealed before serving.
    let mut registry = MetricsRegistry::root();
    let port_metrics = PortMetrics::register(&mut registry);
    let xds_metrics = Arc::new(XdsMetrics::register(&mut registry));
    let source_metrics = SourceMetrics::register(&mut registry);
    let pipeline_metrics = PipelineMetrics::register(&mut registry);
    let hds_metrics = hds::metrics::HdsMetrics::register(&mut registry);
    let kube_metrics =
        matches!(source, Resolved::Kubernetes(_)).then(|| kubernetes::metrics::KubeMetrics::register(&mut registry));
    let manifest_metrics =
        matches!(source, Resolved::Manifests(_)).then(|| manifests::ManifestMetrics::register(&mut registry));
    let secured = config.xds_security.auth.any() || config.xds_security.tls.is_some();
    let auth_metrics = secured.then(|| auth::metrics::AuthMetrics::register(&mut registry));

    let sidecar_template = match &config.inject {
        Some(inject) => Some(inject.template_with_ca().await?),
        None => None,
    };
    let proxies = Arc::new(ProxyRegistry::with_template(sidecar_template.as_ref().map(inject::SidecarTemplate::hash)));
    let inject_metrics =
        sidecar_template.is_some().then(|| inject::InjectMetrics::register(&mut registry, proxies.clone()));
    registry.register_collector(Box::new(crate::xds::proxies::ProxiesCollector(proxies.clone())));
    let metrics = Arc::new(MetricsRegistry::new(registry));

    let (states, states_rx) = watch::channel(None);
    let (models, models_rx) = watch::channel(None);
    let mut tasks = Vec::new();

    let uses_hds = config.pipeline.translate.active_health_checks.uses_hds();
    if uses_hds && config.hds.checkers.enforced && config.hds.checkers.identities.is_empty() {
        warn!(
            "clients authenticate but --hds-checker-identities is empty: no checker may connect, and HDS checks nothing"
        );
    }
    let hds = uses_hds.then(|| {
        let (hub, task) = hds::spawn(hds::HdsContext {
            config: config.hds.clone(),
            metrics: hds_metrics,
            models: models_rx.clone(),
            shutdown: shutdown.clone(),
        });
        tasks.push(("HDS", task));
        hub
    });
    let verdicts = || hds.as_ref().map(|hub| hub.verdicts());

    let review_client = match &source {
        Resolved::Kubernetes(kube) => Some(kube.client.clone()),
        Resolved::Manifests(_) => config.xds_security.review_client.clone(),
    };
    let source_task = match source {
        Resolved::Manifests(dir) => manifests::spawn(manifests::ManifestsContext {
            dir,
            states,
            metrics: source_metrics,
            scans: manifest_metrics.unwrap_or_default(),
            shutdown: shutdown.clone(),
        }),
        Resolved::Kubernetes(kube) => kubernetes::spawn(kubernetes::KubernetesContext {
            config: kube,
            states,
            models: models_rx.clone(),
            verdicts: verdicts(),
            source_metrics,
            metrics: kube_metrics.unwrap_or_default(),
            shutdown: shutdown.clone(),
        }),
    };
    tasks.push(("source", source_task));
    tasks.push((
        "pipeline",
        pipeline::spawn(pipeline::PipelineContext {
            config: config.pipeline.clone(),
            states: states_rx,
            verdicts: verdicts(),
            cache: cache.clone(),
            models,
            metrics: pipeline_metrics,
            shutdown: shutdown.clone(),
        }),
    ));

    let security = auth::start(auth::AuthContext {
        tls: config.xds_security.tls.clone(),
        modes: config.xds_security.auth,
        tokens: config.xds_security.tokens.clone(),
        reviews_per_peer: u32::try_from(config.limits.get(Limit::TokenReviewsPerPeer)).unwrap_or(u32::MAX),
        admin_identities: config.xds_security.admin_identities.clone(),
        review_client,
        metrics: auth_metrics.unwrap_or_default(),
        shutdown: shutdown.clone(),
    })
    .await?;
    tasks.push((
        "xDS port",
        spawn_port(XdsPort {
            listener: bound.xds,
            cache: cache.clone(),
            xds_metrics: xds_metrics.clone(),
            port_metrics,
            proxies: proxies.clone(),
            hds: hds.clone(),
            limits: config.limits,
            security,
            shutdown: shutdown.clone(),
        }),
    ));

    let webhook_addr = match (bound.webhook, sidecar_template) {
        (Some(listener), Some(template)) => {
            let webhook_addr = local_addr("injection webhook", &listener)?;
            // The webhook proves itself with the xDS port's certificate: one certificate,
            // one renewal, one CA in the webhook configuration.
            let Some(xds_tls) = &config.xds_security.tls else {
                return Err(Error::Config("--webhook-addr needs --xds-tls-cert and --xds-tls-key: the API server calls webhooks over HTTPS only".into()));
            };
            let settings =
                TlsSettings { client_ca: None, client_certs: auth::ClientCerts::NotAsked, ..xds_tls.clone() };
            let tls = auth::ServerTls::start(settings, Default::default(), shutdown.clone()).map_err(Error::Config)?;
            tasks.push((
                "injection webhook",
                inject::server::spawn(inject::server::WebhookContext {
                    listener,
                    tls,
                    template,
                    metrics: inject_metrics.clone().unwrap_or_default(),
                    shutdown: shutdown.clone(),
                }),
            ));
            Some(webhook_addr)
        }
        _ => None,
    };

    let admin = AdminState {
        cache: cache.clone(),
        metrics: metrics.clone(),
        proxies: proxies.clone(),
        models: models_rx.clone(),
        hds: hds.clone(),
    };
    tasks.push((
        "debug server",
        admin::spawn("debug server", bound.debug, admin::debug_router(admin.clone()), shutdown.clone()),
    ));
    tasks.push(("admin server", admin::spawn("admin server", bound.admin, admin::router(admin), shutdown)));
    info!(%xds_addr, %admin_addr, %debug_addr, source = ?config.source, "edgexds started");
    Ok(Running {
        xds_addr,
        admin_addr,
        debug_addr,
        webhook_addr,
        cache,
        metrics,
        xds_metrics,
        proxies,
        models: models_rx,
        hds,
        shutdown: shutdown_tx,
        tasks,
    })
}

impl Running {
    /// Runs until `stop` resolves or a subsystem fails, then shuts everything down.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Result<()> {
        let names: Vec<&'static str> = self.tasks.iter().map(|(name, _)| *name).collect();
        let ended = futures::future::select_all(self.tasks.iter_mut().map(|(_, task)| task));
        let outcome = tokio::select! {
            () = stop => Ok(()),
            (done, index, _) = ended => {
                let what = names[index];
                match done {
                    Ok(Ok(())) => Err(Error::Ended(what)),
                    Ok(Err(error)) => Err(error),
                    Err(panicked) => Err(Error::Task { what, source: panicked }),
                }
            }
        };
        self.stop().await;
        outcome
    }

    /// Closes every stream with a status and waits (bounded) for every subsystem to end.
    pub async fn stop(&mut self) {
        self.shutdown.send_replace(true);
        let drain = async {
            for (_, task) in &mut self.tasks {
                // One that ended already was awaited by `run_until`.
                if !task.is_finished() {
                    let _ = task.await;
                }
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            warn!("shutdown grace period over; aborting remaining tasks");
            for (_, task) in &self.tasks {
                task.abort();
            }
        }
        info!("edgexds stopped");
    }
}

/// Everything the xDS port serves, and what it needs to serve it.
struct XdsPort {
    listener: TcpListener,
    cache: Arc<SnapshotCache>,
    xds_metrics: Arc<XdsMetrics>,
    port_metrics: PortMetrics,
    proxies: Arc<ProxyRegistry>,
    hds: Option<Arc<HdsHub>>,
    limits: Limits,
    security: Security,
    shutdown: Shutdown,
}

/// Serves xDS, CSDS, HDS (when on) and gRPC health on the xDS port.
fn spawn_port(port: XdsPort) -> Task {
    let limit_hits = port.port_metrics.limit_hits.clone();
    let env = StreamEnv::new(port.limits, port.xds_metrics, limit_hits.clone(), port.proxies.clone());
    let xds = XdsServer::new(port.cache.clone(), port.shutdown.clone(), env);
    let admins = auth::Access::new(port.security.auth.enforced(), port.security.admin_identities.clone());
    let csds = ClientStatus::new(port.proxies, port.cache.clone())
        .with_limits(port.limits, limit_hits.clone())
        .with_access(admins);
    let (health, health_service) = tonic_health::server::health_reporter();
    // gRPC health turns SERVING with readiness, like /readyz.
    let mut ready = crate::cache::SnapshotSource::subscribe(&*port.cache);
    tokio::spawn(async move {
        if ready.wait_for(Option::is_some).await.is_ok() {
            health.set_service_status("", tonic_health::ServingStatus::Serving).await;
        }
    });
    let grpc = tonic::service::Routes::new(health_service).add_service(csds.server());
    let grpc = match port.hds {
        Some(hub) => {
            let checkers = HdsServer::new(hub, port.shutdown.clone()).with_limits(port.limits, limit_hits);
            grpc.add_service(checkers.server())
        }
        None => grpc,
    };
    let router = grpc
        .into_axum_router()
        .layer(axum::middleware::map_response(port::client_faults::client_faults))
        .merge(xds.router());
    let incoming = TcpListenerStream::new(port.listener).filter_map(|accepted| async move {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, typically: back off instead of spinning.
                warn!(error = %e, "accepting an xDS connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        Some((stream, peer))
    });
    let serving = port::listener::Serving {
        router,
        limits: port.limits,
        metrics: port.port_metrics,
        security: port.security,
        shutdown: port.shutdown,
    };
    tokio::spawn(async move {
        serving.serve(Box::pin(incoming)).await;
        Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("interrupted, shutting down"),
        () = term => info!("SIGTERM received, shutting down"),
    }
}
