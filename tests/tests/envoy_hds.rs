//! HDS with real Envoys: checkers probe per endpoint at each endpoint's own interval, and
//! their verdicts reach sidecars as EDS health_status.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use edgexds::hds::{HubView, Verdict};
use edgexds::translate::ActiveHealthChecks;
use edgexds_tests::control_plane::{ControlPlane, web_probe, web_service, web_slice};
use edgexds_tests::envoy::{Envoy, ROUTED_CLUSTER, checker_bootstrap};
use edgexds_tests::upstream::Upstream;
use edgexds_tests::{eventually, init_test_logs};

/// Envoy start-up is slow on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);
const BASE_MS: u32 = 1000;
const BASE_FAILURES: u32 = 3;
const CANARY_MS: u32 = 250;
const CANARY_FAILURES: u32 = 2;
const DEBOUNCE: Duration = Duration::from_millis(100);

struct Setup {
    cp: ControlPlane,
    base: Upstream,
    canary: Upstream,
    sidecar: Envoy,
}

async fn setup(mode: ActiveHealthChecks, checkers_per_endpoint: usize) -> Setup {
    init_test_logs();
    let (base, canary) = Upstream::pair("base", "canary").await;
    let cp = ControlPlane::start_hds(mode, checkers_per_endpoint).await.expect("control plane starts");
    cp.write("web.yaml", &web_service());
    cp.write("web-slice.yaml", &web_slice(&[&base, &canary]));
    cp.write("web-probe.yaml", &web_probe(BASE_MS, CANARY_MS));
    let sidecar = Envoy::start("hds-sidecar", cp.xds_addr()).await.expect("sidecar starts");
    Setup { cp, base, canary, sidecar }
}

async fn checker(cp: &ControlPlane, id: &str, node: &str) -> Envoy {
    Envoy::start_with(checker_bootstrap(id, node, cp.xds_addr())).await.expect("checker starts")
}

fn view(cp: &ControlPlane) -> HubView {
    cp.running.hds.as_ref().expect("HDS is on").view(Instant::now())
}

fn verdict(view: &HubView, address: SocketAddr) -> Option<Verdict> {
    view.endpoints.iter().find(|e| e.address == address).map(|e| e.verdict)
}

/// Waits until the sidecar's EDS says `status` for `address`; returns how long that took.
async fn sidecar_sees(sidecar: &Envoy, address: SocketAddr, status: &str, limit: Duration) -> Duration {
    let what = format!("sidecar sees {address} {status}");
    let (_, took) = eventually(limit, &what, || async {
        (sidecar.endpoint_health(ROUTED_CLUSTER, address).await.ok().flatten().as_deref() == Some(status)).then_some(())
    })
    .await;
    took
}

/// Both endpoints judged healthy by fresh reports.
async fn checked_and_healthy(cp: &ControlPlane, s: &Setup) {
    eventually(SETTLE, "both endpoints checked and healthy", || async {
        let view = view(cp);
        (verdict(&view, s.base.addr) == Some(Verdict::Healthy)
            && verdict(&view, s.canary.addr) == Some(Verdict::Healthy))
        .then_some(())
    })
    .await;
}

/// The detection budget the issue sets: interval × failureThreshold + debounce + 1s.
fn budget(interval_ms: u32, failures: u32) -> Duration {
    Duration::from_millis(u64::from(interval_ms * failures)) + DEBOUNCE + Duration::from_secs(1)
}

async fn only_base_answers(sidecar: &Envoy) -> bool {
    for _ in 0..20 {
        match sidecar.request("/").await {
            Ok(reply) if reply.status == 200 && reply.body == "base" => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checker_probes_each_endpoint_at_its_own_interval_and_sidecars_follow_its_verdicts() {
    let s = setup(ActiveHealthChecks::Hds, 2).await;
    let _checker = checker(&s.cp, "checker-1", "node-9").await;
    checked_and_healthy(&s.cp, &s).await;

    let view = view(&s.cp);
    let intervals: Vec<(SocketAddr, u32)> = view.endpoints.iter().map(|e| (e.address, e.interval_ms)).collect();
    assert_eq!(intervals, [(s.base.addr, BASE_MS), (s.canary.addr, CANARY_MS)], "one schedule group per policy");
    let (cluster, _) = s.sidecar.cluster_and_endpoints(ROUTED_CLUSTER).await.unwrap().expect("sidecar has web");
    assert!(cluster.get("health_checks").is_none(), "with HDS, sidecars do not probe: {cluster}");

    // HealthProbe rates as the upstreams see them: the checker really runs the two schedules.
    // Counted over the time the canary takes for 12 probes, however slow the machine is.
    let (base_before, canary_before) = (s.base.probes(), s.canary.probes());
    let window = probes_arrive(|| s.canary.probes(), canary_before + 12).await;
    let seconds = window.as_secs_f64();
    let (base_rate, canary_rate) =
        ((s.base.probes() - base_before) as f64 / seconds, (s.canary.probes() - canary_before) as f64 / seconds);
    eprintln!(
        "probes/s from one checker: base {base_rate:.1} (every {BASE_MS}ms), canary {canary_rate:.1} (every {CANARY_MS}ms)"
    );
    assert!(canary_rate > 2.0 * base_rate, "canary probed ~4x as often: {canary_rate} vs {base_rate}");

    // The canary fails: only the checker probes it, and the sidecar stops sending it traffic.
    let started = Instant::now();
    s.canary.set_healthy(false);
    sidecar_sees(&s.sidecar, s.canary.addr, "UNHEALTHY", SETTLE).await;
    let canary_detection = started.elapsed();
    assert!(only_base_answers(&s.sidecar).await, "traffic avoids the failing canary");
    s.canary.set_healthy(true);
    let canary_recovery = sidecar_sees(&s.sidecar, s.canary.addr, "HEALTHY", SETTLE).await;

    let started = Instant::now();
    s.base.set_healthy(false);
    sidecar_sees(&s.sidecar, s.base.addr, "UNHEALTHY", SETTLE).await;
    let base_detection = started.elapsed();
    s.base.set_healthy(true);
    let base_recovery = sidecar_sees(&s.sidecar, s.base.addr, "HEALTHY", SETTLE).await;

    eprintln!(
        "detection: canary {canary_detection:?} (budget {:?}), base {base_detection:?} (budget {:?}); \
         recovery: canary {canary_recovery:?}, base {base_recovery:?}",
        budget(CANARY_MS, CANARY_FAILURES),
        budget(BASE_MS, BASE_FAILURES)
    );
    assert!(canary_detection <= budget(CANARY_MS, CANARY_FAILURES), "canary detected in {canary_detection:?}");
    assert!(base_detection <= budget(BASE_MS, BASE_FAILURES), "base detected in {base_detection:?}");
    assert!(
        base_detection.as_secs_f64() > 2.0 * canary_detection.as_secs_f64(),
        "the 4x faster override detects clearly faster: canary {canary_detection:?}, base {base_detection:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_only_checker_falls_back_to_kubernetes_readiness_and_loses_nothing() {
    let s = setup(ActiveHealthChecks::Hds, 2).await;
    let only = checker(&s.cp, "checker-1", "node-9").await;
    checked_and_healthy(&s.cp, &s).await;
    s.canary.set_healthy(false);
    sidecar_sees(&s.sidecar, s.canary.addr, "UNHEALTHY", SETTLE).await;

    only.kill().await;
    // The last reports go stale (3 × max(250ms interval, 500ms reports)); Kubernetes says ready.
    let fallback = sidecar_sees(&s.sidecar, s.canary.addr, "HEALTHY", SETTLE).await;
    eprintln!("fallback to Kubernetes readiness after the checker died: {fallback:?}");
    assert_eq!(s.sidecar.endpoint_health(ROUTED_CLUSTER, s.base.addr).await.unwrap().as_deref(), Some("HEALTHY"));
    eventually(SETTLE, "no checker, every verdict left to Kubernetes", || async {
        let view = view(&s.cp);
        (view.checkers.is_empty()
            && view.endpoints.iter().all(|e| e.checkers.is_empty() && e.verdict == Verdict::Unknown))
        .then_some(())
    })
    .await;
    let metrics = s.cp.running.metrics.encode();
    assert!(metrics.contains("edgexds_hds_unchecked_endpoints 2"), "{metrics}");

    // A new checker picks everything up again.
    let _again = checker(&s.cp, "checker-2", "node-9").await;
    sidecar_sees(&s.sidecar, s.canary.addr, "UNHEALTHY", SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_checkers_split_the_endpoints_evenly_and_take_over_for_each_other() {
    let s = setup(ActiveHealthChecks::Hds, 1).await;
    let first = checker(&s.cp, "checker-a", "node-0").await;
    let _second = checker(&s.cp, "checker-b", "node-1").await;
    eventually(SETTLE, "each checker has one endpoint", || async {
        let view = view(&s.cp);
        (view.checkers.len() == 2 && view.checkers.iter().all(|c| c.endpoints == 1)).then_some(())
    })
    .await;
    let split = view(&s.cp);
    let holder = |address| split.endpoints.iter().find(|e| e.address == address).unwrap().checkers[0].node.clone();
    assert_eq!(holder(s.base.addr), "checker-a", "pods on node-0 are checked from node-0");
    assert_eq!(holder(s.canary.addr), "checker-b");
    checked_and_healthy(&s.cp, &s).await;

    first.kill().await;
    eventually(SETTLE, "checker-b takes both endpoints", || async {
        let view = view(&s.cp);
        (view.checkers.len() == 1 && view.checkers[0].endpoints == 2).then_some(())
    })
    .await;
    s.base.set_healthy(false);
    let took = sidecar_sees(&s.sidecar, s.base.addr, "UNHEALTHY", SETTLE).await;
    eprintln!("base endpoint, taken over by checker-b, detected failing in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_mode_keeps_sidecar_health_checks_and_publishes_verdicts() {
    let s = setup(ActiveHealthChecks::Both, 2).await;
    let _checker = checker(&s.cp, "checker-1", "node-9").await;
    checked_and_healthy(&s.cp, &s).await;
    let (cluster, _) = s.sidecar.cluster_and_endpoints(ROUTED_CLUSTER).await.unwrap().expect("sidecar has web");
    assert_eq!(cluster["health_checks"][0]["interval"], "1s");
    s.canary.set_healthy(false);
    let took = sidecar_sees(&s.sidecar, s.canary.addr, "UNHEALTHY", SETTLE).await;
    assert!(took <= budget(CANARY_MS, CANARY_FAILURES), "the verdict is published in both mode too: {took:?}");
}

/// 20 upstreams on one port of 127.0.0.1 ..= 127.0.0.20: one Service with 20 pods.
async fn twenty_upstreams() -> Vec<Upstream> {
    'attempt: for _ in 0..20 {
        let first = Upstream::start("pod-1", [127, 0, 0, 1].into(), 0).await.expect("bind 127.0.0.1");
        let port = first.addr.port();
        let mut all = vec![first];
        for i in 2..=20u8 {
            match Upstream::start(&format!("pod-{i}"), [127, 0, 0, i].into(), port).await {
                Ok(upstream) => all.push(upstream),
                Err(_) => continue 'attempt,
            }
        }
        return all;
    }
    panic!("no port free on 127.0.0.1..=20");
}

/// Probes per second the upstreams receive in a steady state with 10 sidecars (and, for HDS, 2 checkers).
async fn probe_rate(mode: ActiveHealthChecks, upstreams: &[Upstream]) -> f64 {
    let cp = ControlPlane::start_hds(mode, 2).await.expect("control plane starts");
    cp.write("web.yaml", &web_service());
    cp.write("web-slice.yaml", &web_slice(&upstreams.iter().collect::<Vec<_>>()));
    cp.write("web-probe.yaml", &web_probe(BASE_MS, BASE_MS));
    let mut envoys = Vec::new();
    for i in 0..10 {
        envoys.push(Envoy::start(&format!("sidecar-{i}"), cp.xds_addr()).await.expect("sidecar starts"));
    }
    if mode.uses_hds() {
        envoys.push(checker(&cp, "checker-a", "node-a").await);
        envoys.push(checker(&cp, "checker-b", "node-b").await);
    }
    for sidecar in &envoys[..10] {
        let last = upstreams[19].addr;
        sidecar_sees(sidecar, last, "HEALTHY", SETTLE).await;
    }
    // Every endpoint has been probed since: every health checker is on its steady interval.
    let each = |upstream: &Upstream| upstream.probes();
    let seen: Vec<u64> = upstreams.iter().map(each).collect();
    for (upstream, before) in upstreams.iter().zip(seen) {
        probes_arrive(|| each(upstream), before + 2).await;
    }
    // The rate over the time 200 probes take, however slow the machine is.
    let count = || upstreams.iter().map(Upstream::probes).sum::<u64>();
    let before = count();
    let took = probes_arrive(count, before + 200).await;
    (count() - before) as f64 / took.as_secs_f64()
}

/// Waits until `count` reaches `target`; how long that took.
async fn probes_arrive(count: impl Fn() -> u64, target: u64) -> Duration {
    let (_, took) =
        eventually(Duration::from_secs(30), "probes arrive", || async { (count() >= target).then_some(()) }).await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hds_probes_each_endpoint_from_two_checkers_instead_of_from_every_sidecar() {
    init_test_logs();
    let upstreams = twenty_upstreams().await;
    let per_sidecar = probe_rate(ActiveHealthChecks::Cds, &upstreams).await;
    let hds = probe_rate(ActiveHealthChecks::Hds, &upstreams).await;
    eprintln!(
        "10 sidecars x 20 endpoints, {BASE_MS}ms interval: per-sidecar CDS checks {per_sidecar:.1} probes/s, \
         HDS with 2 checkers per endpoint {hds:.1} probes/s ({:.1}x fewer)",
        per_sidecar / hds
    );
    assert!(per_sidecar > 150.0, "every sidecar probes every endpoint: {per_sidecar}");
    assert!(hds < 60.0 && hds > 25.0, "two checkers per endpoint: {hds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_alone_take_out_at_most_half_of_a_cluster_and_beyond_it_everything_keeps_serving() {
    let s = setup(ActiveHealthChecks::Hds, 1).await;
    let _checker = checker(&s.cp, "checker-1", "node-9").await;
    checked_and_healthy(&s.cp, &s).await;

    // Every endpoint fails its probe: more than the default 50 % limit.
    s.base.set_healthy(false);
    s.canary.set_healthy(false);
    eventually(SETTLE, "the cluster failed open", || async {
        (view(&s.cp).failed_open_clusters == [ROUTED_CLUSTER]).then_some(())
    })
    .await;
    // The canary, failing faster, may have been taken out alone (half is allowed) before the
    // base failed too; failing open then brings it back with the next EDS push.
    for upstream in [&s.base, &s.canary] {
        sidecar_sees(&s.sidecar, upstream.addr, "HEALTHY", SETTLE).await;
    }
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let reply = s.sidecar.request("/").await.unwrap();
        assert_eq!(reply.status, 200);
        answered.insert(reply.body);
    }
    assert_eq!(answered.len(), 2, "both upstreams keep serving: {answered:?}");

    // Half is within the limit: the canary alone is taken out.
    s.base.set_healthy(true);
    sidecar_sees(&s.sidecar, s.canary.addr, "UNHEALTHY", SETTLE).await;
    assert!(view(&s.cp).failed_open_clusters.is_empty());
    assert!(only_base_answers(&s.sidecar).await);
}
