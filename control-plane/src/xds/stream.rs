//! One delta xDS stream: requests in, responses out, driven by the latest snapshot.
//!
//! A response is built only when the client's outbound slot is free, from the
//! snapshot current at that moment: a slow Envoy gets fewer, newer responses
//! and never holds up the cache or other streams.

use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument, debug, info, warn};

use super::Observer;
use super::proxies::lock;
use super::stream_state::{Answer, StreamState, log_nack};
use crate::cache::{ResourceType, SnapshotReceiver};
use crate::metrics::Metrics;
use crate::shutdown::{self, Shutdown};

/// Which gRPC method opened the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `DeltaAggregatedResources`: every type on one stream.
    Aggregated,
    /// `DeltaClusters` or `DeltaEndpoints`: one type only.
    Single(ResourceType),
}

/// Runs a stream until the client goes away, breaks protocol, or shutdown is requested.
pub async fn run_stream<S>(
    kind: StreamKind,
    inbound: S,
    outbound: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    snapshots: SnapshotReceiver,
    shutdown: Shutdown,
    observer: Arc<Observer>,
) where
    S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
{
    let state = Arc::new(Mutex::new(StreamState::new(kind)));
    let _registration = observer.proxies.register(state.clone());
    let gauge = observer.metrics.streams.get_or_create(&Metrics::method(kind)).clone();
    gauge.inc();
    let span = tracing::info_span!("xds_stream", kind = ?kind, node = tracing::field::Empty);
    serve(state, inbound, outbound, snapshots, shutdown, &observer).instrument(span).await;
    gauge.dec();
}

async fn serve<S>(
    state: Arc<Mutex<StreamState>>,
    mut inbound: S,
    outbound: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    mut snapshots: SnapshotReceiver,
    mut shutdown: Shutdown,
    observer: &Observer,
) where
    S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
{
    let mut snapshot = snapshots.borrow_and_update().clone();
    loop {
        let has_work = snapshot.is_some() && lock(&state).has_work();
        tokio::select! {
            biased;
            () = shutdown::requested(&mut shutdown) => {
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
                    if let Err(status) = handle(&state, request, observer) {
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
                if let Some(snapshot) = &snapshot {
                    lock(&state).snapshot_changed(snapshot);
                }
            }
            permit = outbound.reserve(), if has_work => {
                let Ok(permit) = permit else { return };
                let response = snapshot.as_deref().and_then(|s| lock(&state).next_response(s, &observer.metrics));
                if let Some(response) = response {
                    permit.send(Ok(response));
                }
            }
        }
    }
}

fn handle(state: &Mutex<StreamState>, request: DeltaDiscoveryRequest, observer: &Observer) -> Result<(), Status> {
    let mut state = lock(state);
    let first = state.node.is_none();
    let answer = state.handle_request(request)?;
    let node = state.node_id().to_owned();
    if first {
        tracing::Span::current().record("node", node.as_str());
        info!(cluster = state.node.as_ref().map_or("", |n| n.cluster.as_str()), "client connected");
    }
    drop(state);
    match answer {
        Answer::None => {}
        Answer::Ack { ty, latency } => {
            observer.metrics.acks.get_or_create(&Metrics::of(ty)).inc();
            Metrics::observe(&observer.metrics.convergence.get_or_create(&Metrics::of(ty)), latency);
        }
        Answer::Nack { ty, nack } => {
            observer.metrics.nacks.get_or_create(&Metrics::of(ty)).inc();
            log_nack(&node, ty, &nack, observer.proxies.first_nack(&node, ty, &nack.version));
        }
    }
    Ok(())
}
