//! One delta xDS stream: requests in, responses out, driven by the latest snapshot.
//!
//! A response is built only when the client's outbound slot is free, from the
//! snapshot current at that moment: a slow Envoy gets fewer, newer responses
//! and never holds up the cache or other streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures::future::OptionFuture;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument, debug, info, warn};

use super::Observer;
use super::budget::{Credit, InFlight, STALL, SendBudget, StreamSlot};
use super::grpc::Outbound;
use super::limits::StreamLimits;
use super::proxies::lock;
use super::stream_state::{Answer, StreamState, log_nack};
use crate::cache::{ResourceType, SnapshotReceiver};
use crate::ops::metrics::Metrics;
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
#[allow(clippy::too_many_arguments)]
pub async fn run_stream<S>(
    kind: StreamKind,
    limits: StreamLimits,
    inbound: S,
    outbound: mpsc::Sender<Outbound>,
    snapshots: SnapshotReceiver,
    shutdown: Shutdown,
    observer: Arc<Observer>,
    budget: Arc<SendBudget>,
) where
    S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
{
    let state = Arc::new(Mutex::new(StreamState::with_limits(kind, limits)));
    let _registration = observer.proxies.register(state.clone());
    let gauge = observer.metrics.streams.get_or_create(&Metrics::method(kind)).clone();
    gauge.inc();
    let span = tracing::info_span!("xds_stream", kind = ?kind, node = tracing::field::Empty);
    let io = Io { outbound, budget: &budget };
    serve(state, inbound, io, snapshots, shutdown, &observer).instrument(span).await;
    gauge.dec();
}

/// Where responses go, and the budget they need first.
struct Io<'a> {
    outbound: mpsc::Sender<Outbound>,
    budget: &'a SendBudget,
}

async fn serve<S>(
    state: Arc<Mutex<StreamState>>,
    mut inbound: S,
    io: Io<'_>,
    mut snapshots: SnapshotReceiver,
    mut shutdown: Shutdown,
    observer: &Observer,
) where
    S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
{
    let Io { outbound, budget } = io;
    let slot = StreamSlot::default();
    // Counted in `edgexds_xds_stuck_streams` while a response sits unwritten past STALL.
    let mut stuck = StuckMark(None);
    let mut credit: Option<Credit> = None;
    let mut reserving: Option<Pin<Box<dyn Future<Output = Credit> + Send + '_>>> = None;
    // The last response sent, until it is written or has stalled.
    let mut in_flight: Option<(tokio::time::Instant, InFlight)> = None;
    let mut snapshot = snapshots.borrow_and_update().clone();
    loop {
        // While its last response is still unwritten the stream cannot send anything, so it
        // does not even look at new snapshots: a stuck client costs nothing per change, and
        // catches up on the latest one once its response is written.
        let blocked = credit.is_none() && slot.is_busy();
        if !slot.is_busy() {
            stuck.clear();
        }
        let has_work = snapshot.is_some() && lock(&state).has_work();
        if !has_work {
            // Budget waits only for a response that will be built.
            (credit, reserving) = (None, None);
        } else if credit.is_none() && reserving.is_none() {
            reserving = Some(Box::pin(budget.reserve(&slot)));
        }
        tokio::select! {
            biased;
            () = shutdown::requested(&mut shutdown) => {
                let _ = outbound.send(Box::new(Err(Status::unavailable("edgexds is shutting down")))).await;
                return;
            }
            request = inbound.next() => match request {
                None => {
                    debug!("client closed the stream");
                    return;
                }
                Some(Err(status)) => {
                    debug!(%status, "request stream failed");
                    let _ = outbound.send(Box::new(Err(status))).await;
                    return;
                }
                Some(Ok(request)) => match handle(&state, request, observer) {
                    Ok(answered) => if answered {
                        slot.answered();
                    },
                    Err(status) => {
                        warn!(%status, "rejecting request, closing stream");
                        let _ = outbound.send(Box::new(Err(status))).await;
                        return;
                    }
                },
            },
            () = slot.until_free(), if blocked => {}
            changed = snapshots.changed(), if !blocked => {
                if changed.is_err() {
                    return;
                }
                snapshot = snapshots.borrow_and_update().clone();
                if let Some(snapshot) = &snapshot {
                    lock(&state).snapshot_changed(snapshot);
                }
            }
            Some(granted) = OptionFuture::from(reserving.as_mut()) => {
                (credit, reserving) = (Some(granted), None);
            }
            () = stalled(&in_flight) => {
                if let Some((_, held)) = in_flight.take()
                    && held.release()
                {
                    slot.stalled();
                    stuck.set(&observer.metrics.xds_stuck_streams);
                    debug!(after = ?STALL, "client is not reading its responses; it goes back on probation");
                }
            }
            permit = outbound.reserve(), if credit.is_some() => {
                let Ok(permit) = permit else { return };
                let response = snapshot.as_deref().and_then(|s| lock(&state).next_response(s, &observer.metrics));
                if let (Some(response), Some(credit)) = (response, credit.take()) {
                    let (frame, held) = credit.attach(response.frame);
                    permit.send(Box::new(Ok(frame)));
                    in_flight = Some((tokio::time::Instant::now() + STALL, held));
                }
            }
        }
    }
}

/// Holds one count of the stuck-streams gauge while set; gives it back however the stream ends.
struct StuckMark(Option<prometheus_client::metrics::gauge::Gauge>);

impl StuckMark {
    fn set(&mut self, gauge: &prometheus_client::metrics::gauge::Gauge) {
        if self.0.is_none() {
            gauge.inc();
            self.0 = Some(gauge.clone());
        }
    }

    fn clear(&mut self) {
        if let Some(gauge) = self.0.take() {
            gauge.dec();
        }
    }
}

impl Drop for StuckMark {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Resolves when the response in flight has gone unwritten for [`STALL`]; never without one.
async fn stalled(in_flight: &Option<(tokio::time::Instant, InFlight)>) {
    match in_flight {
        Some((deadline, _)) => tokio::time::sleep_until(*deadline).await,
        None => std::future::pending().await,
    }
}

/// Handles one request; says whether it answered (ACKed or NACKed) a response.
fn handle(state: &Mutex<StreamState>, request: DeltaDiscoveryRequest, observer: &Observer) -> Result<bool, Status> {
    let mut state = lock(state);
    let first = state.node.is_none();
    let answer = state.handle_request(request).map_err(|refusal| {
        if let Some(limit) = refusal.limit {
            observer.metrics.limit_hit(limit);
        }
        refusal.status
    })?;
    let node = state.node_id().to_owned();
    if first {
        tracing::Span::current().record("node", node.as_str());
        info!(cluster = state.node.as_ref().map_or("", |n| n.cluster.as_str()), "client connected");
    }
    drop(state);
    let answered = !matches!(answer, Answer::None);
    match answer {
        Answer::None => {}
        Answer::Ack { ty, latency } => {
            observer.metrics.acks.get_or_create(&Metrics::of(ty)).inc();
            Metrics::observe(&observer.metrics.convergence.get_or_create(&Metrics::of(ty)), latency);
        }
        Answer::Nack { ty, nack, cut } => {
            observer.metrics.nacks.get_or_create(&Metrics::of(ty)).inc();
            if cut {
                observer.metrics.limit_hit("nack_message_bytes");
            }
            log_nack(&node, ty, &nack, observer.proxies.first_nack(&node, ty, &nack.version));
        }
    }
    Ok(answered)
}
