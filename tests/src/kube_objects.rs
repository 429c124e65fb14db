//! Kubernetes objects as JSON, for feeding the test API server.

use std::net::IpAddr;

use serde_json::{Value, json};

pub fn service(namespace: &str, name: &str, port: u16, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}
    })
}

/// A slice of `service` whose endpoints listen on `port`; the second endpoint is the canary pod.
pub fn slice(namespace: &str, name: &str, service: &str, port: u16, addresses: &[IpAddr]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .enumerate()
        .map(|(index, address)| {
            let pod = if index == 1 { "web-canary-1".to_owned() } else { format!("{service}-{index}") };
            json!({
                "addresses": [address.to_string()],
                "conditions": {"ready": true},
                "zone": format!("zone-{index}"),
                "nodeName": format!("node-{index}"),
                "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

pub fn probe(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "edgexds.io/v1alpha1", "kind": "HealthProbe",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec
    })
}

/// A probe on `service` with a canary override, like the manifests examples.
pub fn web_probe(namespace: &str, name: &str, service: &str, base_ms: u32, canary_ms: u32) -> Value {
    probe(
        namespace,
        name,
        json!({
            "targetRef": {"kind": "Service", "name": service},
            "intervalMs": base_ms, "timeoutMs": base_ms.min(1000), "failureThreshold": 3,
            "http": {"path": "/healthz"},
            "overrides": [{"match": {"podName": "web-canary-*"}, "intervalMs": canary_ms,
                           "timeoutMs": canary_ms.min(1000) / 2, "failureThreshold": 2}]
        }),
    )
}

/// A slice of `service` holding one endpoint, `address`, as pod `pod`. A real API server
/// refuses loopback endpoint addresses, so upstreams on one host address differ by port,
/// and each port needs its own slice.
pub fn endpoint_slice(namespace: &str, name: &str, service: &str, address: std::net::SocketAddr, pod: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "ports": [{"name": "http", "port": address.port(), "protocol": "TCP"}],
        "endpoints": [{
            "addresses": [address.ip().to_string()],
            "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace}
        }]
    })
}

/// The port every `test-upstream` container listens on.
pub const UPSTREAM_PORT: u16 = 8080;

/// How a test pod's upstream process behaves.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// How long it keeps serving after SIGTERM.
    pub drain_seconds: u32,
    /// The preStop sleep, before SIGTERM.
    pub pre_stop_seconds: u32,
    /// The pod's terminationGracePeriodSeconds.
    pub grace_seconds: u32,
    /// Also serves HTTPS on port `https` ([`UPSTREAM_TLS_PORT`], certificate for this name)
    /// and a TCP echo on port `echo` ([`UPSTREAM_ECHO_PORT`]).
    pub tls_name: Option<String>,
}

/// The HTTPS port of an upstream with a `tls_name`.
pub const UPSTREAM_TLS_PORT: u16 = 8443;
/// The TCP echo port of an upstream with a `tls_name`.
pub const UPSTREAM_ECHO_PORT: u16 = 7000;

impl Default for Upstream {
    fn default() -> Self {
        Self { drain_seconds: 0, pre_stop_seconds: 0, grace_seconds: 10, tls_name: None }
    }
}

impl Upstream {
    /// The pod spec: one `test-upstream` container answering with the pod's name, ready by
    /// `GET /healthz` every second, with the downward API giving it its name.
    pub fn pod_spec(&self) -> Value {
        let mut container = json!({
            "name": "app", "image": "test-upstream",
            "command": ["test-upstream", "--port", UPSTREAM_PORT.to_string(), "--drain", format!("{}s", self.drain_seconds)],
            "ports": [{"name": "http", "containerPort": UPSTREAM_PORT, "protocol": "TCP"}],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 1},
        });
        if let Some(name) = &self.tls_name {
            let args = [
                "--tls-port",
                &UPSTREAM_TLS_PORT.to_string(),
                "--tls-name",
                name,
                "--echo-port",
                &UPSTREAM_ECHO_PORT.to_string(),
            ]
            .map(|a| json!(a));
            container["command"].as_array_mut().expect("a command").extend(args);
            container["ports"].as_array_mut().expect("ports").extend([
                json!({"name": "https", "containerPort": UPSTREAM_TLS_PORT, "protocol": "TCP"}),
                json!({"name": "echo", "containerPort": UPSTREAM_ECHO_PORT, "protocol": "TCP"}),
            ]);
        }
        if self.pre_stop_seconds > 0 {
            container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": self.pre_stop_seconds}}});
        }
        json!({"containers": [container], "terminationGracePeriodSeconds": self.grace_seconds})
    }

    /// A Pod of its own, labelled `app: <app>`.
    pub fn pod(&self, namespace: &str, name: &str, app: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
            "spec": self.pod_spec(),
        })
    }

    /// A Deployment of `replicas` pods labelled `app: <name>`, rolled one surge pod at a time
    /// and never below `replicas` ready (`maxSurge: 1, maxUnavailable: 0`).
    pub fn deployment(&self, namespace: &str, name: &str, replicas: u32) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": self.pod_spec()},
            }
        })
    }
}

/// A Service selecting `app: <name>`, port `port` to the pods' `http` port; the controller
/// writes its slices. `app_protocol` as the Service's port gives it (e.g. `grpc`).
pub fn selecting_service(namespace: &str, name: &str, port: u16, app_protocol: Option<&str>) -> Value {
    let mut service_port = json!({"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"});
    if let Some(protocol) = app_protocol {
        service_port["appProtocol"] = json!(protocol);
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [service_port]}
    })
}
