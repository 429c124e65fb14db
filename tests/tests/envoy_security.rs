//! A real Envoy on a secured xDS port: over TLS with a client certificate, and over TLS with
//! a ServiceAccount token from the real kube-apiserver, read from a file that is replaced
//! (as kubelet rotates a projected token) and used on the next reconnect.

use std::collections::BTreeSet;
use std::time::Duration;

use edgexds::auth::{AuthModes, ClientCerts, TlsSettings};
use edgexds::hds::HdsConfig;
use edgexds::serve::XdsSecurity;
use edgexds::translate::TranslateOptions;
use edgexds_tests::control_plane::{ControlPlane, web_service, web_slice, write_atomically};
use edgexds_tests::envoy::{Envoy, XdsCredentials, secured_bootstrap};
use edgexds_tests::eventually;
use edgexds_tests::kube_server::KubeServer;
use edgexds_tests::pki::TestCa;
use edgexds_tests::upstream::Upstream;

async fn routes_to_both(envoy: &Envoy) {
    eventually(Duration::from_secs(30), "Envoy routes to both upstreams", || async {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            if let Ok(reply) = envoy.request("/").await
                && reply.status == 200
            {
                seen.insert(reply.body);
            }
        }
        (seen.len() == 2).then_some(())
    })
    .await;
}

fn manifests(one: &Upstream, two: &Upstream) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), web_service()).unwrap();
    std::fs::write(dir.path().join("web-slice.yaml"), web_slice(&[one, two])).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_a_client_certificate_syncs_and_routes_over_mtls() {
    let (one, two) = Upstream::pair("one", "two").await;
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("mesh").unwrap();
    let served = ca.server(pki.path(), "xds").unwrap();
    let ca_file = ca.write(&pki.path().join("ca.crt")).unwrap();
    let tls = TlsSettings {
        cert: served.cert,
        key: served.key,
        client_ca: Some(ca_file.clone()),
        client_certs: ClientCerts::Optional,
    };
    let security = XdsSecurity { tls: Some(tls), auth: AuthModes { mtls: true, token: false }, ..Default::default() };
    let cp =
        ControlPlane::start_full(manifests(&one, &two), TranslateOptions::default(), HdsConfig::default(), security)
            .await
            .unwrap();
    let sidecar = ca.client(pki.path(), "sidecar", Some("spiffe://cluster.local/ns/shop/sa/web")).unwrap();
    let credentials = XdsCredentials { ca: ca_file, client: Some((sidecar.cert, sidecar.key)), token_file: None };
    let envoy = Envoy::start_with(secured_bootstrap("mtls-sidecar", cp.xds_addr(), &credentials)).await.unwrap();
    routes_to_both(&envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_a_token_file_syncs_and_uses_the_replaced_token_after_a_reconnect() {
    let server = tokio::task::spawn_blocking(KubeServer::shared).await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let ns = server.namespace(&admin).await.unwrap();
    let (one, two) = Upstream::pair("one", "two").await;
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("xds").unwrap();
    let served = ca.server(pki.path(), "xds").unwrap();
    let ca_file = ca.write(&pki.path().join("ca.crt")).unwrap();
    let token = |account: &'static str| {
        let (admin, ns) = (admin.clone(), ns.clone());
        async move {
            let kubeconfig = server.service_account_kubeconfig(&admin, &ns, account, &["edgexds"]).await.unwrap();
            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
            config["users"][0]["user"]["token"].as_str().unwrap().to_owned()
        }
    };
    let token_file = pki.path().join("token");
    write_atomically(&token_file, &token("first").await);

    let security = |admin: kube::Client| XdsSecurity {
        review_client: Some(admin),
        tls: Some(TlsSettings {
            cert: served.cert.clone(),
            key: served.key.clone(),
            client_ca: None,
            client_certs: ClientCerts::NotAsked,
        }),
        auth: AuthModes { mtls: false, token: true },
        tokens: edgexds::auth::TokenSettings { audiences: vec!["edgexds".into()], ..Default::default() },
        admin_identities: Vec::new(),
    };
    let files = manifests(&one, &two);
    let dir = files.path().to_owned();
    let mut cp =
        ControlPlane::start_full(files, TranslateOptions::default(), HdsConfig::default(), security(admin.clone()))
            .await
            .unwrap();
    let addr = cp.xds_addr();
    let credentials = XdsCredentials { ca: ca_file, client: None, token_file: Some(token_file.clone()) };
    let envoy = Envoy::start_with(secured_bootstrap("token-sidecar", addr, &credentials)).await.unwrap();
    routes_to_both(&envoy).await;

    // Rotation: a new token in the file, and the first one no longer valid (its
    // ServiceAccount is gone), so only a reconnect that reads the file gets back in.
    write_atomically(&token_file, &token("second").await);
    kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &ns)
        .delete("first", &Default::default())
        .await
        .unwrap();
    cp.running.stop().await;
    let kept = tempfile::TempDir::new().unwrap();
    for file in ["web.yaml", "web-slice.yaml"] {
        std::fs::copy(dir.join(file), kept.path().join(file)).unwrap();
    }
    cp = ControlPlane::start_full_at(kept, addr, security(admin.clone())).await.unwrap();
    let synced = "edgexds_auth_requests_total{method=\"token\",result=\"accepted\"}";
    eventually(Duration::from_secs(30), "Envoy back with the second token", || async {
        (edgexds_tests::metric(&cp.running, synced) > 0.0).then_some(())
    })
    .await;
    let refused =
        edgexds_tests::metric(&cp.running, "edgexds_auth_requests_total{method=\"token\",result=\"refused\"}");
    assert_eq!(refused, 0.0, "the first token was never sent again");
    routes_to_both(&envoy).await;
}
