//! Wires a source, the pipeline, the cache, the xDS server and the admin server together.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::auth::metrics::AuthMetrics;
use crate::auth::{Access, AuthModes, Authenticator, Security, ServerTls, TlsSettings, TokenReviewer};
use crate::cache::SnapshotCache;
use crate::error::{Error, Result};
use crate::hds::metrics::HdsMetrics;
use crate::hds::{self, HdsConfig, HdsHub, HdsServer};
use crate::kubernetes::metrics::KubeMetrics;
use crate::kubernetes::status_writer;
use crate::kubernetes::watch::KubernetesConfig;
use crate::model::Model;
use crate::ops::admin::AdminState;
use crate::ops::metrics::MetricsRegistry;
use crate::pipeline::{self, PipelineConfig};
use crate::pipeline::{PipelineMetrics, SourceMetrics};
use crate::xds::{ClientStatus, ProxyRegistry, XdsLimits, XdsMetrics, XdsServer};

/// Streams and connections get this long to close after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where Services, EndpointSlices and HealthProbes come from.
#[derive(Clone)]
pub enum Source {
    /// A directory of manifests, watched for changes.
    Manifests(PathBuf),
    /// The Kubernetes API. Without a client, the in-cluster or kubeconfig one is used.
    Kubernetes { client: Option<kube::Client>, namespaces: Vec<String>, service_selector: Option<String> },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Manifests(dir) => write!(f, "manifests {}", dir.display()),
            Source::Kubernetes { namespaces, service_selector, .. } => {
                write!(f, "kubernetes namespaces={namespaces:?} selector={service_selector:?}")
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
    pub xds_limits: XdsLimits,
    /// TLS and client authentication on the xDS port.
    pub xds_security: XdsSecurity,
}

/// How the xDS port proves itself and who may use it.
#[derive(Clone, Default)]
pub struct XdsSecurity {
    /// The Kubernetes client TokenReviews go through when the source has none (manifests);
    /// by default the in-cluster or KUBECONFIG one.
    pub review_client: Option<kube::Client>,
    pub tls: Option<TlsSettings>,
    pub auth: AuthModes,
    /// The audiences a ServiceAccount token must be for (`token` auth).
    pub token_audiences: Vec<String>,
    /// Who may read every proxy's state through CSDS, when clients authenticate.
    pub admin_identities: Vec<String>,
}

impl std::fmt::Debug for XdsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsSecurity")
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("token_audiences", &self.token_audiences)
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
    pub cache: Arc<SnapshotCache>,
    /// Every subsystem's metrics, as `/metrics` serves them.
    pub metrics: Arc<MetricsRegistry>,
    pub xds_metrics: Arc<XdsMetrics>,
    pub proxies: Arc<ProxyRegistry>,
    pub models: watch::Receiver<Option<Arc<Model>>>,
    /// Present when HDS is on.
    pub hds: Option<Arc<HdsHub>>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<Result<()>>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { what, addr, source })
}

/// Binds both ports and starts every task; serving begins once the source's first state is translated.
pub async fn start(config: ServeConfig) -> Result<Running> {
    config.xds_security.check()?;
    let kube_client = match &config.source {
        Source::Manifests(dir) if !dir.is_dir() => {
            return Err(Error::ManifestDir {
                path: dir.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            });
        }
        Source::Manifests(_) => None,
        Source::Kubernetes { client: Some(client), .. } => Some(client.clone()),
        Source::Kubernetes { client: None, .. } => Some(kube::Client::try_default().await.map_err(Error::KubeConfig)?),
    };
    let xds_listener = bind("xDS gRPC server", config.xds_addr).await?;
    let admin_listener = bind("admin server", config.admin_addr).await?;
    let debug_listener = bind("debug server", config.debug_addr).await?;
    let xds_addr = xds_listener.local_addr().map_err(Error::Admin)?;
    let admin_addr = admin_listener.local_addr().map_err(Error::Admin)?;
    let debug_addr = debug_listener.local_addr().map_err(Error::Admin)?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let cache = Arc::new(SnapshotCache::default());
    // Each subsystem registers its own metrics; the registry is sealed before serving.
    let mut registry = MetricsRegistry::root();
    let xds_metrics = Arc::new(XdsMetrics::register(&mut registry));
    let hds_metrics = HdsMetrics::register(&mut registry);
    let source_metrics = SourceMetrics::register(&mut registry);
    let kube_metrics = matches!(config.source, Source::Kubernetes { .. }).then(|| KubeMetrics::register(&mut registry));
    let pipeline_metrics = PipelineMetrics::register(&mut registry);
    let secured = config.xds_security.auth.any() || config.xds_security.tls.is_some();
    let auth_metrics = secured.then(|| AuthMetrics::register(&mut registry));
    let metrics = Arc::new(MetricsRegistry::new(registry));
    let proxies = Arc::new(ProxyRegistry::default());
    let (states, states_rx) = watch::channel(None);
    let (models, models_rx) = watch::channel(None);
    let mut tasks = JoinSet::new();
    if config.pipeline.translate.active_health_checks.uses_hds()
        && config.hds.checkers.enforced
        && config.hds.checkers.identities.is_empty()
    {
        warn!(
            "clients authenticate but --hds-checker-identities is empty: no checker may connect, and HDS checks nothing"
        );
    }
    let hds = config.pipeline.translate.active_health_checks.uses_hds().then(|| {
        let hub = HdsHub::new(config.hds, hds_metrics);
        tasks.spawn(hds::run(hub.clone(), models_rx.clone(), shutdown_rx.clone()).map(Ok));
        hub
    });

    match (&config.source, kube_client.clone()) {
        (Source::Kubernetes { namespaces, service_selector, .. }, Some(client)) => {
            let kube = KubernetesConfig {
                client: client.clone(),
                namespaces: namespaces.clone(),
                service_selector: service_selector.clone(),
            };
            let (statuses, statuses_rx) = watch::channel(Default::default());
            let kube_metrics = kube_metrics.unwrap_or_default();
            let watch_metrics = kube_metrics.clone();
            tasks.spawn(crate::kubernetes::watch::run(
                kube,
                states,
                statuses,
                source_metrics,
                watch_metrics,
                shutdown_rx.clone(),
            ));
            let (models, shutdown) = (models_rx.clone(), shutdown_rx.clone());
            let verdicts = hds.as_ref().map(|hub| hub.verdicts());
            tasks.spawn(async move {
                status_writer::run(client, models, verdicts, statuses_rx, kube_metrics, shutdown).await;
                Ok(())
            });
        }
        (Source::Manifests(dir), _) => {
            tasks.spawn(crate::manifests::dir::run(dir.clone(), states, source_metrics, shutdown_rx.clone()));
        }
        (Source::Kubernetes { .. }, None) => unreachable!("a Kubernetes source always has a client here"),
    }
    tasks.spawn({
        let cache = cache.clone();
        let shutdown = shutdown_rx.clone();
        let metrics = pipeline_metrics;
        let verdicts = hds.as_ref().map(|hub| hub.verdicts());
        async move {
            pipeline::run(config.pipeline, states_rx, verdicts, cache, models, metrics, shutdown).await;
            Ok(())
        }
    });
    let checkers = hds.clone().map(|hub| HdsServer::new(hub, shutdown_rx.clone()).with_limits(config.xds_limits));
    let security = security(&config.xds_security, kube_client.clone(), auth_metrics, shutdown_rx.clone()).await?;
    tasks.spawn(serve_xds(
        xds_listener,
        cache.clone(),
        (xds_metrics.clone(), proxies.clone()),
        checkers,
        (config.xds_limits, security),
        shutdown_rx.clone(),
    ));
    let admin = AdminState {
        cache: cache.clone(),
        metrics: metrics.clone(),
        proxies: proxies.clone(),
        models: models_rx.clone(),
        hds: hds.clone(),
    };
    tasks.spawn(serve_http(debug_listener, crate::ops::admin::debug_router(admin.clone()), shutdown_rx.clone()));
    tasks.spawn(serve_http(admin_listener, crate::ops::admin::router(admin), shutdown_rx));
    info!(%xds_addr, %admin_addr, %debug_addr, source = ?config.source, "edgexds started");
    Ok(Running {
        xds_addr,
        admin_addr,
        debug_addr,
        cache,
        metrics,
        xds_metrics,
        proxies,
        models: models_rx,
        hds,
        shutdown,
        tasks,
    })
}

impl Running {
    /// Runs until `stop` resolves or a task fails, then shuts everything down.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Result<()> {
        let outcome = tokio::select! {
            () = stop => Ok(()),
            Some(done) = self.tasks.join_next() => done.map_err(Error::from).and_then(|r| r),
        };
        self.stop().await;
        outcome
    }

    /// Closes every stream with a status and waits (bounded) for tasks to end.
    pub async fn stop(&mut self) {
        self.shutdown.send_replace(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            warn!("shutdown grace period over; aborting remaining tasks");
            self.tasks.abort_all();
        }
        info!("edgexds stopped");
    }
}

/// TLS from its files (watched for rotation) and the authenticator; a token reviewer needs a
/// Kubernetes client, which the manifests source otherwise does without.
async fn security(
    config: &XdsSecurity,
    kube_client: Option<kube::Client>,
    metrics: Option<AuthMetrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<Security> {
    let metrics = metrics.unwrap_or_default();
    let tls = match &config.tls {
        Some(settings) => Some(ServerTls::start(settings.clone(), metrics.clone(), shutdown).map_err(Error::Tls)?),
        None => None,
    };
    let tokens = if config.auth.token {
        let client = match kube_client.or_else(|| config.review_client.clone()) {
            Some(client) => client,
            None => kube::Client::try_default().await.map_err(Error::KubeConfig)?,
        };
        Some(TokenReviewer::new(client, config.token_audiences.clone(), metrics.clone()))
    } else {
        None
    };
    Ok(Security {
        tls,
        auth: Authenticator::new(config.auth, tokens, metrics),
        admin_identities: config.admin_identities.clone(),
    })
}

async fn serve_xds(
    listener: TcpListener,
    cache: Arc<SnapshotCache>,
    (metrics, proxies): (Arc<XdsMetrics>, Arc<ProxyRegistry>),
    checkers: Option<HdsServer>,
    (limits, security): (XdsLimits, Security),
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let xds = XdsServer::new(cache.clone(), shutdown.clone(), metrics.clone(), proxies.clone(), limits);
    let admins = Access::new(security.auth.enforced(), security.admin_identities.clone());
    let csds = ClientStatus::new(proxies, cache.clone()).with_limits(&limits, metrics.clone()).with_access(admins);
    let (health, health_service) = tonic_health::server::health_reporter();
    // gRPC health turns SERVING with readiness, like /readyz.
    let mut ready = crate::cache::SnapshotSource::subscribe(&*cache);
    tokio::spawn(async move {
        if ready.wait_for(Option::is_some).await.is_ok() {
            health.set_service_status("", tonic_health::ServingStatus::Serving).await;
        }
    });
    let grpc = tonic::service::Routes::new(health_service).add_service(csds.server());
    let grpc = match checkers {
        Some(checkers) => grpc.add_service(checkers.server()),
        None => grpc,
    };
    let router = grpc.into_axum_router().merge(xds.router());
    let incoming = TcpListenerStream::new(listener).filter_map(|accepted| async move {
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
    crate::xds::listener::serve(Box::pin(incoming), router, shutdown, limits, metrics, security).await;
    Ok(())
}

async fn serve_http(listener: TcpListener, router: axum::Router, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            crate::shutdown::requested(&mut shutdown).await;
        })
        .await
        .map_err(Error::Admin)
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
