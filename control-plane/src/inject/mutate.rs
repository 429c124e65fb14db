//! One pod in, the decision out: inject the sidecar (as a JSON patch), leave the pod as it
//! is, or refuse it with the reason. Pure: no I/O, so the webhook's every rule is tested here.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::annotations::{Overrides, Refusal};
use super::template::{ADMIN_PORT, INJECTED, READY_PORT, SIDECAR, SidecarTemplate, TOKEN_DIR};

/// The pod label that asks for injection (`"true"`) or refuses it (`"false"`), either way
/// overriding its namespace's label.
pub const INJECT_LABEL: &str = "edgexds.io/inject";
/// The proxy variables every app container gets, each naming the sidecar.
pub const PROXY_VARIABLES: [&str; 5] = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "grpc_proxy"];
/// The variables naming what bypasses the sidecar.
pub const NO_PROXY_VARIABLES: [&str; 2] = ["NO_PROXY", "no_proxy"];

#[derive(Debug)]
pub enum Decision {
    /// The patch that injects the sidecar.
    Inject(json_patch::Patch),
    /// Nothing to do, and why.
    Leave(&'static str),
}

/// What `pod` gets from `template`. A pod that asks for injection but cannot have it is
/// refused, never admitted without its sidecar.
pub fn decide(pod: &Pod, template: &SidecarTemplate) -> Result<Decision, Refusal> {
    let labels = pod.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(INJECT_LABEL)).is_some_and(|v| v == "false") {
        return Ok(Decision::Leave("the pod's label edgexds.io/inject is \"false\""));
    }
    let spec = pod.spec.as_ref().ok_or_else(|| Refusal::new("the pod has no spec"))?;
    let annotated = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(INJECTED));
    let has_sidecar = spec.init_containers.iter().flatten().chain(&spec.containers).any(|c| c.name == SIDECAR);
    if annotated || has_sidecar {
        return Ok(Decision::Leave("the pod has its sidecar already"));
    }
    if spec.host_network == Some(true) {
        return Err(Refusal::new(format!(
            "a hostNetwork pod cannot take the sidecar: its ports ({}, {READY_PORT} and the outbound {}) are the node's; \
             label the pod edgexds.io/inject=false",
            ADMIN_PORT,
            template.outbound_listener.port()
        )));
    }
    let taken = [ADMIN_PORT, READY_PORT, template.outbound_listener.port()];
    for container in spec.init_containers.iter().flatten().chain(&spec.containers) {
        for port in container.ports.iter().flatten() {
            if u16::try_from(port.container_port).is_ok_and(|p| taken.contains(&p)) {
                return Err(Refusal::new(format!(
                    "container {} uses port {}, which the sidecar needs ({taken:?}); label the pod edgexds.io/inject=false",
                    container.name, port.container_port
                )));
            }
        }
    }
    let overrides = Overrides::of(pod.metadata.annotations.as_ref())?;
    let before = serde_json::to_value(pod).map_err(|e| Refusal::new(format!("the pod does not serialize: {e}")))?;
    let mut after = before.clone();
    let hash = template.hash();
    let workload = workload_of(pod);
    after["metadata"]["annotations"] = merged(&after["metadata"]["annotations"], INJECTED, json!(hash));
    let init = after["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
    after["spec"]["initContainers"] =
        Value::Array(std::iter::once(sidecar(template, &overrides, &workload, &hash)).chain(init).collect());
    let volumes = after["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    after["spec"]["volumes"] = Value::Array(volumes.into_iter().chain([token_volume(template)]).collect());
    if overrides.proxy_env
        && let Some(containers) = after["spec"]["containers"].as_array_mut()
    {
        for container in containers {
            add_proxy_env(container, template);
        }
    }
    Ok(Decision::Inject(json_patch::diff(&before, &after)))
}

/// The name of the workload a pod belongs to: its Deployment's for a ReplicaSet's pod (the
/// generated name less the template hash), else its generated name's stem, else its name.
pub fn workload_of(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let stem = meta.generate_name.as_deref().map(|g| g.trim_end_matches('-')).filter(|g| !g.is_empty());
    let hash = meta.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
    match (stem, hash) {
        (Some(stem), Some(hash)) => {
            stem.strip_suffix(hash.as_str()).map_or(stem, |s| s.trim_end_matches('-')).to_owned()
        }
        (Some(stem), None) => stem.to_owned(),
        _ => meta.name.clone().unwrap_or_else(|| "unnamed".into()),
    }
}

fn merged(map: &Value, key: &str, value: Value) -> Value {
    let mut map = map.as_object().cloned().unwrap_or_default();
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

/// The native sidecar: an init container that restarts always, so it starts before the app
/// (its startup probe holds the app back until Envoy has its configuration), outlives it, and
/// does not keep a Job from completing.
fn sidecar(template: &SidecarTemplate, overrides: &Overrides, workload: &str, hash: &str) -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let mut args = vec![json!("--config-yaml"), json!(template.bootstrap(workload, hash))];
    args.extend(template.extra_args.iter().chain(&overrides.extra_args).map(|a| json!(a)));
    let ready = json!({"httpGet": {"path": "/ready", "port": READY_PORT}, "periodSeconds": 1, "failureThreshold": 600, "timeoutSeconds": 1});
    let mut resources = template.resources.clone();
    overrides.apply_resources(&mut resources);
    json!({
        "name": SIDECAR,
        "image": overrides.image.as_deref().unwrap_or(&template.image),
        "restartPolicy": "Always",
        "args": args,
        "env": [
            {"name": "EDGEXDS_POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "EDGEXDS_POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "EDGEXDS_NODE_NAME", "valueFrom": field("spec.nodeName")},
        ],
        "ports": [{"name": "edgexds-ready", "containerPort": READY_PORT, "protocol": "TCP"}],
        "startupProbe": ready,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": READY_PORT}, "periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 1},
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 101, "runAsGroup": 101,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
        },
        "volumeMounts": [{"name": SIDECAR, "mountPath": TOKEN_DIR, "readOnly": true}],
    })
}

/// The pod's own ServiceAccount token for edgexds's audience only, rotated by the kubelet:
/// worthless against the Kubernetes API.
fn token_volume(template: &SidecarTemplate) -> Value {
    json!({"name": SIDECAR, "projected": {"sources": [
        {"serviceAccountToken": {"audience": template.token_audience, "expirationSeconds": 3600, "path": "token"}}
    ]}})
}

/// Adds the proxy variables a container does not set itself, after the pod's address that
/// `NO_PROXY` refers to.
fn add_proxy_env(container: &mut Value, template: &SidecarTemplate) {
    let mut env = container["env"].as_array().cloned().unwrap_or_default();
    let set = |env: &[Value], name: &str| env.iter().any(|e| e["name"] == name);
    let url = template.proxy_url();
    let mut added = Vec::new();
    for name in PROXY_VARIABLES {
        if !set(&env, name) {
            added.push(json!({"name": name, "value": url}));
        }
    }
    if NO_PROXY_VARIABLES.iter().any(|name| !set(&env, name)) && !set(&env, "EDGEXDS_POD_IP") {
        // `$(VAR)` in a value sees only variables defined before it.
        env.insert(0, json!({"name": "EDGEXDS_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}));
    }
    for name in NO_PROXY_VARIABLES {
        if !set(&env, name) {
            added.push(json!({"name": name, "value": template.no_proxy()}));
        }
    }
    env.extend(added);
    container["env"] = Value::Array(env);
}

#[cfg(test)]
#[path = "mutate_tests.rs"]
mod tests;
