//! `HealthDiscoveryService/StreamHealthCheck`: a checker announces itself, receives its
//! schedule whenever it changes, and streams reports into the hub.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::health::v3::health_check_request_or_endpoint_health_response::RequestType;
use envoy_types::pb::envoy::service::health::v3::health_discovery_service_server::{
    HealthDiscoveryService, HealthDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::health::v3::{
    HealthCheckRequest, HealthCheckRequestOrEndpointHealthResponse, HealthCheckSpecifier, capability::Protocol,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info};

use super::hub::HdsHub;
use crate::auth::Identity;
use crate::port::{LimitHits, Limits, kept_node};
use crate::shutdown::{self, Shutdown};
use envoy_types::pb::envoy::config::core::v3::Node;

type SpecifierStream = ReceiverStream<Result<HealthCheckSpecifier, Status>>;

#[derive(Clone)]
pub struct HdsServer {
    hub: Arc<HdsHub>,
    shutdown: Shutdown,
    limits: Limits,
    limit_hits: LimitHits,
}

impl HdsServer {
    pub fn new(hub: Arc<HdsHub>, shutdown: Shutdown) -> Self {
        Self { hub, shutdown, limits: Limits::default(), limit_hits: LimitHits::default() }
    }

    /// The xDS port's per-client limits apply to checkers too, and count where all do.
    pub fn with_limits(self, limits: Limits, limit_hits: LimitHits) -> Self {
        Self { limits, limit_hits, ..self }
    }

    pub fn server(&self) -> HealthDiscoveryServiceServer<Self> {
        // The port's request layer bounds every message already (--max-request-bytes).
        HealthDiscoveryServiceServer::new(self.clone()).max_decoding_message_size(usize::MAX)
    }
}

#[tonic::async_trait]
impl HealthDiscoveryService for HdsServer {
    type StreamHealthCheckStream = SpecifierStream;

    async fn stream_health_check(
        &self,
        request: Request<Streaming<HealthCheckRequestOrEndpointHealthResponse>>,
    ) -> Result<Response<SpecifierStream>, Status> {
        let identity = request.extensions().get::<Identity>().cloned();
        self.hub.access().check(
            identity.as_ref(),
            "open an HDS stream (check endpoints)",
            "--hds-checker-identities",
        )?;
        // One slot: a checker that reads slowly only ever gets the latest schedule.
        let (tx, rx) = mpsc::channel(1);
        let span = tracing::info_span!("hds_stream", node = tracing::field::Empty);
        let checker = CheckerStream {
            hub: self.hub.clone(),
            limits: self.limits,
            limit_hits: self.limit_hits.clone(),
            identity,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(checker.run(request.into_inner(), tx).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_health_check(
        &self,
        _request: Request<HealthCheckRequestOrEndpointHealthResponse>,
    ) -> Result<Response<HealthCheckSpecifier>, Status> {
        Err(Status::unimplemented("edgexds serves HDS as a stream only: use StreamHealthCheck"))
    }
}

/// Unregisters the checker however its stream ends.
struct Registration {
    hub: Arc<HdsHub>,
    id: super::CheckerId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.disconnect(self.id, Instant::now());
    }
}

/// One checker's stream: who it is, what it may cost, and the hub it reports to.
pub struct CheckerStream {
    pub hub: Arc<HdsHub>,
    pub limits: Limits,
    pub limit_hits: LimitHits,
    /// Who the checker authenticated as, when it did.
    pub identity: Option<Identity>,
    pub shutdown: Shutdown,
}

impl CheckerStream {
    /// Runs until the checker goes away, breaks protocol, or shutdown is requested.
    pub async fn run<S>(self, mut inbound: S, outbound: mpsc::Sender<Result<HealthCheckSpecifier, Status>>)
    where
        S: Stream<Item = Result<HealthCheckRequestOrEndpointHealthResponse, Status>> + Unpin,
    {
        let Self { hub, limits, limit_hits, identity, mut shutdown } = self;
        let first = tokio::select! {
            first = first_request(&mut inbound) => first,
            () = shutdown::requested(&mut shutdown) => Err(Status::unavailable("edgexds is shutting down")),
        };
        let request = match first {
            Ok(request) => request,
            Err(status) => {
                let _ = outbound.send(Err(status)).await;
                return;
            }
        };
        // The same bound as on xDS streams: a checker's node is kept for the life of its stream.
        let node = match kept_node(request.node.unwrap_or_default(), &limits) {
            Ok(node) => node,
            Err(refusal) => {
                if let Some(limit) = refusal.limit {
                    limit_hits.hit(limit);
                }
                let _ = outbound.send(Err(refusal.status)).await;
                return;
            }
        };
        let node = match bind_node(node, identity.as_ref(), hub.access().enforced) {
            Ok(node) => node,
            Err(status) => {
                let _ = outbound.send(Err(status)).await;
                return;
            }
        };
        tracing::Span::current().record("node", node.id.as_str());
        let protocols = request.capability.map(|c| c.health_check_protocols).unwrap_or_default();
        let supports = |p: Protocol| protocols.contains(&(p as i32));
        let (id, mut schedule) = hub.connect(&node, supports(Protocol::Http), supports(Protocol::Tcp), Instant::now());
        let _registration = Registration { hub: hub.clone(), id };
        schedule.mark_changed();
        loop {
            tokio::select! {
                biased;
                () = shutdown::requested(&mut shutdown) => {
                    let _ = outbound.send(Err(Status::unavailable("edgexds is shutting down"))).await;
                    return;
                }
                message = inbound.next() => match message {
                    None => {
                        debug!("checker stream ended");
                        return;
                    }
                    // Refused by the port's request layer, or broken: the checker is told why.
                    Some(Err(status)) => {
                        debug!(%status, "checker stream failed");
                        let _ = outbound.send(Err(status)).await;
                        return;
                    }
                    Some(Ok(message)) => match message.request_type {
                        Some(RequestType::EndpointHealthResponse(report)) => hub.record(id, &report, Instant::now()),
                        // Envoy re-announces only on a new stream; a repeat changes nothing.
                        Some(RequestType::HealthCheckRequest(_)) => {}
                        None => {
                            let status = Status::invalid_argument("message carries neither health_check_request nor endpoint_health_response");
                            let _ = outbound.send(Err(status)).await;
                            return;
                        }
                    },
                },
                changed = schedule.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let specifier = schedule.borrow_and_update().clone();
                    if let Some(specifier) = specifier
                        && outbound.send(Ok((*specifier).clone())).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// A checker's claimed node must be the one its identity is bound to (a bound token names
/// it), since a false claim would win it the endpoints of another node. An identity that
/// names no node (a certificate) gets no node preference at all.
fn bind_node(mut node: Node, identity: Option<&Identity>, enforced: bool) -> Result<Node, Status> {
    let Some(identity) = identity.filter(|_| enforced) else { return Ok(node) };
    let claimed = crate::port::node_facts::node_name(&node);
    match (&identity.node, claimed) {
        (Some(bound), Some(claimed)) if *bound != claimed => Err(Status::permission_denied(format!(
            "{identity} claims node_name {claimed}, but its token is bound to node {bound}"
        ))),
        (Some(_), _) => Ok(node),
        (None, claimed) => {
            if let Some(metadata) = node.metadata.as_mut() {
                metadata.fields.remove("node_name");
                metadata.fields.remove("NODE_NAME");
            }
            if let Some(claimed) = claimed {
                info!(%identity, %claimed, "HDS checker's identity names no node; its node_name is ignored and it gets no node preference");
            }
            Ok(node)
        }
    }
}

async fn first_request<S>(inbound: &mut S) -> Result<HealthCheckRequest, Status>
where
    S: Stream<Item = Result<HealthCheckRequestOrEndpointHealthResponse, Status>> + Unpin,
{
    match inbound.next().await {
        Some(Ok(HealthCheckRequestOrEndpointHealthResponse {
            request_type: Some(RequestType::HealthCheckRequest(r)),
        })) => Ok(r),
        Some(Ok(_)) => Err(Status::invalid_argument(
            "the first message on an HDS stream must be a health_check_request announcing the node and its capabilities",
        )),
        Some(Err(status)) => Err(status),
        None => Err(Status::cancelled("stream closed before the health_check_request")),
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
