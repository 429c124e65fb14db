//! Identities bound by a real kube-apiserver decide who may do what on the xDS port: HDS
//! only for the checker ServiceAccount, and only for the node its bound token names; CSDS
//! only for administrators. Tokens come from the TokenRequest API (bound to a Pod for the
//! checker) and are verified by TokenReview.

use edgexds::auth::{AuthModes, ClientCerts, TlsSettings};
use edgexds::hds::HdsConfig;
use edgexds::serve::XdsSecurity;
use edgexds::translate::{ActiveHealthChecks, TranslateOptions};
use edgexds_tests::control_plane::{ControlPlane, web_service};
use edgexds_tests::hds_client::HdsClient;
use edgexds_tests::kube_server::KubeServer;
use edgexds_tests::pki::TestCa;
use edgexds_tests::xds::tls_channel;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;

fn checker_node(node_name: &str) -> Node {
    let value = Value { kind: Some(Kind::StringValue(node_name.to_owned())) };
    Node {
        id: format!("checker-on-{node_name}"),
        metadata: Some(Struct { fields: [("node_name".into(), value)].into() }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hds_and_csds_admit_only_the_identities_allowed_and_checkers_only_for_their_own_node() {
    let server = tokio::task::spawn_blocking(KubeServer::shared).await.unwrap();
    let admin = server.admin_client().await.unwrap();
    let ns = server.namespace(&admin).await.unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "checker-a", "namespace": ns},
        "spec": {"nodeName": "node-2", "serviceAccountName": "checker", "containers": [{"name": "envoy", "image": "envoy"}]}
    }))
    .unwrap();
    let _ = Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "checker"}})).unwrap())
        .await;
    let pod = Api::<Pod>::namespaced(admin.clone(), &ns).create(&PostParams::default(), &pod).await.unwrap();
    let checker = server.token(&admin, &ns, "checker", &["edgexds"], Some(&pod)).await.unwrap();
    let token = |account: &'static str| server.token(&admin, &ns, account, &["edgexds"], None);
    let sidecar = token("sidecar").await.unwrap();
    let ops = token("ops").await.unwrap();

    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("xds").unwrap();
    let served = ca.server(pki.path(), "xds").unwrap();
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(manifests.path().join("web.yaml"), web_service()).unwrap();
    let security = XdsSecurity {
        review_client: Some(admin.clone()),
        tls: Some(TlsSettings {
            cert: served.cert,
            key: served.key,
            client_ca: None,
            client_certs: ClientCerts::NotAsked,
        }),
        auth: AuthModes { mtls: false, token: true },
        tokens: edgexds::auth::TokenSettings { audiences: vec!["edgexds".into()], ..Default::default() },
        admin_identities: vec![format!("{ns}/ops")],
    };
    let translate = TranslateOptions { active_health_checks: ActiveHealthChecks::Hds, ..Default::default() };
    let hds =
        HdsConfig { checkers: edgexds::auth::Access::new(true, vec![format!("{ns}/checker")]), ..Default::default() };
    let cp = ControlPlane::start_full(manifests, translate, hds, security).await.unwrap();
    let channel = || tls_channel(cp.xds_addr(), ca.pem(), None);

    // The checker, from the node its token is bound to: served.
    let mut honest = HdsClient::open(channel().await.unwrap(), checker_node("node-2"), Some(&checker)).await.unwrap();
    honest.schedule().await.expect("a schedule for the checker on its own node");
    // The same token claiming another node.
    let mut liar = HdsClient::open(channel().await.unwrap(), checker_node("node-1"), Some(&checker)).await.unwrap();
    let refused = liar.schedule().await.unwrap_err().downcast::<tonic::Status>().unwrap();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("claims node_name node-1, but its token is bound to node node-2"), "{refused}");
    // A sidecar's identity may not check at all.
    let refused =
        HdsClient::open(channel().await.unwrap(), checker_node("node-2"), Some(&sidecar)).await.err().unwrap();
    let refused = refused.downcast::<tonic::Status>().unwrap();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("may not open an HDS stream"), "{refused}");

    // An expired token for the checker, signed with the API server's own key: refused.
    let uid = Api::<ServiceAccount>::namespaced(admin.clone(), &ns).get("checker").await.unwrap().metadata.uid.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expired = server
        .forge_token(&json!({
            "aud": ["edgexds"], "iss": "https://kubernetes.default.svc",
            "iat": now - 3600, "nbf": now - 3600, "exp": now - 60,
            "sub": format!("system:serviceaccount:{ns}:checker"),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": "checker", "uid": uid}}
        }))
        .unwrap();
    let refused =
        HdsClient::open(channel().await.unwrap(), checker_node("node-2"), Some(&expired)).await.err().unwrap();
    let refused = refused.downcast::<tonic::Status>().unwrap();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    assert!(refused.message().contains("expired"), "{refused}");

    // CSDS: every proxy's state, for administrators only.
    let csds = |token: String| {
        let channel = channel();
        async move {
            let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
            let mut client = ClientStatusDiscoveryServiceClient::with_interceptor(
                channel.await.unwrap(),
                move |mut r: tonic::Request<()>| {
                    r.metadata_mut().insert("authorization", value.clone());
                    Ok(r)
                },
            );
            client.fetch_client_status(ClientStatusRequest::default()).await.map(|_| ())
        }
    };
    let refused = csds(sidecar).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    assert!(refused.message().contains("--admin-identities"), "{refused}");
    csds(ops).await.expect("an administrator reads CSDS");
}
