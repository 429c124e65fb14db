use serde_json::json;

use super::*;
use crate::inject::template::SidecarTemplate;

fn template() -> SidecarTemplate {
    SidecarTemplate {
        image: "envoyproxy/envoy:v1.40.0".into(),
        resources: json!({"requests": {"cpu": "50m", "memory": "64Mi"}}),
        extra_args: vec!["--log-level".into(), "warn".into()],
        xds_address: "edgexds.edgexds.svc:18000".into(),
        ca_pem: "CA".into(),
        token_audience: "edgexds".into(),
        outbound_listener: "127.0.0.1:15001".parse().unwrap(),
        cluster_domain: "cluster.local".into(),
    }
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

fn web() -> Value {
    json!({
        "metadata": {"generateName": "web-5d8f7c9b4-", "namespace": "shop",
                     "labels": {"app": "web", "pod-template-hash": "5d8f7c9b4"}},
        "spec": {"containers": [
            {"name": "app", "image": "web", "env": [{"name": "https_proxy", "value": "http://mine:3128"}]},
            {"name": "log", "image": "log"},
        ]}
    })
}

/// The pod after `decide`'s patch, or `None` when it leaves the pod alone.
fn injected(value: &Value) -> Option<Value> {
    match decide(&pod(value.clone()), &template()).unwrap() {
        Decision::Inject(patch) => {
            let mut after = value.clone();
            json_patch::patch(&mut after, &patch).unwrap();
            Some(after)
        }
        Decision::Leave(_) => None,
    }
}

fn env_names(container: &Value) -> Vec<&str> {
    container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect()
}

#[test]
fn the_sidecar_is_the_first_init_container_restarting_always_and_started_before_the_app() {
    let mut with_init = web();
    with_init["spec"]["initContainers"] = json!([{"name": "migrate", "image": "migrate"}]);
    let after = injected(&with_init).unwrap();
    let init = after["spec"]["initContainers"].as_array().unwrap();
    assert_eq!((init[0]["name"].as_str(), init[1]["name"].as_str()), (Some(SIDECAR), Some("migrate")));
    let sidecar = &init[0];
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], "envoyproxy/envoy:v1.40.0");
    assert_eq!(sidecar["startupProbe"]["httpGet"], json!({"path": "/ready", "port": READY_PORT}));
    assert_eq!(sidecar["args"][0], "--config-yaml");
    let bootstrap: Value = serde_json::from_str(sidecar["args"][1].as_str().unwrap()).unwrap();
    assert_eq!(bootstrap["node"]["cluster"], "web", "named after the Deployment, not the ReplicaSet");
    assert_eq!(&sidecar["args"].as_array().unwrap()[2..], [json!("--log-level"), json!("warn")]);
    assert_eq!(after["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"], "edgexds");
    assert_eq!(after["metadata"]["annotations"][INJECTED], template().hash());
}

#[test]
fn every_app_container_gets_the_proxy_variables_it_does_not_set_itself() {
    let after = injected(&web()).unwrap();
    for container in after["spec"]["containers"].as_array().unwrap() {
        let names = env_names(container);
        for name in PROXY_VARIABLES.iter().chain(&NO_PROXY_VARIABLES) {
            assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name} once in {names:?}");
        }
        let ip = names.iter().position(|n| *n == "EDGEXDS_POD_IP").unwrap();
        assert!(ip < names.iter().position(|n| *n == "NO_PROXY").unwrap(), "defined before NO_PROXY refers to it");
    }
    let app = &after["spec"]["containers"][0];
    let value =
        |name: &str| app["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["value"].clone();
    assert_eq!(value("https_proxy"), "http://mine:3128", "a variable the pod sets is left alone");
    assert_eq!(value("HTTPS_PROXY"), "http://127.0.0.1:15001");
    let no_proxy = value("NO_PROXY");
    for bypassed in
        ["localhost", "127.0.0.1", "$(EDGEXDS_POD_IP)", "$(KUBERNETES_SERVICE_HOST)", "kubernetes.default.svc"]
    {
        assert!(no_proxy.as_str().unwrap().split(',').any(|b| b == bypassed), "{bypassed} in {no_proxy}");
    }
}

#[test]
fn an_annotation_turns_the_proxy_variables_off() {
    let mut off = web();
    off["metadata"]["annotations"] = json!({"edgexds.io/proxy-env": "false"});
    let after = injected(&off).unwrap();
    assert_eq!(env_names(&after["spec"]["containers"][0]), ["https_proxy"]);
    assert!(after["spec"]["containers"][1]["env"].is_null());
}

#[test]
fn an_injected_pod_is_left_unchanged_when_the_webhook_is_called_again() {
    let after = injected(&web()).unwrap();
    assert_eq!(injected(&after), None, "a reinvocation changes nothing");
    let mut by_hand = web();
    by_hand["spec"]["initContainers"] = json!([{"name": SIDECAR, "image": "mine"}]);
    assert_eq!(injected(&by_hand), None, "a pod carrying a sidecar of that name is left alone");
}

#[test]
fn a_pod_labelled_false_is_left_alone() {
    let mut refused = web();
    refused["metadata"]["labels"][INJECT_LABEL] = json!("false");
    assert_eq!(injected(&refused), None);
}

#[test]
fn a_pod_that_cannot_take_the_sidecar_is_refused_with_the_reason() {
    let mut host = web();
    host["spec"]["hostNetwork"] = json!(true);
    let refusal = decide(&pod(host), &template()).unwrap_err().message();
    assert!(refusal.contains("hostNetwork"), "{refusal}");
    let mut port = web();
    port["spec"]["containers"][0]["ports"] = json!([{"containerPort": 15001}]);
    let refusal = decide(&pod(port), &template()).unwrap_err().message();
    assert!(refusal.contains("container app uses port 15001"), "{refusal}");
}

#[test]
fn the_workload_is_the_deployment_for_a_replica_sets_pod_and_the_stem_otherwise() {
    assert_eq!(workload_of(&pod(web())), "web");
    assert_eq!(workload_of(&pod(json!({"metadata": {"generateName": "nightly-29010-"}}))), "nightly-29010");
    assert_eq!(workload_of(&pod(json!({"metadata": {"name": "debug"}}))), "debug");
}
