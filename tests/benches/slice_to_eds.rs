//! EndpointSlice change → delta EDS response through the Kubernetes source, over 100
//! changes with the default 100 ms debounce: a report (median and max), not a test.
//!
//!     cargo bench -p edgexds-tests --bench slice_to_eds

use std::time::Instant;

use edgexds_tests::control_plane::ControlPlane;
use edgexds_tests::kube_api::FakeApiServer;
use edgexds_tests::kube_objects::slice;
use edgexds_tests::kube_session::{ips, seed, subscribe, until};
use edgexds_tests::xds::{DeltaClient, EDS};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let api = FakeApiServer::start().await;
        seed(&api);
        let cp = ControlPlane::kubernetes(api.client(), &[], None).await.unwrap();
        let mut client = DeltaClient::connect(cp.xds_addr).await;
        subscribe(&mut client, &["web.shop:80"]).await;
        let mut samples = Vec::new();
        for round in 0..100u32 {
            let third = format!("10.0.1.{}", round % 250 + 1);
            let started = Instant::now();
            api.apply(slice("shop", "web-1", "web", 8080, &ips(&["10.0.0.1", "10.0.0.2", &third])));
            until(&mut client, "slice change", |r| r.type_url == EDS).await;
            samples.push(started.elapsed());
        }
        samples.sort();
        println!(
            "EndpointSlice change -> delta EDS response over {} changes (debounce 100ms): median {:?}, max {:?}",
            samples.len(),
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    });
}
