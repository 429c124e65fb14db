//! The test kubelet's own tests, against the real API server, controllers and scheduler: the
//! status it writes is what the EndpointSlice controller needs (and turns into the slice a
//! real cluster has), and a deleted pod goes in the kubelet's order while still serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgexds_tests::cluster::{Cluster, endpoint_conditions, pod_ready, wait_pod, wait_slices};
use edgexds_tests::http;
use edgexds_tests::kube_objects::{UPSTREAM_PORT, Upstream, selecting_service};
use edgexds_tests::kube_server::apply;
use edgexds_tests::kubelet::PodEvent;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};

const PATIENCE: Duration = Duration::from_secs(60);

async fn session() -> (&'static Cluster, kube::Client, String) {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    (cluster, admin, ns)
}

fn ip_of(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_on_its_own_address_and_its_status_and_slice_say_so_as_in_a_real_cluster() {
    let (cluster, admin, ns) = session().await;
    apply(&admin, &selecting_service(&ns, "solo", 80, None)).await.unwrap();
    apply(&admin, &Upstream::default().pod(&ns, "solo-0", "solo")).await.unwrap();
    let pod = wait_pod(&admin, &ns, "solo-0", PATIENCE, "the pod is ready", pod_ready).await.expect("the pod");

    let status = pod.status.clone().unwrap();
    let ip = ip_of(&pod);
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ips.unwrap()[0].ip, ip);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).expect("bound by the scheduler");
    let (spec, net) = cluster.kubelet.nodes.iter().find(|(spec, _)| spec.name == node).expect("one of ours");
    assert!(ip.starts_with(net.cidr.trim_end_matches("0/24")), "{ip} in {}", net.cidr);
    assert_eq!(status.host_ip, Some(net.gateway.to_string()));
    let container = &status.container_statuses.unwrap()[0];
    assert!(container.ready && container.state.as_ref().unwrap().running.is_some());
    // The process answers on the pod's own address.
    let reply = http::get(&format!("http://{ip}:{UPSTREAM_PORT}/")).await.unwrap();
    assert_eq!(reply.body, "solo-0");

    // The controller's slice: the address, the zone from the Node's label, ready.
    let slices = wait_slices(&admin, &ns, "solo", PATIENCE, "the controller lists the pod", |slices| {
        endpoint_conditions(slices).get(&ip) == Some(&(true, true, false))
    })
    .await;
    let endpoint = slices.iter().flat_map(|s| s.endpoints.iter()).find(|e| e.addresses == [ip.clone()]).unwrap();
    assert_eq!(endpoint.zone.as_deref(), Some(spec.zone.as_str()));
    assert_eq!(endpoint.node_name.as_deref(), Some(node.as_str()));

    // Readiness failing turns the pod, and then its endpoint, not ready.
    http::post(&format!("http://{ip}:{UPSTREAM_PORT}/admin/ready?to=false"), "").await.unwrap();
    wait_pod(&admin, &ns, "solo-0", PATIENCE, "the pod is not ready", |pod| !pod_ready(pod)).await;
    wait_slices(&admin, &ns, "solo", PATIENCE, "the endpoint is not ready", |slices| {
        endpoint_conditions(slices).get(&ip) == Some(&(false, false, false))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_terminates_in_the_kubelets_order_and_serves_until_its_process_stops() {
    let (cluster, admin, ns) = session().await;
    let upstream = Upstream { drain_seconds: 2, pre_stop_seconds: 1, grace_seconds: 10, ..Default::default() };
    apply(&admin, &selecting_service(&ns, "leaving", 80, None)).await.unwrap();
    apply(&admin, &upstream.pod(&ns, "leaving-0", "leaving")).await.unwrap();
    let pod = wait_pod(&admin, &ns, "leaving-0", PATIENCE, "the pod is ready", pod_ready).await.unwrap();
    let ip = ip_of(&pod);
    wait_slices(&admin, &ns, "leaving", PATIENCE, "the endpoint is ready", |slices| {
        endpoint_conditions(slices).get(&ip) == Some(&(true, true, false))
    })
    .await;

    // Asks the pod every 50 ms until it stops answering; the last answer's time.
    let answering = Arc::new(AtomicBool::new(true));
    let prober = {
        let (url, answering) = (format!("http://{ip}:{UPSTREAM_PORT}/"), answering.clone());
        tokio::spawn(async move {
            let mut last = Instant::now();
            while answering.load(Ordering::Relaxed) {
                if http::get(&url).await.is_ok_and(|r| r.status == 200) {
                    last = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last
        })
    };
    let deleted = Instant::now();
    Api::<Pod>::namespaced(admin.clone(), &ns).delete("leaving-0", &DeleteParams::default()).await.unwrap();
    // Terminating, and still serving: the controller says so.
    wait_slices(&admin, &ns, "leaving", PATIENCE, "the endpoint is serving and terminating", |slices| {
        endpoint_conditions(slices).get(&ip) == Some(&(false, true, true))
    })
    .await;
    let key = format!("{ns}/leaving-0");
    let timeline = &cluster.kubelet.timeline;
    timeline.wait_until(PATIENCE, "the pod is removed", |t| t.first(&key, |e| *e == PodEvent::Removed).is_some()).await;
    answering.store(false, Ordering::Relaxed);
    let last_answer = prober.await.unwrap();

    let at = |what: PodEvent| timeline.first(&key, |e| *e == what).unwrap_or_else(|| panic!("no {what:?}"));
    let (terminating, term, exited, removed) =
        (at(PodEvent::Terminating), at(PodEvent::SigTerm), at(PodEvent::Exited), at(PodEvent::Removed));
    assert!(terminating >= deleted && terminating < term && term < exited && exited <= removed, "in order");
    assert!(term - terminating >= Duration::from_secs(1), "SIGTERM after the 1 s preStop sleep");
    assert!(exited - term >= Duration::from_secs(2), "the process served its 2 s drain");
    assert!(exited - deleted < Duration::from_secs(10), "within the grace period");
    assert!(last_answer >= term + Duration::from_millis(1500), "it answered while draining");
    wait_pod(&admin, &ns, "leaving-0", PATIENCE, "the pod is gone", |pod| pod.is_none()).await;
    wait_slices(&admin, &ns, "leaving", PATIENCE, "the endpoint is gone", |slices| {
        !endpoint_conditions(slices).contains_key(&ip)
    })
    .await;
}
