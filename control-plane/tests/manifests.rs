//! The manifests directory through the binary, object by object as `kubectl apply -f` takes
//! a file: a refused object never takes the file's other objects with it, keeps its last
//! accepted version if it had one, and is logged once with its file and line and shown in
//! `/debug/model`.

mod support;

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use support::binary::http_get;
use support::{Server, node, subscriber};

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { ports: [{ name: http, port: 80 }] }
";

fn slice(address: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: web-1, namespace: shop, labels: {{ kubernetes.io/service-name: web }} }}
addressType: IPv4
ports: [{{ name: http, port: 8080 }}]
endpoints: [{{ addresses: [\"{address}\"], conditions: {{ ready: true }} }}]
"
    )
}

fn probe(name: &str, interval_ms: u32) -> String {
    format!(
        "apiVersion: edgexds.io/v1alpha1
kind: HealthProbe
metadata: {{ name: {name}, namespace: shop }}
spec: {{ targetRef: {{ name: web }}, intervalMs: {interval_ms}, timeoutMs: 10 }}
"
    )
}

fn file(docs: &[String]) -> String {
    docs.join("---\n")
}

/// Starts the binary on a directory holding `content` as `shop.yaml`, logging JSON to a file.
fn start(content: &str) -> (tempfile::TempDir, tempfile::NamedTempFile, Server) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.yaml"), content).unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let flags = ["--log-format", "json", "--debounce", "20ms"];
    let server = Server::start(dir.path(), &flags, Stdio::from(log.reopen().unwrap()));
    // Ready means the first snapshot is out; the model it came from follows it.
    server
        .wait_until("the first model is out", || http_get(server.debug, "/debug/model").is_some_and(|(s, _)| s == 200));
    (dir, log, server)
}

fn model(server: &Server) -> Value {
    let (_, body) = http_get(server.debug, "/debug/model").expect("the debug port answers");
    serde_json::from_str(&body).expect("JSON")
}

/// Each probe in effect, with its base interval as the model's endpoints carry it.
fn probe_intervals(server: &Server) -> Vec<(String, u64)> {
    let model = model(server);
    let mut found: Vec<(String, u64)> = model["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| Some((p["probe"]["name"].as_str()?.to_owned(), p["probe"]["base"]["interval_ms"].as_u64()?)))
        .collect();
    found.sort();
    found
}

fn refusals(server: &Server) -> Vec<String> {
    model(server)["ignored"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| format!("{}: {}", d["object"].as_str().unwrap_or_default(), d["reason"].as_str().unwrap_or_default()))
        .collect()
}

fn endpoints(server: &Server) -> Vec<String> {
    model(server)["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .flat_map(|p| p["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["address"].as_str().map(str::to_owned))
        .collect()
}

fn logged(log: &Path, text: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(text)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_first_load_a_refused_object_is_absent_and_the_rest_of_its_file_is_served() {
    let content = file(&[SERVICE.into(), slice("10.0.0.1"), probe("fast", 50)]);
    let (dir, log, server) = start(&content);
    let mut responses = subscriber(server.xds, node("sidecar")).await;
    let (_, clusters) = responses.recv().await.unwrap();
    assert_eq!(clusters.resources[0].name, "web.shop:80", "the Service beside the bad probe is served");
    assert_eq!(endpoints(&server), ["10.0.0.1"]);
    assert!(probe_intervals(&server).is_empty(), "the refused probe is absent");
    let refused = refusals(&server);
    let at = format!("{}:13: ", dir.path().join("shop.yaml").display());
    assert!(
        refused.iter().any(|r| r.starts_with("HealthProbe shop/fast: ") && r.contains(&at) && r.ends_with("refused")),
        "{refused:?}"
    );
    // Logged once, however often the directory is looked at again.
    std::fs::write(dir.path().join("other.yaml"), SERVICE.replace("name: web", "name: api")).unwrap();
    server
        .wait_until("the other file is served", || model(&server)["services"].as_array().is_some_and(|s| s.len() == 2));
    assert_eq!(logged(log.path(), "HealthProbe shop/fast"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_breaks_one_object_keeps_its_last_version_and_takes_the_rest_of_the_file() {
    let (dir, _log, server) = start(&file(&[SERVICE.into(), slice("10.0.0.1"), probe("web", 1000)]));
    assert_eq!(probe_intervals(&server), [("shop/web".to_owned(), 1000)]);
    std::fs::write(dir.path().join("shop.yaml"), file(&[SERVICE.into(), slice("10.0.0.2"), probe("web", 40)])).unwrap();
    server.wait_until("the new endpoint is served", || endpoints(&server) == ["10.0.0.2"]);
    assert_eq!(probe_intervals(&server), [("shop/web".to_owned(), 1000)], "the last accepted probe stays");
    let refused = refusals(&server);
    assert!(
        refused.iter().any(
            |r| r.starts_with("HealthProbe shop/web: ") && r.ends_with("its last accepted version stays in effect")
        ),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_fixes_a_refused_object_puts_it_in_effect() {
    let (dir, _log, server) = start(&file(&[SERVICE.into(), slice("10.0.0.1"), probe("web", 40)]));
    assert!(probe_intervals(&server).is_empty());
    std::fs::write(dir.path().join("shop.yaml"), file(&[SERVICE.into(), slice("10.0.0.1"), probe("web", 2000)]))
        .unwrap();
    server.wait_until("the fixed probe is in effect", || probe_intervals(&server) == [("shop/web".to_owned(), 2000)]);
    assert!(refusals(&server).is_empty(), "{:?}", refusals(&server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_parsed_keeps_its_whole_last_good_content() {
    let (dir, log, server) = start(&file(&[SERVICE.into(), slice("10.0.0.1"), probe("web", 1000)]));
    std::fs::write(dir.path().join("shop.yaml"), format!("{SERVICE}---\nkind: [unclosed\n")).unwrap();
    server.wait_until("the syntax error is logged", || logged(log.path(), "malformed manifest") == 1);
    assert_eq!(endpoints(&server), ["10.0.0.1"]);
    assert_eq!(probe_intervals(&server), [("shop/web".to_owned(), 1000)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_removed_from_its_file_is_removed() {
    let (dir, _log, server) = start(&file(&[SERVICE.into(), slice("10.0.0.1"), probe("web", 1000)]));
    assert_eq!(probe_intervals(&server), [("shop/web".to_owned(), 1000)]);
    std::fs::write(dir.path().join("shop.yaml"), file(&[SERVICE.into(), slice("10.0.0.1")])).unwrap();
    server.wait_until("the probe is gone", || probe_intervals(&server).is_empty());
    assert_eq!(endpoints(&server), ["10.0.0.1"], "the rest of the file stays");
}
