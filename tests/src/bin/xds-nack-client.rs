//! A delta xDS client that rejects everything it is sent, for tests that need a NACKing proxy
//! from outside a Rust test (the Prometheus alert test): it dials edgexds over TLS with a
//! ServiceAccount token, subscribes to every Cluster, NACKs each response, and prints one
//! `nacked <version>` line per NACK until it is stopped.
//!
//!     xds-nack-client ADDR CA_FILE SERVER_NAME TOKEN_FILE NODE_ID NAMESPACE

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use edgexds_tests::xds::{CDS, DeltaClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, ca, server_name, token_file, node_id, namespace] = args.as_slice() else {
        anyhow::bail!("usage: xds-nack-client ADDR CA_FILE SERVER_NAME TOKEN_FILE NODE_ID NAMESPACE");
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read_to_string(ca)?))
        .domain_name(server_name.clone());
    let channel = Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?;
    let token = std::fs::read_to_string(token_file)?;
    let metadata = Struct {
        fields: [("namespace".to_owned(), Value { kind: Some(Kind::StringValue(namespace.clone())) })].into(),
    };
    let node = Node { id: node_id.clone(), cluster: "nacking".into(), metadata: Some(metadata), ..Default::default() };
    let mut client = DeltaClient::ads_with_token(channel, token.trim()).await?.announcing(node);
    client.subscribe(CDS, &[]).await;
    loop {
        let response = client.next_result().await?;
        client.nack(&response, "rejected on purpose: a test of the NACK alert").await;
        println!("nacked {}", response.system_version_info);
    }
}
