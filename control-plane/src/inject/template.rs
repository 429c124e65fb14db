//! What an injected pod gets, decided once per edgexds process: the sidecar's image and
//! resources, where it finds edgexds, what it trusts, and the bootstrap it runs. Its hash
//! is stamped on every injected pod, so pods injected from another template show as drift.

use std::net::SocketAddr;

use serde_json::{Value, json};

/// The sidecar's init container name, and the mark of an injected pod.
pub const SIDECAR: &str = "edgexds-proxy";
/// The annotation holding the template hash an injected pod was made from.
pub const INJECTED: &str = "edgexds.io/injected-template";
/// The node metadata key a sidecar reports its template hash in: the proxies registry reads it.
pub use crate::xds::proxies::TEMPLATE_METADATA;
/// Envoy's admin port, on the pod's loopback only.
pub const ADMIN_PORT: u16 = 15000;
/// The port whose `/ready` answers once Envoy has its first configuration: the startup
/// probe's. It is a static listener, and Envoy opens listeners only once initialised.
pub const READY_PORT: u16 = 15021;
/// Where the projected token is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/secrets/edgexds";

/// The sidecar every injected pod gets, unless its annotations say otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarTemplate {
    pub image: String,
    /// Container resources, as the chart's values give them.
    pub resources: Value,
    pub extra_args: Vec<String>,
    /// `host:port` of edgexds's xDS port as pods reach it (the Service's name).
    pub xds_address: String,
    /// The PEM of the CA the xDS certificate chains to; it travels inside the bootstrap.
    pub ca_pem: String,
    pub token_audience: String,
    /// The sidecar's outbound listener, as edgexds places it (`--outbound-listener`): the
    /// proxy address apps are given.
    pub outbound_listener: SocketAddr,
    /// The cluster's DNS domain, for the Kubernetes API's names in `NO_PROXY`.
    pub cluster_domain: String,
}

impl SidecarTemplate {
    /// A short hash of everything an injected pod gets from this template, and of the edgexds
    /// version: a pod stamped with another one needs a restart to get the current sidecar.
    pub fn hash(&self) -> String {
        let text = format!("{}\n{self:?}", env!("CARGO_PKG_VERSION"));
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }

    /// The Envoy bootstrap, as one JSON document for `--config-yaml`. The kubelet expands the
    /// `$(EDGEXDS_…)` references from the downward API, so nothing in it is per pod at
    /// admission, when a Deployment's pod has no name yet.
    pub fn bootstrap(&self, workload: &str, hash: &str) -> String {
        let ready_route = json!({
            "name": "ready",
            "virtual_hosts": [{"name": "ready", "domains": ["*"], "routes": [
                {"match": {"path": "/ready"}, "direct_response": {"status": 200, "body": {"inline_string": "LIVE\n"}}}
            ]}]
        });
        let bootstrap = json!({
            "node": {
                "id": "$(EDGEXDS_POD_NAME).$(EDGEXDS_POD_NAMESPACE)",
                "cluster": workload,
                "metadata": {
                    "namespace": "$(EDGEXDS_POD_NAMESPACE)",
                    "pod_name": "$(EDGEXDS_POD_NAME)",
                    "node_name": "$(EDGEXDS_NODE_NAME)",
                    TEMPLATE_METADATA: hash,
                }
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ADMIN_PORT}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "DELTA_GRPC",
                    "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    // Google gRPC, because its file-based credentials re-read the projected
                    // token on every new stream: the kubelet rotates it.
                    "grpc_services": [{"google_grpc": {
                        "target_uri": self.xds_address,
                        "stat_prefix": "edgexds",
                        "channel_credentials": {"ssl_credentials": {"root_certs": {"inline_string": self.ca_pem}}},
                        "call_credentials": [{"from_plugin": {
                            "name": "envoy.grpc_credentials.file_based_metadata",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
                                "secret_data": {"filename": format!("{TOKEN_DIR}/token")},
                                "header_key": "authorization",
                                "header_prefix": "Bearer "
                            }
                        }}],
                        "credentials_factory_name": "envoy.grpc_credentials.file_based_metadata"
                    }}]
                },
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"}
            },
            "static_resources": {"listeners": [{
                "name": "edgexds-ready",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": READY_PORT}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ready",
                        "route_config": ready_route,
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                        }}]
                    }
                }]}]
            }]}
        });
        bootstrap.to_string()
    }

    /// The proxy URL apps are given.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.outbound_listener)
    }

    /// What apps reach directly: the pod itself, loopback, and the Kubernetes API. Everything
    /// else, Services and external hosts alike, goes to the sidecar, which refuses what no
    /// Service answers to; so external hosts an app needs belong here too (by annotation).
    pub fn no_proxy(&self) -> String {
        let domain = &self.cluster_domain;
        [
            "localhost",
            "127.0.0.1",
            "127.0.0.0/8",
            "::1",
            "$(EDGEXDS_POD_IP)",
            "$(KUBERNETES_SERVICE_HOST)",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            &format!("kubernetes.default.svc.{domain}"),
        ]
        .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn template() -> SidecarTemplate {
        SidecarTemplate {
            image: "envoyproxy/envoy:v1.40.0".into(),
            resources: json!({"requests": {"cpu": "50m", "memory": "64Mi"}}),
            extra_args: vec![],
            xds_address: "edgexds.edgexds.svc:18000".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
            token_audience: "edgexds".into(),
            outbound_listener: "127.0.0.1:15001".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn the_hash_changes_with_anything_a_pod_gets_and_only_then() {
        let base = template();
        assert_eq!(base.hash(), template().hash());
        let other_ca = SidecarTemplate { ca_pem: "other".into(), ..template() };
        let other_image = SidecarTemplate { image: "envoyproxy/envoy:v1.41.0".into(), ..template() };
        assert_ne!(base.hash(), other_ca.hash());
        assert_ne!(base.hash(), other_image.hash());
    }

    #[test]
    fn the_bootstrap_names_the_pod_from_the_downward_api_and_trusts_the_ca_inline() {
        let bootstrap: Value = serde_json::from_str(&template().bootstrap("web", "abc")).unwrap();
        assert_eq!(bootstrap["node"]["id"], "$(EDGEXDS_POD_NAME).$(EDGEXDS_POD_NAMESPACE)");
        assert_eq!(bootstrap["node"]["cluster"], "web");
        assert_eq!(bootstrap["node"]["metadata"][TEMPLATE_METADATA], "abc");
        let grpc = &bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"];
        assert_eq!(grpc["target_uri"], "edgexds.edgexds.svc:18000");
        assert!(
            grpc["channel_credentials"]["ssl_credentials"]["root_certs"]["inline_string"]
                .as_str()
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
    }
}
