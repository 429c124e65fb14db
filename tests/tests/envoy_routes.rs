//! A real Envoy with the generic bootstrap (`examples/envoy-sidecar.yaml`: ADS only, no
//! static listener, no Service named) takes its outbound listener and routes from edgexds,
//! on delta ADS and on state-of-the-world ADS, and reaches Services by every DNS name
//! through it as an HTTP proxy (`curl -x`).

use std::net::SocketAddr;
use std::time::Duration;

use edgexds::translate::TranslateOptions;
use edgexds_tests::control_plane::{ControlPlane, service_yaml, web_service, web_slice};
use edgexds_tests::envoy::{Envoy, sidecar_bootstrap};
use edgexds_tests::eventually;
use edgexds_tests::http::through_proxy;
use edgexds_tests::upstream::Upstream;

/// Envoy start-up and first syncs are slow on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

async fn setup(api_type: &str) -> (ControlPlane, SocketAddr, Upstream, Upstream, Envoy) {
    let outbound: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let options = TranslateOptions { outbound_listener: outbound, ..Default::default() };
    let (one, two) = Upstream::pair("one", "two").await;
    let cp = ControlPlane::start(options).await.expect("control plane starts");
    cp.write("web.yaml", &web_service());
    cp.write("web-slice.yaml", &web_slice(&[&one, &two]));
    let envoy = Envoy::start_with(sidecar_bootstrap(cp.xds_addr(), api_type)).await.expect("envoy starts");
    (cp, outbound, one, two, envoy)
}

async fn answers(proxy: SocketAddr, url: &str, status: u16) -> String {
    let (body, _) = eventually(SETTLE, &format!("{url} answers {status}"), || async {
        through_proxy(proxy, url).await.filter(|(s, _)| *s == status).map(|(_, body)| body)
    })
    .await;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_outbound_listener_every_dns_name_reaches_its_service_and_a_new_service_too() {
    let (cp, proxy, _one, _two, _envoy) = setup("DELTA_GRPC").await;
    for url in ["http://web.shop/", "http://web.shop.svc.cluster.local:80/", "http://web/", "http://web.shop.svc/x"] {
        let body = answers(proxy, url, 200).await;
        assert!(body == "one" || body == "two", "{url}: {body}");
    }
    // A Service added while Envoy runs: no bootstrap edited.
    let api = Upstream::start("api", [127, 0, 0, 1].into(), 0).await.unwrap();
    cp.write("api.yaml", &service_yaml("api", 8080, &api));
    assert_eq!(answers(proxy, "http://api.shop:8080/", 200).await, "api");
    let unknown = answers(proxy, "http://nope.shop/", 404).await;
    assert!(unknown.contains("nope.shop"), "the 404 names the host: {unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_on_state_of_the_world_ads_syncs_routes_and_follows_edits() {
    let (cp, proxy, one, _two, envoy) = setup("GRPC").await;
    let (seen, _) = eventually(SETTLE, "both upstreams answer", || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            if let Some((200, body)) = through_proxy(proxy, "http://web.shop/").await {
                seen.insert(body);
            }
        }
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert_eq!(seen, ["one".to_owned(), "two".to_owned()].into());
    // An edit: two leaves the Service. Envoy follows, on SotW as on delta.
    cp.write("web-slice.yaml", &web_slice(&[&one]));
    eventually(SETTLE, "only one answers", || async {
        let mut bodies = Vec::new();
        for _ in 0..10 {
            bodies.push(through_proxy(proxy, "http://web.shop/").await?.1);
        }
        bodies.iter().all(|b| b == "one").then_some(())
    })
    .await;
    let ads = envoy.stat("cluster_manager.cds.update_success").await.unwrap_or_default();
    assert!(ads.unwrap_or(0) >= 1, "CDS was accepted over SotW");
    let rejected = envoy.stat("listener_manager.lds.update_rejected").await.unwrap_or_default();
    assert_eq!(rejected.unwrap_or(0), 0, "{}", envoy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_claiming_a_port_twice_is_refused_and_never_poisons_the_shared_route() {
    let (cp, proxy, _one, _two, envoy) = setup("DELTA_GRPC").await;
    answers(proxy, "http://web.shop/", 200).await;
    // Two ports numbered 80: the API server would refuse it; so does the manifests source.
    let bad = "apiVersion: v1\nkind: Service\nmetadata: { name: bad, namespace: shop }\n\
               spec: { ports: [{ name: a, port: 80 }, { name: b, port: 80 }] }\n";
    let api = Upstream::start("api", [127, 0, 0, 1].into(), 0).await.unwrap();
    cp.write("bad.yaml", &format!("{bad}---\n{}", service_yaml("api", 8080, &api)));
    // The existing Envoy takes the route with the good Service beside the bad one.
    assert_eq!(answers(proxy, "http://api.shop:8080/", 200).await, "api");
    let stat = |name: &'static str| {
        let envoy = &envoy;
        async move { envoy.stat(&format!("http.outbound.rds.outbound.{name}")).await.unwrap() }
    };
    assert!(stat("update_success").await.is_some_and(|n| n >= 2), "the route was taken again with api in it");
    assert_eq!(stat("update_rejected").await, Some(0), "the outbound route was never rejected: {}", envoy.log());
    let model = cp.running.models.borrow().clone().expect("a model");
    let refused =
        model.diagnostics.iter().find(|d| d.object == "Service shop/bad").expect("the bad Service is reported");
    assert!(
        refused.message.contains("bad.yaml:1: ") && refused.message.contains("Duplicate value: port 80"),
        "{refused:?}"
    );
    // A new Envoy gets a route it accepts, with every other Service in it.
    drop(envoy);
    let fresh = Envoy::start_with(sidecar_bootstrap(cp.xds_addr(), "DELTA_GRPC")).await.expect("envoy starts");
    let body = answers(proxy, "http://web.shop/", 200).await;
    assert!(body == "one" || body == "two", "{body}");
    assert_eq!(answers(proxy, "http://api.shop:8080/", 200).await, "api");
    drop(fresh);
}
