//! The sidecar's outbound listener as the proxy apps name in `HTTP_PROXY`, `HTTPS_PROXY` and
//! `grpc_proxy`, on a real cluster (pods from the real controllers, on the test kubelet)
//! through a real Envoy, with exactly the environment the injector gives an app: plain HTTP,
//! HTTPS end to end and gRPC (grpcio and grpc-go) through CONNECT, a raw TCP protocol through
//! CONNECT, and a CONNECT to a name no Service answers to refused.

use edgexds_tests::cluster::{Cluster, endpoint_conditions, wait_slices};
use edgexds_tests::eventually;
use edgexds_tests::kube_objects::Upstream;
use edgexds_tests::kube_server::apply;
use edgexds_tests::mesh::{Mesh, SETTLE};
use edgexds_tests::proxied::{connect, curl, echo, grpc_go_who, grpcio_who, injected_env};
use serde_json::json;

/// Two pods of web serving HTTP, HTTPS and a TCP echo, behind Service web's ports 80, 443 and
/// 7000; waits until the controller lists both ready.
async fn deploy(admin: &kube::Client, ns: &str) {
    let upstream = Upstream { tls_name: Some(format!("web.{ns}.svc")), ..Default::default() };
    apply(
        admin,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "https", "port": 443, "targetPort": "https"},
                {"name": "echo", "port": 7000, "targetPort": "echo"},
            ]}
        }),
    )
    .await
    .unwrap();
    apply(admin, &upstream.deployment(ns, "web", 2)).await.unwrap();
    wait_slices(admin, ns, "web", SETTLE, "both pods are ready", |slices| {
        let endpoints = endpoint_conditions(slices);
        endpoints.len() == 2 && endpoints.values().all(|c| *c == (true, true, false))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_https_grpc_and_tcp_reach_a_service_through_the_sidecar_and_an_unknown_connect_is_refused() {
    let cluster = tokio::task::spawn_blocking(Cluster::shared).await.unwrap();
    let admin = cluster.kube.admin_client().await.unwrap();
    let ns = cluster.kube.namespace(&admin).await.unwrap();
    deploy(&admin, &ns).await;
    // The tunnel is in the routes every flavour serves: a delta sidecar and a SotW one.
    for api_type in ["DELTA_GRPC", "GRPC"] {
        eprintln!("sidecar over {api_type}");
        let mesh = Mesh::start_with(cluster, &ns, 1, api_type).await.unwrap();
        through_the_sidecar(&mesh, &ns).await;
    }
}

async fn through_the_sidecar(mesh: &Mesh, ns: &str) {
    // Exactly what the injector gives an app container, pointed at this sidecar.
    let env = injected_env(mesh.proxy);
    let is_pod = |body: &str| body.starts_with("web-");

    let (plain, _) = eventually(SETTLE, "plain HTTP through the sidecar", || async {
        curl(&format!("http://web.{ns}/"), &env).await.ok().filter(|b| is_pod(b))
    })
    .await;
    eprintln!("plain HTTP answered by {plain}");
    // Every DNS name of the port, each with its port, as CONNECT names it.
    for host in [format!("web.{ns}"), format!("web.{ns}.svc"), format!("web.{ns}.svc.cluster.local")] {
        let (body, _) = eventually(SETTLE, &format!("HTTPS to {host} through CONNECT"), || async {
            curl(&format!("https://{host}/"), &env).await.ok().filter(|b| is_pod(b))
        })
        .await;
        eprintln!("HTTPS to {host}:443 answered by {body}");
    }
    let pod = grpcio_who(&format!("web.{ns}:80"), &env).await.unwrap();
    assert!(is_pod(&pod), "grpcio through grpc_proxy: {pod}");
    let pod = grpc_go_who(&format!("web.{ns}:80"), &env).await.unwrap();
    assert!(is_pod(&pod), "grpc-go through HTTPS_PROXY: {pod}");

    let tunnel = connect(mesh.proxy, &format!("web.{ns}:7000")).await.unwrap().expect("a tunnel to the echo port");
    assert_eq!(echo(tunnel, b"any protocol at all\n").await.unwrap(), b"any protocol at all\n");

    let refused = connect(mesh.proxy, "example.com:443").await.unwrap().expect_err("not an open proxy");
    assert!(refused.starts_with("HTTP/1.1 404"), "{refused}");
    assert!(refused.contains("no Service answers to host example.com:443"), "{refused}");
    let refused = connect(mesh.proxy, &format!("web.{ns}:8443")).await.unwrap().expect_err("a port the Service lacks");
    assert!(refused.contains(&format!("web.{ns}:8443")), "{refused}");
}
