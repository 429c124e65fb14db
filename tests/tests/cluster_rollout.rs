//! What a platform team buys a mesh for, proven on a real cluster (the real API server,
//! EndpointSlice/Deployment/ReplicaSet controllers and scheduler, pods as real processes on the
//! test kubelet), through a real sidecar Envoy and grpcio's own xDS resolver, against the
//! real edgexds binary:
//! - `kubectl rollout restart` while 50 requests a second flow fails none, and every request
//!   lands on a pod that was ready then;
//! - a terminating pod that still serves is DRAINING, gets no new requests, and leaves EDS
//!   when the controller drops it (Envoy treats DRAINING as UNHEALTHY: `HealthStatus` in
//!   `envoy/config/core/v3/health_check.proto`);
//! - edgexds itself upgraded replica by replica during an app rollout fails no request, and a
//!   sidecar that reconnects is resent nothing it has.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgexds_tests::cluster::{Cluster, endpoint_conditions, pod_ready, wait_pod, wait_slices};
use edgexds_tests::kube_objects::{UPSTREAM_PORT, Upstream, selecting_service};
use edgexds_tests::kube_server::apply;
use edgexds_tests::kubelet::PodEvent;
use edgexds_tests::mesh::{Mesh, SETTLE};
use edgexds_tests::traffic::{DrainWatch, GrpcLoad, HttpLoad, Report, Sample, landed_on_unready};
use edgexds_tests::{eventually, http};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};

const RATE: u32 = 50;

async fn session() -> (&'static Cluster, kube::Client, String) {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    (cluster, admin, ns)
}

/// Deploys `replicas` pods of web behind Service web (port 80, appProtocol grpc) in `ns`, and
/// waits until the controller lists them all ready.
async fn deploy(admin: &kube::Client, ns: &str, upstream: &Upstream, replicas: usize) {
    apply(admin, &selecting_service(ns, "web", 80, Some("grpc"))).await.unwrap();
    apply(admin, &upstream.deployment(ns, "web", replicas as u32)).await.unwrap();
    wait_slices(admin, ns, "web", SETTLE, "every pod is ready", |slices| {
        let endpoints = endpoint_conditions(slices);
        endpoints.len() == replicas && endpoints.values().all(|c| *c == (true, true, false))
    })
    .await;
}

/// Waits until the sidecar routes to `pods` distinct pods.
async fn sidecar_reaches(mesh: &Mesh, ns: &str, pods: usize) {
    let url = format!("http://web.{ns}/");
    eventually(SETTLE, &format!("the sidecar reaches {pods} pods"), || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..(pods * 6) {
            if let Some((200, body)) = http::through_proxy(mesh.proxy, &url).await {
                seen.insert(body);
            }
        }
        (seen.len() == pods).then_some(())
    })
    .await;
}

/// The pods of app web now.
async fn web_pods(admin: &kube::Client, ns: &str) -> Vec<String> {
    let pods = Api::<Pod>::namespaced(admin.clone(), ns).list(&ListParams::default().labels("app=web")).await.unwrap();
    pods.items.into_iter().filter_map(|p| p.metadata.name).collect()
}

/// Runs `kubectl rollout restart` and waits for `kubectl rollout status`, as an operator does.
async fn rollout_restart(cluster: &'static Cluster, ns: &str) {
    let ns = ns.to_owned();
    tokio::task::spawn_blocking(move || {
        cluster.kube.kubectl(&["rollout", "restart", "deployment/web", "-n", &ns]).unwrap();
        cluster.kube.kubectl(&["rollout", "status", "deployment/web", "-n", &ns, "--timeout=300s"]).unwrap();
    })
    .await
    .unwrap();
}

/// Waits until every pod in `pods` is removed.
async fn all_removed(cluster: &Cluster, ns: &str, pods: &[String]) {
    let keys: Vec<String> = pods.iter().map(|p| format!("{ns}/{p}")).collect();
    cluster
        .kubelet
        .timeline
        .wait_until(SETTLE, "the old pods are removed", |t| {
            keys.iter().all(|k| t.first(k, |e| *e == PodEvent::Removed).is_some())
        })
        .await;
}

/// Asserts no failure and no answer from a pod that was not ready; prints the report.
fn check(label: &str, samples: &[Sample], cluster: &Cluster, ns: &str) -> Report {
    let report = Report::of(samples);
    eprintln!("{}", report.summary(label));
    assert!(report.sent > 0, "{label}: nothing was sent");
    assert!(
        report.failed.is_empty(),
        "{label}: {} failed, e.g. {:?}",
        report.failed.len(),
        &report.failed[..report.failed.len().min(5)]
    );
    let unready = landed_on_unready(samples, &cluster.kubelet.timeline, ns);
    assert!(
        unready.is_empty(),
        "{label}: {} answered by a pod not ready then, e.g. {:?}",
        unready.len(),
        unready.first()
    );
    report
}

/// How long each old pod's address was DRAINING in the sidecar, by pod.
fn draining_by_pod(
    cluster: &Cluster,
    ns: &str,
    pods: &[String],
    draining: &BTreeMap<String, (Instant, Instant)>,
) -> Vec<(String, Duration)> {
    pods.iter()
        .filter_map(|pod| {
            let key = format!("{ns}/{pod}");
            let events = cluster.kubelet.timeline.events(&key);
            let ip = events.iter().find_map(|(_, e)| match e {
                PodEvent::Started(ip) => Some(*ip),
                _ => None,
            })?;
            let (first, last) = draining.get(&format!("{ip}:{UPSTREAM_PORT}"))?;
            Some((pod.clone(), *last - *first))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_restart_while_traffic_flows_fails_no_request_and_lands_only_on_ready_pods() {
    let (cluster, admin, ns) = session().await;
    let upstream = Upstream { drain_seconds: 2, pre_stop_seconds: 1, grace_seconds: 10, ..Default::default() };
    deploy(&admin, &ns, &upstream, 6).await;
    let mesh = Mesh::start(cluster, &ns, 1).await.unwrap();
    sidecar_reaches(&mesh, &ns, 6).await;
    let grpc = GrpcLoad::start(&mesh.grpc_bootstrap, &format!("xds:///web.{ns}:80"), RATE).await.unwrap();
    let old = web_pods(&admin, &ns).await;

    let drain = DrainWatch::start(&mesh.envoy.admin, &format!("web.{ns}:80"));
    let http = HttpLoad::start(mesh.proxy, &format!("http://web.{ns}/"), RATE);
    let started = Instant::now();
    rollout_restart(cluster, &ns).await;
    all_removed(cluster, &ns, &old).await;
    let took = started.elapsed();
    let (sidecar, proxyless, draining) = (http.stop().await, grpc.stop().await.unwrap(), drain.stop().await);

    eprintln!("rollout of 6 pods (maxSurge 1, maxUnavailable 0) took {took:.1?}");
    let sidecar = check("sidecar Envoy", &sidecar, cluster, &ns);
    let proxyless = check("proxyless grpcio", &proxyless, cluster, &ns);
    let new = web_pods(&admin, &ns).await;
    assert!(new.iter().all(|p| !old.contains(p)), "every pod was replaced");
    for report in [&sidecar, &proxyless] {
        assert!(new.iter().any(|p| report.per_pod.contains_key(p)), "traffic reached the new pods");
    }
    let drained = draining_by_pod(cluster, &ns, &old, &draining);
    for (pod, time) in &drained {
        eprintln!("{pod} was DRAINING in the sidecar for {time:.1?}");
    }
    assert!(!drained.is_empty(), "the sidecar saw old pods DRAINING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_pod_that_still_serves_is_draining_gets_no_new_requests_and_leaves_when_dropped() {
    let (cluster, admin, ns) = session().await;
    // A long preStop keeps the pod serving while terminating, long enough to look at.
    let upstream = Upstream { drain_seconds: 1, pre_stop_seconds: 6, grace_seconds: 20, ..Default::default() };
    deploy(&admin, &ns, &upstream, 3).await;
    let mesh = Mesh::start(cluster, &ns, 1).await.unwrap();
    sidecar_reaches(&mesh, &ns, 3).await;
    let grpc = GrpcLoad::start(&mesh.grpc_bootstrap, &format!("xds:///web.{ns}:80"), RATE).await.unwrap();
    let pods = web_pods(&admin, &ns).await;
    let leaving = pods[0].clone();
    let pod = wait_pod(&admin, &ns, &leaving, SETTLE, "ready", pod_ready).await.unwrap();
    let address = format!("{}:{UPSTREAM_PORT}", pod.status.unwrap().pod_ip.unwrap());
    let cluster_name = format!("web.{ns}:80");

    // Deleted; the Deployment replaces it, and meanwhile it serves for its preStop.
    Api::<Pod>::namespaced(admin.clone(), &ns).delete(&leaving, &DeleteParams::default()).await.unwrap();
    eventually(SETTLE, "the sidecar has the pod DRAINING", || async {
        let states = mesh.envoy.endpoint_states(&cluster_name).await.ok()?;
        (states.get(&address).map(String::as_str) == Some("DRAINING")).then_some(())
    })
    .await;
    let draining_from = Instant::now();
    let http = HttpLoad::start(mesh.proxy, &format!("http://web.{ns}/"), RATE);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sidecar = http.stop().await;
    let key = format!("{ns}/{leaving}");
    assert!(
        cluster.kubelet.timeline.first(&key, |e| *e == PodEvent::SigTerm).is_none(),
        "the pod was still in its preStop, serving, all along"
    );
    let sidecar = check("sidecar Envoy while the pod was DRAINING", &sidecar, cluster, &ns);
    assert!(!sidecar.per_pod.contains_key(&leaving), "the DRAINING pod got no new request: {:?}", sidecar.per_pod);

    // Gone from EDS once the controller drops it.
    cluster
        .kubelet
        .timeline
        .wait_until(SETTLE, "the pod is removed", |t| t.first(&key, |e| *e == PodEvent::Removed).is_some())
        .await;
    wait_slices(&admin, &ns, "web", SETTLE, "the controller dropped it", |slices| {
        !endpoint_conditions(slices).contains_key(address.split(':').next().unwrap_or_default())
    })
    .await;
    eventually(SETTLE, "the sidecar dropped it", || async {
        let states = mesh.envoy.endpoint_states(&cluster_name).await.ok()?;
        (!states.contains_key(&address)).then_some(())
    })
    .await;
    eprintln!("{leaving} was DRAINING in the sidecar for about {:.1?}", draining_from.elapsed());
    let proxyless = grpc.stop().await.unwrap();
    // grpcio learns of it with the sidecar; half a second of slack for that.
    let window = (draining_from + Duration::from_millis(500), draining_from + Duration::from_secs(2));
    let drained_calls: Vec<&Sample> = proxyless
        .iter()
        .filter(|s| s.sent >= window.0 && s.sent <= window.1 && s.pod.as_deref() == Ok(leaving.as_str()))
        .collect();
    assert!(drained_calls.is_empty(), "grpcio sent {} new calls to the DRAINING pod", drained_calls.len());
    let proxyless = check("proxyless grpcio", &proxyless, cluster, &ns);
    assert!(proxyless.per_pod.len() >= 3, "calls reached the other pods and the replacement: {:?}", proxyless.per_pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_edgexds_replica_by_replica_during_a_rollout_fails_no_request_and_resends_nothing() {
    let (cluster, admin, ns) = session().await;
    let upstream = Upstream { drain_seconds: 2, pre_stop_seconds: 1, grace_seconds: 10, ..Default::default() };
    deploy(&admin, &ns, &upstream, 4).await;
    let mut mesh = Mesh::start(cluster, &ns, 2).await.unwrap();
    sidecar_reaches(&mesh, &ns, 4).await;
    let grpc = GrpcLoad::start(&mesh.grpc_bootstrap, &format!("xds:///web.{ns}:80"), RATE).await.unwrap();
    let old = web_pods(&admin, &ns).await;
    let http = HttpLoad::start(mesh.proxy, &format!("http://web.{ns}/"), RATE);

    let rollout = tokio::spawn({
        let ns = ns.clone();
        async move { rollout_restart(cluster, &ns).await }
    });
    let upgrade = Instant::now();
    let streams = |mesh: &Mesh| mesh.replicas.iter().map(|r| r.metric("edgexds_xds_streams")).sum::<f64>();
    for index in 0..2 {
        mesh.replace(index).await;
        // One at a time, as a Deployment with maxUnavailable 1 replaces them: the next goes
        // once the clients are connected again.
        eventually(SETTLE, "the sidecar and the proxyless client are connected again", || async {
            (streams(&mesh) >= 2.0).then_some(())
        })
        .await;
    }
    let upgraded = upgrade.elapsed();
    rollout.await.unwrap();
    all_removed(cluster, &ns, &old).await;
    let (sidecar, proxyless) = (http.stop().await, grpc.stop().await.unwrap());
    eprintln!("both replicas replaced in {upgraded:.1?} while the app rolled");
    check("sidecar Envoy", &sidecar, cluster, &ns);
    check("proxyless grpcio", &proxyless, cluster, &ns);
    // Whoever a client reconnected to served the versions it had: nothing is resent but what
    // changed (endpoints, while the rollout ran); clusters, listeners and routes did not.
    let resent: Vec<f64> = mesh
        .replicas
        .iter()
        .map(|replica| {
            ["cds", "lds", "rds"]
                .iter()
                .map(|ty| replica.metric(&format!("edgexds_xds_resources_sent_total{{type=\"{ty}\"}}")))
                .sum()
        })
        .collect();
    eprintln!("clusters, listeners and routes resent by each new replica: {resent:?}");
    assert!(resent.iter().all(|n| *n == 0.0), "a reconnecting client is resent nothing unchanged: {resent:?}");
}
