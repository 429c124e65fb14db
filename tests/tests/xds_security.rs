//! TLS and client certificates on the xDS port, with a tonic client: certificate rotation
//! without dropping open streams, a bad new certificate ignored, and mTLS identities.
//! (The unauthenticated matrix, with grpcio as an independent client, is in tests/auth.)

use std::time::Duration;

use edgexds::auth::{AuthModes, ClientCerts, TlsSettings};
use edgexds::serve::XdsSecurity;
use edgexds_tests::control_plane::{ControlPlane, web_service, write_atomically};
use edgexds_tests::eventually;
use edgexds_tests::pki::TestCa;
use edgexds_tests::xds::{CDS, DeltaClient, names};

fn manifests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), web_service()).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_connections_and_open_streams_stay_up() {
    let pki = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old").unwrap(), TestCa::new("new").unwrap());
    let served = old_ca.server(pki.path(), "xds").unwrap();
    let settings = TlsSettings {
        cert: served.cert.clone(),
        key: served.key.clone(),
        client_ca: None,
        client_certs: ClientCerts::NotAsked,
    };
    let security = XdsSecurity { tls: Some(settings), ..Default::default() };
    let cp = ControlPlane::start_secured(manifests(), security).await.unwrap();
    let addr = cp.xds_addr();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let expiry = edgexds_tests::metric(&cp.running, "edgexds_auth_certificate_expiry_timestamp_seconds");
    assert!(expiry > now + 86_400.0, "the certificate in force expires at {expiry}, for a certificate-expiring alert");

    let mut open = DeltaClient::connect_tls(addr, old_ca.pem(), None).await.unwrap();
    open.subscribe(CDS, &[]).await;
    let first = open.next().await;
    assert_eq!(names(&first), ["web.shop:80"]);
    open.ack(&first).await;
    assert!(DeltaClient::connect_tls(addr, new_ca.pem(), None).await.is_err(), "not yet the new certificate");

    // A bad new pair is ignored: the old certificate keeps serving.
    std::fs::write(&served.cert, "not a certificate").unwrap();
    eventually(Duration::from_secs(10), "the bad file refused", || async {
        (edgexds_tests::metric(&cp.running, "edgexds_auth_tls_reloads_total{result=\"failed\"}") > 0.0).then_some(())
    })
    .await;
    assert!(DeltaClient::connect_tls(addr, old_ca.pem(), None).await.is_ok(), "the old certificate is kept");

    // An expired pair is refused too: it would load, and then fail every handshake.
    let expired_dir = tempfile::tempdir().unwrap();
    let expired = new_ca.expired_server(expired_dir.path(), "xds").unwrap();
    write_atomically(&served.key, &std::fs::read_to_string(&expired.key).unwrap());
    write_atomically(&served.cert, &std::fs::read_to_string(&expired.cert).unwrap());
    eventually(Duration::from_secs(10), "the expired certificate refused", || async {
        (edgexds_tests::metric(&cp.running, "edgexds_auth_tls_reloads_total{result=\"failed\"}") >= 2.0).then_some(())
    })
    .await;
    assert!(DeltaClient::connect_tls(addr, old_ca.pem(), None).await.is_ok(), "the old certificate is kept");

    // As a Secret update does: the new pair replaces the files.
    let rotated_dir = tempfile::tempdir().unwrap();
    let rotated = new_ca.server(rotated_dir.path(), "xds").unwrap();
    write_atomically(&served.key, &std::fs::read_to_string(&rotated.key).unwrap());
    write_atomically(&served.cert, &std::fs::read_to_string(&rotated.cert).unwrap());
    let (_, took) = eventually(Duration::from_secs(10), "new connections get the new certificate", || async {
        DeltaClient::connect_tls(addr, new_ca.pem(), None).await.ok().map(|_| ())
    })
    .await;
    println!("certificate rotation: new connections use it after {} ms", took.as_millis());
    assert!(DeltaClient::connect_tls(addr, old_ca.pem(), None).await.is_err(), "the old certificate is gone");

    // The stream opened before the rotation still carries changes.
    cp.write("api.yaml", &web_service().replace("name: web", "name: api"));
    let update = open.next().await;
    assert_eq!(names(&update), ["api.shop:80"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mtls_only_a_certificate_from_the_client_ca_with_a_spiffe_id_gets_in() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, stranger) = (TestCa::new("mesh").unwrap(), TestCa::new("stranger").unwrap());
    let served = ca.server(pki.path(), "xds").unwrap();
    let settings = TlsSettings {
        cert: served.cert,
        key: served.key,
        client_ca: Some(ca.write(&pki.path().join("ca.crt")).unwrap()),
        client_certs: ClientCerts::Optional,
    };
    let security =
        XdsSecurity { tls: Some(settings), auth: AuthModes { mtls: true, token: false }, ..Default::default() };
    let cp = ControlPlane::start_secured(manifests(), security).await.unwrap();
    let addr = cp.xds_addr();
    let read = |issued: &edgexds_tests::pki::Issued| {
        (std::fs::read_to_string(&issued.cert).unwrap(), std::fs::read_to_string(&issued.key).unwrap())
    };

    let sidecar = read(&ca.client(pki.path(), "sidecar", Some("spiffe://cluster.local/ns/shop/sa/web")).unwrap());
    let mut client = DeltaClient::connect_tls(addr, ca.pem(), Some((&sidecar.0, &sidecar.1))).await.unwrap();
    client.subscribe(CDS, &[]).await;
    assert_eq!(names(&client.next().await), ["web.shop:80"]);

    let refused = DeltaClient::connect_tls(addr, ca.pem(), None).await.err().expect("no client certificate");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let foreign = read(&stranger.client(pki.path(), "foreign", Some("spiffe://cluster.local/ns/shop/sa/web")).unwrap());
    assert!(DeltaClient::connect_tls(addr, ca.pem(), Some((&foreign.0, &foreign.1))).await.is_err(), "another CA");

    // A node that says it is in another namespace than its certificate.
    let other_namespace = {
        use envoy_types::pb::envoy::config::core::v3::Node;
        use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
        let namespace = Value { kind: Some(Kind::StringValue("payments".into())) };
        Node {
            id: "sidecar-1".into(),
            metadata: Some(Struct { fields: [("NAMESPACE".into(), namespace)].into() }),
            ..Default::default()
        }
    };
    let client = DeltaClient::connect_tls(addr, ca.pem(), Some((&sidecar.0, &sidecar.1))).await.unwrap();
    let mut liar = client.announcing(other_namespace);
    liar.subscribe(CDS, &[]).await;
    let refused = liar.next_result().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    assert_eq!(refused.message(), "node sidecar-1 says namespace payments, but the client is shop/web");

    let anonymous = read(&ca.client(pki.path(), "anonymous", None).unwrap());
    let refused = DeltaClient::connect_tls(addr, ca.pem(), Some((&anonymous.0, &anonymous.1))).await.err().unwrap();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    assert!(refused.message().contains("SPIFFE ID"), "{}", refused.message());
}
