//! Gateway API HTTPRoutes on a Service, from a manifests file, through a real sidecar Envoy
//! (delta and state-of-the-world ADS; the scenario of `edgexds_tests::traffic_policy`, which
//! `cluster_routes.rs` runs on a real cluster too): a weighted canary split, a header match to a second
//! Service, a prefix rewrite, a request timeout, a retry over a flaky backend, request and
//! response header modifiers seen at both ends, and a mirror whose target gets the copies.
//! And for a proxyless client (grpcio's own xDS resolver), the route's retry retries a gRPC
//! method failing UNAVAILABLE (gRFC A44). Retry is Experimental at v1.6.3, so it is tested
//! here, from a file: the test cluster installs the Standard channel's CRDs, which refuse it.

use std::net::SocketAddr;
use std::time::Duration;

use edgexds::translate::TranslateOptions;
use edgexds_tests::control_plane::{ControlPlane, service_yaml};
use edgexds_tests::envoy::{Envoy, sidecar_bootstrap};
use edgexds_tests::eventually;
use edgexds_tests::traffic_policy;
use edgexds_tests::upstream::Upstream;

const SETTLE: Duration = Duration::from_secs(30);

async fn start(api_type: &str) -> (ControlPlane, SocketAddr, [Upstream; 3], Envoy) {
    let outbound: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let options = TranslateOptions { outbound_listener: outbound, ..Default::default() };
    let web = Upstream::start("web-v1", [127, 0, 0, 1].into(), 0).await.unwrap();
    let canary = Upstream::start("web-v2", [127, 0, 0, 1].into(), 0).await.unwrap();
    let shadow = Upstream::start("shadow", [127, 0, 0, 1].into(), 0).await.unwrap();
    let cp = ControlPlane::start(options).await.expect("control plane starts");
    let services = [("web", &web), ("web-v2", &canary), ("shadow", &shadow)]
        .map(|(name, upstream)| service_yaml(name, 80, upstream))
        .join("---\n");
    cp.write("services.yaml", &services);
    cp.write("route.yaml", &traffic_policy::route("shop", true));
    let envoy = Envoy::start_with(sidecar_bootstrap(cp.xds_addr(), api_type)).await.expect("envoy starts");
    traffic_policy::in_force(outbound, "web.shop").await;
    (cp, outbound, [web, canary, shadow], envoy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_sends_its_share_to_the_canary_within_binomial_tolerance() {
    let (_cp, proxy, _upstreams, _envoy) = start("DELTA_GRPC").await;
    traffic_policy::weighted_split(proxy, "web.shop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_rewrites_timeouts_retries_header_modifiers_and_mirrors_act_as_the_route_says() {
    for api_type in ["DELTA_GRPC", "GRPC"] {
        let (_cp, proxy, [_web, _canary, shadow], _envoy) = start(api_type).await;
        eprintln!("sidecar over {api_type}");
        traffic_policy::acts_as_the_route_says(proxy, "web.shop", true, || async { shadow.served() }).await;
    }
}

const FLAKY: &str = "apiVersion: v1
kind: Service
metadata: { name: flaky, namespace: shop }
spec: { ports: [{ name: grpc, port: 80, appProtocol: grpc }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: flaky-1, namespace: shop, labels: { kubernetes.io/service-name: flaky } }
addressType: IPv4
ports: [{ name: grpc, port: PORT, protocol: TCP }]
endpoints: [{ addresses: ['127.0.0.1'], conditions: { ready: true } }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: flaky, namespace: shop }
spec:
  parentRefs: [{ group: '', kind: Service, name: flaky, port: 80 }]
  rules:
  - backendRefs: [{ name: flaky, port: 80 }]
    retry: { codes: [503], attempts: 2, backoff: 10ms }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_retry_makes_a_grpc_method_failing_every_other_call_succeed_for_a_proxyless_client() {
    let port = edgexds_tests::binary::free_port();
    let _upstream = tokio::process::Command::new(edgexds_tests::binary::sibling("test-upstream"))
        .args(["--port", &port.to_string()])
        .env("POD_NAME", "flaky-1")
        .kill_on_drop(true)
        .spawn()
        .expect("test-upstream starts");
    let cp = ControlPlane::start(TranslateOptions::default()).await.expect("control plane starts");
    let dir = tempfile::tempdir().unwrap();
    let bootstrap =
        edgexds_tests::traffic::grpc_bootstrap(dir.path(), &[cp.running.xds_addr], "proxyless-retry", "zone-a")
            .unwrap();
    let env = vec![("GRPC_XDS_BOOTSTRAP".to_owned(), bootstrap.display().to_string())];
    let call = || edgexds_tests::proxied::grpcio_call("xds:///flaky.shop:80", "/test.Greeter/Flaky", &env);
    // Without the route: the pod's first Flaky call fails, as every other one would.
    cp.write(
        "flaky.yaml",
        FLAKY.replace("PORT", &port.to_string()).split("\n---\napiVersion: gateway").next().unwrap(),
    );
    let (first, _) = eventually(SETTLE, "the upstream answers, the first call failing", || async {
        call().await.err().filter(|e| e.to_string().contains("UNAVAILABLE: flaky"))
    })
    .await;
    eprintln!("without a retry: {first}");

    cp.write("flaky.yaml", &FLAKY.replace("PORT", &port.to_string()));
    eventually(SETTLE, "four calls in a row answered, each failure retried", || async {
        for _ in 0..4 {
            if call().await.ok()? != "flaky-1" {
                return None;
            }
        }
        Some(())
    })
    .await;
}
