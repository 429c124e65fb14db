//! The injection webhook's port against clients that are not the API server: a body that is
//! not a Pod review is a 400 and counted, a connection that never completes TLS is closed and
//! counted, and a well-formed review is answered with its patch; the real edgexds binary.

use std::process::Stdio;
use std::sync::Arc;

use edgexds_tests::binary::{Server, free_port};
use edgexds_tests::pki::TestCa;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 POST to the webhook over TLS, as the API server sends it: status and body.
async fn post(port: u16, ca: &str, body: &[u8]) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let head = format!(
        "POST /inject HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_pod_review_is_refused_and_counted_and_a_review_gets_its_patch() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("webhook").unwrap();
    let served = ca.server(dir.path(), "edgexds").unwrap();
    let ca_file = ca.write(&dir.path().join("ca.crt")).unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let webhook = free_port();
    let server = Server::start(
        &manifests,
        &[
            "--xds-tls-cert",
            served.cert.to_str().unwrap(),
            "--xds-tls-key",
            served.key.to_str().unwrap(),
            "--webhook-addr",
            &format!("127.0.0.1:{webhook}"),
            "--inject-xds-address",
            "edgexds.edgexds.svc:18000",
            "--inject-ca-file",
            ca_file.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    let counted = |series: &str| server.metric(series);

    let (status, reply) = post(webhook, ca.pem(), b"{\"not\": \"a review\"}").await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("not an AdmissionReview of a Pod"), "{reply}");
    server
        .wait_until("the invalid body counted", || counted("edgexds_inject_reviews_total{outcome=\"invalid\"}") == 1.0);

    let mut garbage = tokio::net::TcpStream::connect(("127.0.0.1", webhook)).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let _ = garbage.read_to_end(&mut Vec::new()).await;
    server.wait_until("the failed handshake counted", || counted("edgexds_inject_connections_refused_total") == 1.0);

    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "shop", "operation": "CREATE",
        "userInfo": {"username": "test"}, "dryRun": false,
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "shop"},
                   "spec": {"containers": [{"name": "app", "image": "app"}]}}}});
    let (status, reply) = post(webhook, ca.pem(), review.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{reply}");
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {reply}"));
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    server.wait_until("the injection counted", || counted("edgexds_inject_reviews_total{outcome=\"injected\"}") == 1.0);
}
