//! One xDS stream, delta or state of the world: requests in, responses out, driven by
//! the latest snapshot.
//!
//! A response is built only when the client's outbound slot is free, from the
//! snapshot current at that moment: a slow Envoy gets fewer, newer responses
//! and never holds up the cache or other streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use futures::future::OptionFuture;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tracing::{Instrument, debug, info, warn};

use super::budget::{Credit, InFlight, MAX_RESPONSE_BYTES, STALL, SendBudget, StreamSlot};
use super::delta_request::DeltaRequest;
use super::grpc::Outbound;
use super::metrics::XdsMetrics;
use super::proxies::ProxyRegistry;
use super::stream_state::{Answer, Outgoing, StreamState, log_nack};
use super::view::{Question, StreamHandle, StreamView};
use super::{Flavour, StreamKind};
use crate::cache::{Snapshot, SnapshotReceiver};
use crate::histograms;
use crate::port::{Limit, LimitHits, Limits, Refusal};
use crate::shutdown::{self, Shutdown};

/// What every stream shares: where it counts, where it registers, what it may cost.
#[derive(Clone)]
pub struct StreamEnv {
    pub metrics: Arc<XdsMetrics>,
    pub limit_hits: LimitHits,
    pub proxies: Arc<ProxyRegistry>,
    pub budget: Arc<SendBudget>,
    pub limits: Limits,
    /// Who the client authenticated as, when it did.
    pub identity: Option<crate::auth::Identity>,
    /// Where streams say their clients are; without it every client gets the shared assignments.
    pub places: Option<Arc<crate::cache::Places>>,
}

impl StreamEnv {
    /// Streams that count into `metrics` and `limit_hits`, register in `proxies`, and may cost
    /// `limits`, with the default send budget.
    pub fn new(limits: Limits, metrics: Arc<XdsMetrics>, limit_hits: LimitHits, proxies: Arc<ProxyRegistry>) -> Self {
        Self { metrics, limit_hits, proxies, budget: Arc::default(), limits, identity: None, places: None }
    }
}

/// A request of either flavour, and how it changes a stream's state.
pub trait XdsRequest: prost::Message + Default + Send + 'static {
    const FLAVOUR: Flavour;

    /// `current`: the snapshot being served, which a reconnecting client's versions are
    /// checked against as they arrive.
    fn apply(self, state: &mut StreamState, current: Option<&Snapshot>) -> Result<Answer, Refusal>;
}

impl XdsRequest for DeltaRequest {
    const FLAVOUR: Flavour = Flavour::Delta;

    fn apply(self, state: &mut StreamState, current: Option<&Snapshot>) -> Result<Answer, Refusal> {
        state.handle_request(self, current)
    }
}

impl XdsRequest for DiscoveryRequest {
    const FLAVOUR: Flavour = Flavour::Sotw;

    fn apply(self, state: &mut StreamState, current: Option<&Snapshot>) -> Result<Answer, Refusal> {
        state.handle_sotw_request(self, current)
    }
}

/// Runs a stream until the client goes away, breaks protocol, or shutdown is requested.
pub async fn run_stream<R, S>(
    kind: StreamKind,
    inbound: S,
    outbound: mpsc::Sender<Outbound>,
    snapshots: SnapshotReceiver,
    shutdown: Shutdown,
    env: StreamEnv,
) where
    R: XdsRequest,
    S: Stream<Item = Result<R, Status>> + Unpin,
{
    let mut state =
        StreamState::new(kind, env.limits).with_identity(env.identity.clone()).with_places(env.places.clone());
    if R::FLAVOUR == Flavour::Sotw {
        state = state.sotw();
    }
    let (handle, views, questions) = StreamHandle::new(state.view());
    let _registration = env.proxies.register(handle);
    let gauge = env.metrics.streams_of(kind, R::FLAVOUR);
    gauge.inc();
    let span =
        tracing::info_span!("xds_stream", kind = ?kind, flavour = R::FLAVOUR.name(), node = tracing::field::Empty);
    let io = Io { outbound, budget: &env.budget, views, questions };
    serve(state, inbound, io, snapshots, shutdown, &env).instrument(span).await;
    gauge.dec();
}

/// Where responses go and the budget they need first; where the stream shows itself, and
/// where operators' questions arrive.
struct Io<'a> {
    outbound: mpsc::Sender<Outbound>,
    budget: &'a SendBudget,
    views: watch::Sender<Arc<StreamView>>,
    questions: mpsc::Receiver<Question>,
}

async fn serve<R, S>(
    mut state: StreamState,
    mut inbound: S,
    io: Io<'_>,
    mut snapshots: SnapshotReceiver,
    mut shutdown: Shutdown,
    env: &StreamEnv,
) where
    R: XdsRequest,
    S: Stream<Item = Result<R, Status>> + Unpin,
{
    let Io { outbound, budget, views, mut questions } = io;
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
        let has_work = snapshot.is_some() && state.has_work();
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
                Some(Ok(request)) => match handle(&mut state, request, env, snapshot.as_deref()) {
                    Ok(answered) => {
                        match answered {
                            Answered::Not => {}
                            Answered::Ack(latency) => slot.acked(latency),
                            Answered::Nack => slot.nacked(),
                        }
                        publish(&views, &state, snapshot.is_some());
                    }
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
                    state.snapshot_changed(snapshot);
                }
            }
            Some(granted) = OptionFuture::from(reserving.as_mut()) => {
                (credit, reserving) = (Some(granted), None);
            }
            Some(question) = questions.recv() => {
                let _ = question.send(state.holdings());
            }
            () = stalled(&in_flight) => {
                if let Some((_, held)) = in_flight.take()
                    && held.release()
                {
                    slot.stalled();
                    stuck.set(&env.metrics.stuck_streams);
                    debug!(after = ?STALL, "client is not reading its responses; it goes back on probation");
                }
            }
            permit = outbound.reserve(), if credit.is_some() => {
                let Ok(permit) = permit else { return };
                let granted = credit.as_ref().map_or(MAX_RESPONSE_BYTES, Credit::limit);
                let outgoing = snapshot.as_deref().and_then(|s| state.next_response_within(s, granted));
                publish(&views, &state, snapshot.is_some());
                if let (Some(outgoing), Some(credit)) = (outgoing, credit.take()) {
                    count_response(&env.metrics, &outgoing);
                    let (frame, held) = credit.attach(outgoing.response.frame);
                    permit.send(Box::new(Ok(frame)));
                    in_flight = Some((tokio::time::Instant::now() + STALL, held));
                }
            }
        }
    }
}

/// Shows the stream as it is now; before the first snapshot it can do nothing, so it is not busy.
fn publish(views: &watch::Sender<Arc<StreamView>>, state: &StreamState, serving: bool) {
    let mut view = state.view();
    view.busy &= serving;
    views.send_replace(Arc::new(view));
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

/// Counts a response sent, by type.
fn count_response(metrics: &XdsMetrics, outgoing: &Outgoing) {
    let series = metrics.series(outgoing.ty);
    series.responses.inc();
    series.resources_sent.inc_by(outgoing.updated as u64);
    series.resources_removed.inc_by(outgoing.removed as u64);
    series.bytes_sent.inc_by(outgoing.response.message_len() as u64);
    if let Some(latency) = outgoing.push_latency {
        histograms::observe(&metrics.push_latency, latency);
    }
}

/// What a request said of the stream's last response.
enum Answered {
    Not,
    Ack(std::time::Duration),
    Nack,
}

/// Handles one request; says whether it answered (ACKed or NACKed) a response.
fn handle<R: XdsRequest>(
    state: &mut StreamState,
    request: R,
    env: &StreamEnv,
    current: Option<&Snapshot>,
) -> Result<Answered, Status> {
    let first = state.node().is_none();
    let answer = request.apply(state, current).map_err(|refusal| {
        if let Some(limit) = refusal.limit {
            env.limit_hits.hit(limit);
        }
        refusal.status
    })?;
    let node = state.node_id().to_owned();
    if first {
        tracing::Span::current().record("node", node.as_str());
        info!(cluster = state.node().map_or("", |n| n.cluster.as_str()), "client connected");
    }
    let answered = match &answer {
        Answer::SubscriptionOnly => Answered::Not,
        Answer::Ack { latency, .. } => Answered::Ack(*latency),
        Answer::Nack { .. } => Answered::Nack,
    };
    match answer {
        Answer::SubscriptionOnly => {}
        Answer::Ack { ty, latency } => {
            let series = env.metrics.series(ty);
            series.acks.inc();
            histograms::observe(&series.convergence, latency);
        }
        Answer::Nack { ty, nack, cut } => {
            env.metrics.series(ty).nacks.inc();
            if cut {
                env.limit_hits.hit(Limit::NackMessageBytes);
            }
            log_nack(&node, ty, &nack, env.proxies.first_nack(&node, ty, &nack.version));
        }
    }
    Ok(answered)
}
