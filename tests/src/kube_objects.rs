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
