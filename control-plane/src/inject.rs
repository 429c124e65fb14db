//! Sidecar injection: a mutating admission webhook that gives a pod a native Envoy sidecar
//! (an init container that restarts always) with a bootstrap generated for it, and its app
//! containers the proxy variables that send their traffic through it. Which pods are asked
//! about is decided by the webhook configuration's selectors (the chart's); what a pod gets
//! is decided here, from the pod alone, so a second call changes nothing.
//!
//! Imports: auth (the serving certificate, as the xDS port's), xds (the proxies registry,
//! which knows each sidecar's template).

pub mod annotations;
pub mod metrics;
pub mod mutate;
pub mod server;
pub mod template;

pub use metrics::InjectMetrics;
pub use template::SidecarTemplate;
