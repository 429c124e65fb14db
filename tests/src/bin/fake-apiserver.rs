//! Runs the test Kubernetes API server on its own, seeded with N Services × M endpoints,
//! and writes a kubeconfig for it: for measuring edgexds as a separate process.
//!
//!     fake-apiserver --services 1000 --endpoints 10 --kubeconfig /tmp/kubeconfig

use std::net::{IpAddr, Ipv4Addr};

use edgexds_tests::kube_api::FakeApiServer;
use edgexds_tests::kube_objects::{service, slice, web_probe};
use serde_json::json;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let services: u32 = arg("--services", "1000").parse()?;
    let endpoints: u32 = arg("--endpoints", "10").parse()?;
    let kubeconfig = arg("--kubeconfig", "kubeconfig.yaml");
    let api = FakeApiServer::start().await;
    for s in 0..services {
        let name = format!("svc-{s}");
        let namespace = format!("ns-{}", s % 10);
        api.apply(service(&namespace, &name, 80, json!({})));
        let addresses: Vec<IpAddr> = (0..endpoints)
            .map(|e| IpAddr::V4(Ipv4Addr::new(10, (s / 250) as u8, (s % 250) as u8, (e % 250 + 1) as u8)))
            .collect();
        api.apply(slice(&namespace, &format!("{name}-1"), &name, 8080, &addresses));
        if s % 10 == 0 {
            api.apply(web_probe(&namespace, &name, &name, 5000, 500));
        }
    }
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{ server: \"{}\" }}\n\
             contexts:\n- name: fake\n  context: {{ cluster: fake, user: fake }}\ncurrent-context: fake\n\
             users:\n- name: fake\n  user: {{}}\n",
            api.url()
        ),
    )?;
    println!("serving {services} services x {endpoints} endpoints at {}; kubeconfig {kubeconfig}", api.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
