//! The binary's command line; every flag can also come from an `EDGEXDS_*` environment
//! variable. The per-client limits' flags come from their one definition, [`Limits`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use edgexds::auth::{Access, AuthModes, ClientCerts, TlsSettings, TokenSettings};
use edgexds::hds::HdsConfig;
use edgexds::inject::SidecarTemplate;
use edgexds::ops::telemetry::LogFormat;
use edgexds::pipeline::{MAX_DELAY, PipelineConfig};
use edgexds::port::Limits;
use edgexds::serve::{InjectConfig, KubernetesSource, ServeConfig, Source, XdsSecurity};
use edgexds::translate::{ActiveHealthChecks, TranslateOptions};

#[derive(Debug, Parser)]
#[command(name = "edgexds", version, about = "Lightweight Envoy delta-xDS control plane for Kubernetes edge clusters")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve delta xDS (ADS, CDS, EDS) to Envoys.
    Serve(Box<ServeArgs>),
    /// Print the HealthProbe CustomResourceDefinition (YAML) generated from the code.
    Crd,
    /// Print the per-client limits as the README's Markdown table.
    Limits,
    /// Show every connected proxy and whether it is in sync; exits 1 if any proxy NACKed.
    ProxyStatus {
        /// The debug server of an edgexds instance (`--debug-addr`; from outside the pod,
        /// through `kubectl port-forward`).
        #[arg(long, alias = "admin", env = "EDGEXDS_DEBUG_URL", default_value = "http://127.0.0.1:19001")]
        debug_url: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of Kubernetes manifests (Service, EndpointSlice, HealthProbe) to serve and watch.
    /// Without it, edgexds watches the Kubernetes API (in-cluster config, else KUBECONFIG or ~/.kube/config).
    #[arg(long, env = "EDGEXDS_MANIFESTS", value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Kubernetes namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long, env = "EDGEXDS_NAMESPACES", value_delimiter = ',', conflicts_with = "manifests")]
    pub namespaces: Vec<String>,
    /// Label selector for the Services to serve, e.g. `edgexds.io/expose=true`.
    #[arg(long, env = "EDGEXDS_SELECTOR", conflicts_with = "manifests")]
    pub selector: Option<String>,
    /// Address of the xDS gRPC server.
    #[arg(long, env = "EDGEXDS_XDS_ADDR", default_value = "0.0.0.0:18000")]
    pub xds_addr: SocketAddr,
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "EDGEXDS_ADMIN_ADDR", default_value = "0.0.0.0:19000")]
    pub admin_addr: SocketAddr,
    /// Address of the debug server (/debug/*: every proxy's state, the model, the log level).
    /// Loopback by default: reach it with `kubectl port-forward`.
    #[arg(long, env = "EDGEXDS_DEBUG_ADDR", default_value = "127.0.0.1:19001")]
    pub debug_addr: SocketAddr,
    /// Quiet time after a source change before pushing (at most 1s), e.g. 100ms.
    #[arg(long, env = "EDGEXDS_DEBOUNCE", default_value = "100ms", value_parser = parse_debounce)]
    pub debounce: Duration,
    /// Send not-ready endpoints as UNHEALTHY instead of leaving them out.
    #[arg(long, env = "EDGEXDS_SEND_UNHEALTHY_ENDPOINTS")]
    pub send_unhealthy_endpoints: bool,
    /// Also publish endpoint metadata as typed_filter_metadata (edgexds.v1alpha1.EndpointExtension).
    #[arg(long, env = "EDGEXDS_TYPED_METADATA")]
    pub typed_metadata: bool,
    /// Who probes endpoints: every sidecar (cds), assigned HDS checkers only (hds), or both.
    #[arg(long, env = "EDGEXDS_ACTIVE_HEALTH_CHECKS", default_value = "cds", value_parser = parse_active_health_checks)]
    pub active_health_checks: ActiveHealthChecks,
    /// How many HDS checkers probe each endpoint.
    #[arg(long, env = "EDGEXDS_HDS_CHECKERS_PER_ENDPOINT", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub hds_checkers_per_endpoint: u16,
    /// How often HDS checkers report endpoint health, e.g. 500ms (100ms..=5s).
    #[arg(long, env = "EDGEXDS_HDS_REPORT_INTERVAL", default_value = "500ms", value_parser = parse_report_interval)]
    pub hds_report_interval: Duration,
    /// Where sidecars' outbound HTTP listener (LDS `outbound`) listens, e.g. 127.0.0.1:15001.
    #[arg(long, env = "EDGEXDS_OUTBOUND_LISTENER", default_value = "127.0.0.1:15001")]
    pub outbound_listener: SocketAddr,
    /// The cluster's DNS domain: Services answer to svc.ns.svc.<domain> in routes and gRPC targets.
    #[arg(long, env = "EDGEXDS_CLUSTER_DOMAIN", default_value = "cluster.local", value_parser = parse_cluster_domain)]
    pub cluster_domain: String,
    /// PEM certificate (chain) the xDS port serves TLS with; re-read when it changes.
    #[arg(long, env = "EDGEXDS_XDS_TLS_CERT", value_name = "FILE", requires = "xds_tls_key")]
    pub xds_tls_cert: Option<PathBuf>,
    /// PEM private key of --xds-tls-cert; re-read when it changes.
    #[arg(long, env = "EDGEXDS_XDS_TLS_KEY", value_name = "FILE", requires = "xds_tls_cert")]
    pub xds_tls_key: Option<PathBuf>,
    /// PEM CA bundle client certificates must chain to (--xds-auth mtls).
    #[arg(long, env = "EDGEXDS_XDS_CLIENT_CA", value_name = "FILE")]
    pub xds_client_ca: Option<PathBuf>,
    /// How clients of the xDS port authenticate, comma-separated, any one sufficing:
    /// none, mtls (a client certificate with a SPIFFE ID), token (a ServiceAccount token checked by TokenReview).
    #[arg(long, env = "EDGEXDS_XDS_AUTH", value_delimiter = ',', default_value = "none", value_parser = ["none", "mtls", "token"])]
    pub xds_auth: Vec<String>,
    /// Most of a cluster's ready endpoints that HDS checkers alone may take out, in percent;
    /// beyond it their verdicts for that cluster are ignored (fail open).
    #[arg(long, env = "EDGEXDS_HDS_MAX_UNHEALTHY_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub hds_max_unhealthy_percent: u8,
    /// Identities (namespace/serviceaccount, comma-separated) that may open an HDS stream
    /// when clients authenticate; nobody else may check endpoints.
    #[arg(long, env = "EDGEXDS_HDS_CHECKER_IDENTITIES", value_delimiter = ',')]
    pub hds_checker_identities: Vec<String>,
    /// Identities (namespace/serviceaccount, comma-separated) that may read every proxy's
    /// state through CSDS when clients authenticate.
    #[arg(long, env = "EDGEXDS_ADMIN_IDENTITIES", value_delimiter = ',')]
    pub admin_identities: Vec<String>,
    /// Audience a ServiceAccount token must be issued for (--xds-auth token).
    #[arg(long, env = "EDGEXDS_XDS_TOKEN_AUDIENCE", default_value = "edgexds")]
    pub xds_token_audience: String,
    /// How long a token's TokenReview is trusted before it is reviewed again; tokens of
    /// open streams are reviewed again in the background, and a refused one ends them. A
    /// revoked token stops working within this plus the API server's own 10s cache.
    #[arg(long, env = "EDGEXDS_TOKEN_RECHECK_INTERVAL", default_value = "30s", value_parser = parse_recheck)]
    pub token_recheck_interval: Duration,
    /// What one client may cost on the xDS port: a flag per limit.
    #[command(flatten)]
    pub limits: Limits,
    /// The sidecar injection webhook.
    #[command(flatten)]
    pub inject: InjectArgs,
    /// Log output format.
    #[arg(long, env = "EDGEXDS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `edgexds=debug`.
    #[arg(long, env = "EDGEXDS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Serve the sidecar injection webhook here (HTTPS with --xds-tls-cert), e.g. 0.0.0.0:15443.
    #[arg(long, env = "EDGEXDS_WEBHOOK_ADDR", requires_all = ["inject_xds_address", "inject_ca_file", "xds_tls_cert"])]
    pub webhook_addr: Option<SocketAddr>,
    /// The sidecar's Envoy image.
    #[arg(long, env = "EDGEXDS_INJECT_IMAGE", default_value = "envoyproxy/envoy:v1.40.0")]
    pub inject_image: String,
    /// The sidecar's container resources, as JSON.
    #[arg(long, env = "EDGEXDS_INJECT_RESOURCES", value_parser = parse_resources,
          default_value = r#"{"requests":{"cpu":"50m","memory":"64Mi"},"limits":{"memory":"256Mi"}}"#)]
    pub inject_resources: serde_json::Value,
    /// An extra argument for every sidecar's Envoy; repeat for more.
    #[arg(long = "inject-arg", env = "EDGEXDS_INJECT_ARGS", value_delimiter = ' ', allow_hyphen_values = true)]
    pub inject_args: Vec<String>,
    /// The xDS address sidecars dial, `host:port`: the edgexds Service's name, which the
    /// xDS certificate carries.
    #[arg(long, env = "EDGEXDS_INJECT_XDS_ADDRESS")]
    pub inject_xds_address: Option<String>,
    /// The CA (PEM) sidecars trust for the xDS port; it travels inside each sidecar's bootstrap.
    #[arg(long, env = "EDGEXDS_INJECT_CA_FILE", value_name = "FILE")]
    pub inject_ca_file: Option<PathBuf>,
}

fn parse_resources(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !value.is_object() {
        return Err("must be a JSON object, e.g. {\"requests\":{\"cpu\":\"50m\"}}".into());
    }
    Ok(value)
}

fn parse_debounce(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 100ms or 1s)"))?;
    if value > MAX_DELAY {
        return Err(format!("must be at most {}", humantime::format_duration(MAX_DELAY)));
    }
    Ok(value)
}

/// Between 1s and 1h: rechecking more often than the API server's own cache (10s) learns
/// nothing sooner, and an hour is how long the chart's tokens live.
fn parse_recheck(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 30s or 1m)"))?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&value) {
        return Err("must be between 1s and 1h".into());
    }
    Ok(value)
}

fn parse_active_health_checks(text: &str) -> Result<ActiveHealthChecks, String> {
    match text {
        "cds" => Ok(ActiveHealthChecks::Cds),
        "hds" => Ok(ActiveHealthChecks::Hds),
        "both" => Ok(ActiveHealthChecks::Both),
        other => Err(format!("{other:?} is not one of cds, hds, both")),
    }
}

fn parse_report_interval(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 500ms or 1s)"))?;
    if !(Duration::from_millis(100)..=Duration::from_secs(5)).contains(&value) {
        return Err("must be between 100ms and 5s".into());
    }
    Ok(value)
}

impl ServeArgs {
    pub fn to_config(&self) -> ServeConfig {
        let source = match &self.manifests {
            Some(dir) => Source::Manifests(dir.clone()),
            None => Source::Kubernetes(KubernetesSource {
                client: None,
                namespaces: self.namespaces.iter().filter(|n| !n.is_empty()).cloned().collect(),
                service_selector: self.selector.clone().filter(|s| !s.is_empty()),
            }),
        };
        ServeConfig {
            source,
            xds_addr: self.xds_addr,
            admin_addr: self.admin_addr,
            debug_addr: self.debug_addr,
            pipeline: PipelineConfig {
                debounce: self.debounce,
                translate: TranslateOptions {
                    active_health_checks: self.active_health_checks,
                    send_unhealthy_endpoints: self.send_unhealthy_endpoints,
                    typed_metadata: self.typed_metadata,
                    outbound_listener: self.outbound_listener,
                    cluster_domain: self.cluster_domain.as_str().into(),
                },
            },
            hds: HdsConfig {
                checkers_per_endpoint: usize::from(self.hds_checkers_per_endpoint),
                report_interval: self.hds_report_interval,
                checkers: Access::new(self.xds_security().auth.any(), listed(&self.hds_checker_identities)),
                max_unhealthy_percent: self.hds_max_unhealthy_percent,
            },
            limits: self.limits,
            xds_security: self.xds_security(),
            inject: self.inject_config(),
        }
    }

    fn inject_config(&self) -> Option<InjectConfig> {
        let args = &self.inject;
        let (addr, xds_address, ca_file) =
            (args.webhook_addr?, args.inject_xds_address.clone()?, args.inject_ca_file.clone()?);
        Some(InjectConfig {
            addr,
            ca_file,
            template: SidecarTemplate {
                image: args.inject_image.clone(),
                resources: args.inject_resources.clone(),
                extra_args: args.inject_args.iter().filter(|a| !a.is_empty()).cloned().collect(),
                xds_address,
                ca_pem: String::new(),
                token_audience: self.xds_token_audience.clone(),
                outbound_listener: self.outbound_listener,
                cluster_domain: self.cluster_domain.clone(),
            },
        })
    }

    pub fn xds_security(&self) -> XdsSecurity {
        let auth = AuthModes {
            mtls: self.xds_auth.iter().any(|m| m == "mtls"),
            token: self.xds_auth.iter().any(|m| m == "token"),
        };
        // Optional at the TLS layer even for mtls alone: a client without a certificate then
        // gets UNAUTHENTICATED saying what is expected, not a bare handshake failure. A
        // certificate that is presented must still chain to the client CA.
        let client_certs = if auth.mtls { ClientCerts::Optional } else { ClientCerts::NotAsked };
        let tls = match (&self.xds_tls_cert, &self.xds_tls_key) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.xds_client_ca.clone(),
                client_certs,
            }),
            _ => None,
        };
        XdsSecurity {
            review_client: None,
            tls,
            auth,
            tokens: TokenSettings {
                audiences: vec![self.xds_token_audience.clone()],
                recheck: self.token_recheck_interval,
            },
            admin_identities: listed(&self.admin_identities),
        }
    }
}

/// A comma-separated flag's entries, without the empty ones an empty variable yields.
fn listed(values: &[String]) -> Vec<String> {
    values.iter().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect()
}

/// A DNS name of lowercase labels, as Kubernetes' `--cluster-domain` is.
fn parse_cluster_domain(value: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if value.len() <= 253 && value.split('.').all(label_ok) {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a DNS domain such as cluster.local"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounce_accepts_human_durations_up_to_one_second() {
        assert_eq!(parse_debounce("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_debounce("2s").unwrap_err().contains("at most 1s"));
        assert!(parse_debounce("fast").is_err());
    }

    #[test]
    fn defaults_match_the_documented_ports() {
        let cli = Cli::try_parse_from(["edgexds", "serve", "--manifests", "examples"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.xds_addr.port(), 18000);
        assert_eq!(args.admin_addr.port(), 19000);
        assert_eq!(args.debounce, Duration::from_millis(100));
        assert_eq!(args.active_health_checks, ActiveHealthChecks::Cds);
        assert_eq!((args.hds_checkers_per_endpoint, args.hds_report_interval), (2, Duration::from_millis(500)));
        assert_eq!(args.limits, Limits::default(), "every limit flag defaults to the documented limit");
    }

    #[test]
    fn every_limit_is_a_flag_and_a_variable_with_its_range_checked() {
        use edgexds::port::Limit;
        let parse =
            |extra: &[&str]| Cli::try_parse_from([&["edgexds", "serve", "--manifests", "examples"], extra].concat());
        let Command::Serve(args) = parse(&["--max-node-bytes", "300", "--request-timeout", "2s"]).unwrap().command
        else {
            panic!("not serve")
        };
        assert_eq!(args.limits.get(Limit::NodeBytes), 300);
        assert_eq!(args.limits.duration(Limit::RequestTimeout), Duration::from_secs(2));
        let error = parse(&["--max-streams-per-connection", "0"]).unwrap_err().to_string();
        assert!(error.contains("must be between 1 and 1024"), "{error}");
        assert!(parse(&["--handshake-timeout", "soon"]).is_err());
    }

    #[test]
    fn hds_flags_are_range_checked_with_a_clear_message() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from([&["edgexds", "serve", "--manifests", "examples"], extra].concat()).map(|_| ())
        };
        assert!(parse(&["--active-health-checks", "hds", "--hds-checkers-per-endpoint", "3"]).is_ok());
        let error = parse(&["--hds-report-interval", "10ms"]).unwrap_err().to_string();
        assert!(error.contains("between 100ms and 5s"), "{error}");
        assert!(parse(&["--hds-checkers-per-endpoint", "0"]).is_err());
        assert!(parse(&["--active-health-checks", "sidecars"]).is_err());
    }
}
