//! EndpointSlice change → delta EDS response through a real kube-apiserver and the
//! Kubernetes source, over 100 changes with the default 100 ms debounce: a report
//! (median and max), not a test.
//!
//!     cargo bench -p edgexds-tests --bench slice_to_eds

use std::time::Instant;

use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::kube_objects::{service, slice, web_probe};
use edgexds_tests::kube_server::{KubeServer, apply};
use edgexds_tests::kube_session::{ips, subscribe, until};
use edgexds_tests::xds::{DeltaClient, EDS};
use serde_json::json;

fn main() {
    let server = KubeServer::start().expect("a real kube-apiserver");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let admin = server.admin_client().await.unwrap();
        server.named_namespace(&admin, "shop").await.unwrap();
        apply(&admin, &service("shop", "web", 80, json!({}))).await.unwrap();
        apply(&admin, &slice("shop", "web-1", "web", 8080, &ips(&["10.0.0.1", "10.0.0.2"]))).await.unwrap();
        apply(&admin, &web_probe("shop", "web", "web", 5000, 500)).await.unwrap();
        let cp = ControlPlane::kubernetes(admin.clone(), &["shop"], None).await.unwrap();
        let mut client = DeltaClient::connect(cp.xds_addr).await;
        subscribe(&mut client, &["web.shop:80"]).await;
        let mut samples = Vec::new();
        for round in 0..100u32 {
            let third = format!("10.0.1.{}", round % 250 + 1);
            let change = slice("shop", "web-1", "web", 8080, &ips(&["10.0.0.1", "10.0.0.2", &third]));
            let started = Instant::now();
            apply(&admin, &change).await.unwrap();
            until(&mut client, "slice change", |r| r.type_url == EDS).await;
            samples.push(started.elapsed());
        }
        samples.sort();
        println!(
            "EndpointSlice change (server-side apply) -> delta EDS response over {} changes (debounce 100ms): median {:?}, max {:?}",
            samples.len(),
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    });
}
