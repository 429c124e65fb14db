//! edgexds running in-process on ephemeral ports, serving a temporary manifests directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use edgexds::hds::HdsConfig;
use edgexds::pipeline::PipelineConfig;
use edgexds::port::Limits;
use edgexds::serve::{KubernetesSource, Running, ServeConfig, Source, XdsSecurity, start};
use edgexds::translate::{ActiveHealthChecks, TranslateOptions};

use crate::upstream::Upstream;

pub struct ControlPlane {
    pub running: Running,
    pub manifests: tempfile::TempDir,
}

impl ControlPlane {
    pub async fn start(options: TranslateOptions) -> Result<Self> {
        let manifests = tempfile::tempdir()?;
        Self::start_in(manifests, options).await
    }

    pub async fn start_in(manifests: tempfile::TempDir, translate: TranslateOptions) -> Result<Self> {
        Self::start_configured(manifests, translate, HdsConfig::default()).await
    }

    /// HDS in `mode`, with `checkers_per_endpoint` and a 500ms report interval.
    pub async fn start_hds(mode: ActiveHealthChecks, checkers_per_endpoint: usize) -> Result<Self> {
        let translate = TranslateOptions { active_health_checks: mode, ..Default::default() };
        let hds = HdsConfig { checkers_per_endpoint, ..Default::default() };
        Self::start_configured(tempfile::tempdir()?, translate, hds).await
    }

    pub async fn start_configured(
        manifests: tempfile::TempDir,
        translate: TranslateOptions,
        hds: HdsConfig,
    ) -> Result<Self> {
        Self::start_limited(manifests, translate, hds, Limits::default()).await
    }

    /// Serving `manifests` with TLS and authentication on the xDS port.
    pub async fn start_secured(manifests: tempfile::TempDir, xds_security: XdsSecurity) -> Result<Self> {
        let config = ServeConfig {
            xds_security,
            ..Self::config(&manifests, TranslateOptions::default(), HdsConfig::default())?
        };
        Ok(Self { running: start(config).await?, manifests })
    }

    /// Every part configured: translation, HDS and the xDS port's security.
    pub async fn start_full(
        manifests: tempfile::TempDir,
        translate: TranslateOptions,
        hds: HdsConfig,
        xds_security: XdsSecurity,
    ) -> Result<Self> {
        let config = ServeConfig { xds_security, ..Self::config(&manifests, translate, hds)? };
        Ok(Self { running: start(config).await?, manifests })
    }

    /// Serving `manifests` with the xDS port at `xds_addr` (a restart on the same port).
    pub async fn start_full_at(
        manifests: tempfile::TempDir,
        xds_addr: SocketAddr,
        xds_security: XdsSecurity,
    ) -> Result<Self> {
        let config = Self::config(&manifests, TranslateOptions::default(), HdsConfig::default())?;
        let config = ServeConfig { xds_addr, xds_security, ..config };
        Ok(Self { running: start(config).await?, manifests })
    }

    /// Serving `manifests` on ephemeral loopback ports, with a 100 ms debounce.
    fn config(manifests: &tempfile::TempDir, translate: TranslateOptions, hds: HdsConfig) -> Result<ServeConfig> {
        Ok(ServeConfig {
            source: Source::Manifests(manifests.path().to_owned()),
            xds_addr: "127.0.0.1:0".parse()?,
            admin_addr: "127.0.0.1:0".parse()?,
            debug_addr: "127.0.0.1:0".parse()?,
            pipeline: PipelineConfig { debounce: Duration::from_millis(100), translate },
            hds,
            limits: Limits::default(),
            xds_security: XdsSecurity::default(),
            inject: None,
        })
    }

    /// Like [`ControlPlane::start_configured`], with other per-client limits.
    pub async fn start_limited(
        manifests: tempfile::TempDir,
        translate: TranslateOptions,
        hds: HdsConfig,
        limits: Limits,
    ) -> Result<Self> {
        let config = ServeConfig { limits, ..Self::config(&manifests, translate, hds)? };
        Ok(Self { running: start(config).await?, manifests })
    }

    /// A control plane watching the given API server, with the default 100ms debounce.
    pub async fn kubernetes(client: kube::Client, namespaces: &[&str], selector: Option<&str>) -> Result<Running> {
        Self::kubernetes_with(client, namespaces, selector, TranslateOptions::default(), HdsConfig::default()).await
    }

    pub async fn kubernetes_with(
        client: kube::Client,
        namespaces: &[&str],
        selector: Option<&str>,
        translate: TranslateOptions,
        hds: HdsConfig,
    ) -> Result<Running> {
        Ok(start(ServeConfig {
            source: Source::Kubernetes(KubernetesSource {
                client: Some(client),
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                service_selector: selector.map(str::to_owned),
            }),
            xds_addr: "127.0.0.1:0".parse()?,
            admin_addr: "127.0.0.1:0".parse()?,
            debug_addr: "127.0.0.1:0".parse()?,
            pipeline: PipelineConfig { debounce: Duration::from_millis(100), translate },
            hds,
            limits: Default::default(),
            xds_security: Default::default(),
            inject: None,
        })
        .await?)
    }

    pub fn xds_addr(&self) -> SocketAddr {
        self.running.xds_addr
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.manifests.path().join(file)
    }

    /// Replaces a manifest file in one step, as editors and ConfigMap updates do.
    pub fn write(&self, file: &str, content: &str) {
        write_atomically(&self.path(file), content);
    }
}

pub fn write_atomically(path: &Path, content: &str) {
    let temp = path.with_extension("tmp~");
    std::fs::write(&temp, content).expect("write manifest");
    std::fs::rename(&temp, path).expect("rename manifest");
}

/// The web Service of namespace shop, port 80 → the upstreams' port.
/// Service `name` in shop on `port`, with one slice holding `upstream`; a YAML document.
pub fn service_yaml(name: &str, port: u16, upstream: &Upstream) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{ name: {name}, namespace: shop }}
spec:
  ports: [{{ name: http, port: {port}, targetPort: http }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: {name}-1, namespace: shop, labels: {{ kubernetes.io/service-name: {name} }} }}
addressType: IPv4
ports: [{{ name: http, port: {}, protocol: TCP }}]
endpoints: [{{ addresses: [\"{}\"], conditions: {{ ready: true }} }}]
",
        upstream.addr.port(),
        upstream.addr.ip()
    )
}

pub fn web_service() -> String {
    "apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  ports:
  - { name: http, port: 80, targetPort: http }
"
    .to_owned()
}

/// An EndpointSlice of web holding the given upstreams (pod names web-0, web-1, ...).
pub fn web_slice(upstreams: &[&Upstream]) -> String {
    let port = upstreams.first().map_or(8080, |u| u.addr.port());
    let mut text = format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels: {{ kubernetes.io/service-name: web }}
addressType: IPv4
ports: [{{ name: http, port: {port}, protocol: TCP }}]
endpoints:
"
    );
    for (index, upstream) in upstreams.iter().enumerate() {
        let pod = if index == 1 { "web-canary-1".to_owned() } else { format!("web-{index}") };
        text.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions: {{ ready: true }}\n  zone: zone-{index}\n  nodeName: node-{index}\n  targetRef: {{ kind: Pod, name: {pod} }}\n",
            upstream.addr.ip()
        ));
    }
    text
}

/// A HealthProbe on web: `base_ms` for every pod, `canary_ms` for web-canary-*.
pub fn web_probe(base_ms: u32, canary_ms: u32) -> String {
    format!(
        "apiVersion: edgexds.io/v1alpha1
kind: HealthProbe
metadata: {{ name: web, namespace: shop }}
spec:
  targetRef: {{ kind: Service, name: web }}
  intervalMs: {base_ms}
  timeoutMs: {timeout}
  failureThreshold: 3
  http: {{ path: /healthz }}
  overrides:
  - match: {{ podName: \"web-canary-*\" }}
    intervalMs: {canary_ms}
    timeoutMs: {canary_timeout}
    failureThreshold: 2
",
        timeout = base_ms.min(1000),
        canary_timeout = canary_ms.min(1000) / 2,
    )
}
