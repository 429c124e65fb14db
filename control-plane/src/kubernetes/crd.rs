//! The `HealthProbe` custom resource (`edgexds.io/v1alpha1`) as operators write it.
//!
//! Numbers are parsed as wide signed integers on purpose: an out-of-range value
//! must reach validation (and get a precise message) instead of failing parsing.

use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::limits::{
    HEADER_VALUE_PATTERN, INTERVAL_MS, MAX_NAME_BYTES, MAX_OVERRIDES, MAX_PATH_BYTES, PATH_PATTERN, THRESHOLD,
    TIMEOUT_MS,
};

/// What to probe, how often, and per-endpoint exceptions.
// Clippy reads the repeated printcolumn(...) arguments of the derive as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "edgexds.io",
    version = "v1alpha1",
    kind = "HealthProbe",
    namespaced,
    shortname = "hp",
    status = "HealthProbeStatus",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(name = "Interval", type_ = "integer", json_path = ".spec.intervalMs"),
    printcolumn(name = "Failures", type_ = "integer", json_path = ".spec.failureThreshold"),
    printcolumn(name = "Accepted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Accepted\")].status"),
    printcolumn(name = "Healthy", type_ = "integer", json_path = ".status.healthyEndpoints"),
    printcolumn(name = "Unhealthy", type_ = "integer", json_path = ".status.unhealthyEndpoints"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.http), has(self.tcp), has(self.grpc)].filter(x, x).size() <= 1")
        .message("exactly one of http, tcp, grpc may be set"),
    validation = Rule::new(TIMEOUT_WITHIN_INTERVAL).message("timeoutMs must not exceed intervalMs"),
    validation = Rule::new(OVERRIDE_TIMEOUT_WITHIN_INTERVAL)
        .message("in every override, the effective timeoutMs must not exceed the effective intervalMs")
)]
pub struct HealthProbeSpec {
    /// The Service whose endpoints are probed (same namespace).
    pub target_ref: TargetRef,
    /// A Service port number; all ports of the Service when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i64>,
    /// Time between probes in milliseconds (100..=3600000, default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = INTERVAL_MS.0, max = INTERVAL_MS.1))]
    pub interval_ms: Option<i64>,
    /// Time to wait for an answer in milliseconds (default 1000, at most intervalMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = TIMEOUT_MS.0, max = TIMEOUT_MS.1))]
    pub timeout_ms: Option<i64>,
    /// Consecutive failures before an endpoint is unhealthy (1..=100, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = THRESHOLD.0, max = THRESHOLD.1))]
    pub failure_threshold: Option<i64>,
    /// Consecutive successes before an endpoint is healthy again (1..=100, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = THRESHOLD.0, max = THRESHOLD.1))]
    pub success_threshold: Option<i64>,
    /// HTTP GET probe (the default, on /healthz, when no kind is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// TCP connect probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// gRPC health-checking-protocol probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcProbe>,
    /// Per-endpoint values; the first override whose match fits an endpoint wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_OVERRIDES))]
    pub overrides: Vec<ProbeOverride>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Only `Service` is supported.
    #[serde(default = "service_kind")]
    #[schemars(regex(pattern = "^Service$"))]
    pub kind: String,
    #[schemars(length(min = 1, max = MAX_NAME_BYTES))]
    pub name: String,
}

const TIMEOUT_WITHIN_INTERVAL: &str =
    "(has(self.timeoutMs) ? self.timeoutMs : 1000) <= (has(self.intervalMs) ? self.intervalMs : 5000)";
const OVERRIDE_TIMEOUT_WITHIN_INTERVAL: &str = "!has(self.overrides) || self.overrides.all(o, \
     (has(o.timeoutMs) ? o.timeoutMs : (has(self.timeoutMs) ? self.timeoutMs : 1000)) <= \
     (has(o.intervalMs) ? o.intervalMs : (has(self.intervalMs) ? self.intervalMs : 5000)))";

/// The CustomResourceDefinition as YAML, exactly as committed in `crds/`.
pub fn crd_yaml() -> String {
    let yaml = serde_norway::to_string(&HealthProbe::crd()).unwrap_or_else(|e| format!("# cannot render CRD: {e}\n"));
    format!("# Generated by `edgexds crd`; do not edit. A test fails when this file drifts from the code.\n---\n{yaml}")
}

fn service_kind() -> String {
    "Service".to_owned()
}

/// An HTTP GET; 200-399 passes, as for Kubernetes probes, and `failureThreshold` failures in a row fail.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    #[serde(default = "default_http_path")]
    #[schemars(length(max = MAX_PATH_BYTES), regex(pattern = PATH_PATTERN))]
    pub path: String,
    /// Host header; Envoy's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH_BYTES), regex(pattern = HEADER_VALUE_PATTERN))]
    pub host: Option<String>,
}

pub fn default_http_path() -> String {
    "/healthz".to_owned()
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TcpProbe {}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub service_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeOverride {
    /// Which endpoints this override applies to; every field set must match.
    #[serde(rename = "match", default)]
    pub matches: EndpointMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = INTERVAL_MS.0, max = INTERVAL_MS.1))]
    pub interval_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = TIMEOUT_MS.0, max = TIMEOUT_MS.1))]
    pub timeout_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = THRESHOLD.0, max = THRESHOLD.1))]
    pub failure_threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = THRESHOLD.0, max = THRESHOLD.1))]
    pub success_threshold: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub node_name: Option<String>,
    /// A glob over the endpoint's pod name, e.g. `web-canary-*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub pod_name: Option<String>,
    /// An IP address or a CIDR range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES))]
    pub address: Option<String>,
}

/// Written back by the control plane (Kubernetes source).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthProbeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<StatusCondition>,
    #[serde(default)]
    pub matched_endpoints: i64,
    /// Ready in Kubernetes and not failing active (HDS) checks.
    #[serde(default)]
    pub healthy_endpoints: i64,
    /// Not ready in Kubernetes, or failing active (HDS) checks.
    #[serde(default)]
    pub unhealthy_endpoints: i64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_match_the_code() {
        for file in ["crds/healthprobes.edgexds.io.yaml", "charts/edgexds/crds/healthprobes.edgexds.io.yaml"] {
            let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == crd_yaml(),
                "{file} drifted from the code: regenerate both copies with \
                 `cargo run -- crd | tee crds/healthprobes.edgexds.io.yaml > charts/edgexds/crds/healthprobes.edgexds.io.yaml`"
            );
        }
    }

    #[test]
    fn crd_has_short_name_status_and_printer_columns() {
        let crd = HealthProbe::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["hp".to_string()]));
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let columns: Vec<_> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(columns, ["Target", "Interval", "Failures", "Accepted", "Healthy", "Unhealthy", "Age"]);
        let yaml = crd_yaml();
        assert!(yaml.contains("timeoutMs must not exceed intervalMs"));
        assert!(yaml.contains("exactly one of http, tcp, grpc may be set"));
    }
}
