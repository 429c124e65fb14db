//! One delta xDS stream: requests in, responses out, driven by the latest snapshot.
//!
//! A response is built only when the client's outbound slot is free, from the
//! snapshot current at that moment: a slow Envoy gets fewer, newer responses
//! and never holds up the cache or other streams.

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use envoy_types::pb::google::protobuf::Any;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tracing::{Instrument, debug, info, warn};

use super::subscription::{Changes, Subscription, SubscriptionRequest};
use crate::cache::{ResourceType, Snapshot, SnapshotReceiver};

/// Which gRPC method opened the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `DeltaAggregatedResources`: every type on one stream.
    Aggregated,
    /// `DeltaClusters` or `DeltaEndpoints`: one type only.
    Single(ResourceType),
}

#[derive(Default)]
struct TypeState {
    subscription: Subscription,
    /// The nonce of the latest response; older nonces in requests are stale.
    last_nonce: Option<String>,
    dirty: bool,
}

struct DeltaStream {
    kind: StreamKind,
    node_id: Option<String>,
    types: [Option<TypeState>; 2],
    nonce: u64,
}

/// Runs a stream until the client goes away, breaks protocol, or `shutdown` fires.
pub async fn run_stream<S>(
    kind: StreamKind,
    inbound: S,
    outbound: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    snapshots: SnapshotReceiver,
    shutdown: watch::Receiver<bool>,
) where
    S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
{
    let mut stream = DeltaStream { kind, node_id: None, types: Default::default(), nonce: 0 };
    let span = tracing::info_span!("xds_stream", kind = ?kind, node = tracing::field::Empty);
    stream.serve(inbound, outbound, snapshots, shutdown).instrument(span).await;
}

impl DeltaStream {
    async fn serve<S>(
        &mut self,
        mut inbound: S,
        outbound: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
        mut snapshots: SnapshotReceiver,
        mut shutdown: watch::Receiver<bool>,
    ) where
        S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
    {
        let mut snapshot = snapshots.borrow_and_update().clone();
        loop {
            let has_work = snapshot.is_some() && self.types.iter().flatten().any(|t| t.dirty);
            tokio::select! {
                biased;
                () = crate::shutdown::requested(&mut shutdown) => {
                    let _ = outbound.send(Err(Status::unavailable("edgexds is shutting down"))).await;
                    return;
                }
                request = inbound.next() => match request {
                    None => {
                        debug!("client closed the stream");
                        return;
                    }
                    Some(Err(status)) => {
                        debug!(%status, "stream ended by transport");
                        return;
                    }
                    Some(Ok(request)) => {
                        if let Err(status) = self.handle_request(request) {
                            warn!(%status, "rejecting request, closing stream");
                            let _ = outbound.send(Err(status)).await;
                            return;
                        }
                    }
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    snapshot = snapshots.borrow_and_update().clone();
                    self.types.iter_mut().flatten().for_each(|t| t.dirty = true);
                }
                permit = outbound.reserve(), if has_work => {
                    let Ok(permit) = permit else { return };
                    if let Some(response) = snapshot.as_deref().and_then(|s| self.next_response(s)) {
                        permit.send(Ok(response));
                    }
                }
            }
        }
    }

    fn handle_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), Status> {
        if self.node_id.is_none() {
            let node = request.node.as_ref();
            let id = node.map(|n| n.id.clone()).unwrap_or_default();
            tracing::Span::current().record("node", id.as_str());
            info!(cluster = node.map_or("", |n| n.cluster.as_str()), "client connected");
            self.node_id = Some(id);
        }
        let ty = self.resource_type(&request.type_url)?;
        let state = self.types[ty.index()].get_or_insert_with(TypeState::default);
        if !request.response_nonce.is_empty() {
            if state.last_nonce.as_deref() == Some(request.response_nonce.as_str()) {
                match &request.error_detail {
                    Some(error) => warn!(
                        type_url = %ty,
                        nonce = %request.response_nonce,
                        code = error.code,
                        error = %error.message,
                        "Envoy rejected the update (NACK)"
                    ),
                    None => debug!(type_url = %ty, nonce = %request.response_nonce, "ACK"),
                }
            } else {
                // Stale: an answer to a response that has since been superseded.
                // Its subscription changes still count.
                debug!(type_url = %ty, nonce = %request.response_nonce, "stale nonce");
            }
        }
        state.subscription.apply(SubscriptionRequest {
            subscribe: &request.resource_names_subscribe,
            unsubscribe: &request.resource_names_unsubscribe,
            initial_resource_versions: Some(&request.initial_resource_versions),
        });
        state.dirty = true;
        Ok(())
    }

    fn resource_type(&self, type_url: &str) -> Result<ResourceType, Status> {
        let supported = || ResourceType::ALL.iter().map(|t| t.type_url()).collect::<Vec<_>>().join(", ");
        match (self.kind, type_url) {
            (StreamKind::Single(ty), "") => Ok(ty),
            (StreamKind::Aggregated, "") => Err(Status::invalid_argument(
                "DeltaDiscoveryRequest.type_url is empty: on ADS every request must name its resource type",
            )),
            (kind, url) => match (ResourceType::from_type_url(url), kind) {
                (None, _) => Err(Status::invalid_argument(format!(
                    "unsupported type_url {url:?}: edgexds serves {}",
                    supported()
                ))),
                (Some(ty), StreamKind::Single(only)) if ty != only => Err(Status::invalid_argument(format!(
                    "type_url {url:?} does not belong on this stream, which serves only {}",
                    only.type_url()
                ))),
                (Some(ty), _) => Ok(ty),
            },
        }
    }

    /// The next response, clusters before endpoints, or `None` when the client is up to date.
    fn next_response(&mut self, snapshot: &Snapshot) -> Option<DeltaDiscoveryResponse> {
        for ty in ResourceType::ALL {
            let Some(state) = self.types[ty.index()].as_mut().filter(|s| s.dirty) else {
                continue;
            };
            let changes = state.subscription.changes(snapshot.resources(ty));
            if changes.is_empty() && !state.subscription.owes_response() {
                state.dirty = false;
                continue;
            }
            state.subscription.record_sent(&changes);
            state.dirty = false;
            self.nonce += 1;
            let nonce = self.nonce.to_string();
            state.last_nonce = Some(nonce.clone());
            if ty == ResourceType::Cluster {
                self.resend_endpoints_of(&changes);
            }
            debug!(
                type_url = %ty,
                nonce,
                updated = changes.updated.len(),
                removed = changes.removed.len(),
                "sending"
            );
            return Some(response(ty, nonce, changes));
        }
        None
    }

    /// Envoy keeps an updated cluster warming until its endpoints arrive again;
    /// resending them at once avoids waiting for the initial-fetch timeout.
    fn resend_endpoints_of(&mut self, clusters: &Changes) {
        if let Some(eds) = self.types[ResourceType::ClusterLoadAssignment.index()].as_mut() {
            for (name, _) in &clusters.updated {
                if eds.subscription.resend(name) {
                    eds.dirty = true;
                }
            }
        }
    }
}

fn response(ty: ResourceType, nonce: String, changes: Changes) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: ty.type_url().to_owned(),
        nonce,
        resources: changes
            .updated
            .into_iter()
            .map(|(name, resource)| Resource {
                name,
                version: resource.version.clone(),
                resource: Some(Any { type_url: ty.type_url().to_owned(), value: resource.body.clone() }),
                ..Default::default()
            })
            .collect(),
        removed_resources: changes.removed,
        ..Default::default()
    }
}
