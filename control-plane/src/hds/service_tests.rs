use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::health::v3::{Capability, EndpointHealthResponse};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::hds::HdsConfig;

struct Checker {
    requests: mpsc::Sender<Result<HealthCheckRequestOrEndpointHealthResponse, Status>>,
    responses: mpsc::Receiver<Result<HealthCheckSpecifier, Status>>,
    shutdown: watch::Sender<bool>,
    hub: Arc<HdsHub>,
}

fn open() -> Checker {
    let hub = HdsHub::new(HdsConfig::default(), Default::default());
    let (requests, inbound) = mpsc::channel(4);
    let (outbound, responses) = mpsc::channel(1);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let checker = CheckerStream {
        hub: hub.clone(),
        limits: Limits::default(),
        limit_hits: LimitHits::default(),
        identity: None,
        shutdown: shutdown_rx,
    };
    tokio::spawn(checker.run(ReceiverStream::new(inbound), outbound));
    Checker { requests, responses, shutdown, hub }
}

fn announce(protocols: &[Protocol]) -> HealthCheckRequestOrEndpointHealthResponse {
    HealthCheckRequestOrEndpointHealthResponse {
        request_type: Some(RequestType::HealthCheckRequest(HealthCheckRequest {
            node: Some(Node { id: "checker-1".into(), ..Default::default() }),
            capability: Some(Capability { health_check_protocols: protocols.iter().map(|p| *p as i32).collect() }),
        })),
    }
}

async fn next(checker: &mut Checker) -> Result<HealthCheckSpecifier, Status> {
    tokio::time::timeout(Duration::from_secs(5), checker.responses.recv()).await.expect("a response").expect("open")
}

#[tokio::test]
async fn a_report_before_the_announcement_is_rejected_with_invalid_argument() {
    let mut checker = open();
    let report = HealthCheckRequestOrEndpointHealthResponse {
        request_type: Some(RequestType::EndpointHealthResponse(EndpointHealthResponse::default())),
    };
    checker.requests.send(Ok(report)).await.unwrap();
    let status = next(&mut checker).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("first message"), "{}", status.message());
}

#[tokio::test]
async fn an_announced_checker_gets_a_schedule_at_once_and_leaves_when_its_stream_ends() {
    let mut checker = open();
    checker.requests.send(Ok(announce(&[Protocol::Http, Protocol::Tcp]))).await.unwrap();
    let schedule = next(&mut checker).await.unwrap();
    assert!(schedule.cluster_health_checks.is_empty(), "nothing to check yet");
    assert_eq!(schedule.interval.unwrap().nanos, 500_000_000, "the report interval");
    let view = checker.hub.view(Instant::now());
    assert_eq!(view.checkers.len(), 1);
    assert_eq!(view.checkers[0].node, "checker-1");
    drop(checker.requests);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !checker.hub.view(Instant::now()).checkers.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the checker is unregistered");
}

#[tokio::test]
async fn a_message_with_neither_field_is_rejected_and_shutdown_says_unavailable() {
    let mut checker = open();
    checker.requests.send(Ok(announce(&[Protocol::Http]))).await.unwrap();
    next(&mut checker).await.unwrap();
    checker.requests.send(Ok(HealthCheckRequestOrEndpointHealthResponse { request_type: None })).await.unwrap();
    assert_eq!(next(&mut checker).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    let mut checker = open();
    checker.requests.send(Ok(announce(&[Protocol::Http]))).await.unwrap();
    next(&mut checker).await.unwrap();
    checker.shutdown.send_replace(true);
    assert_eq!(next(&mut checker).await.unwrap_err().code(), tonic::Code::Unavailable);
}

fn claiming(node_name: &str) -> Node {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    let value = Value { kind: Some(Kind::StringValue(node_name.to_owned())) };
    Node {
        id: "checker".into(),
        metadata: Some(Struct { fields: [("node_name".to_owned(), value)].into() }),
        ..Default::default()
    }
}

fn bound_to(node: Option<&str>) -> Identity {
    Identity {
        namespace: "edge".into(),
        service_account: "checker".into(),
        pod: node.map(|_| "checker-x".into()),
        node: node.map(str::to_owned),
        trust_domain: None,
    }
}

#[test]
fn a_checker_claiming_another_node_than_its_token_is_bound_to_is_refused() {
    let refused = bind_node(claiming("node-1"), Some(&bound_to(Some("node-2"))), true).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "edge/checker (pod checker-x on node-2) claims node_name node-1, but its token is bound to node node-2"
    );
    let kept = bind_node(claiming("node-2"), Some(&bound_to(Some("node-2"))), true).unwrap();
    assert_eq!(crate::port::node_facts::node_name(&kept).as_deref(), Some("node-2"));
}

#[test]
fn a_checker_whose_identity_names_no_node_gets_no_node_preference() {
    let stripped = bind_node(claiming("node-1"), Some(&bound_to(None)), true).unwrap();
    assert_eq!(crate::port::node_facts::node_name(&stripped), None);
    let unchecked = bind_node(claiming("node-1"), None, false).unwrap();
    assert_eq!(
        crate::port::node_facts::node_name(&unchecked).as_deref(),
        Some("node-1"),
        "without authentication, as before"
    );
}
