//! A process-wide budget of response bytes in flight: encoded, but not yet written to a socket.
//!
//! Without it, 1,000 Envoys syncing at once each hold a response in memory while
//! the sockets drain, and the peak grows with the fleet. Each stream also has at
//! most one response in flight, so a client that stops reading pins one response,
//! not a queue.
//!
//! Stuck clients must not slow the others, however many connect. So the budget has
//! two pools. A stream earns the main pool by answering (ACK or NACK) what it was
//! sent, which a client that does not read cannot do; until then, and again after
//! one of its responses went unwritten for [`STALL`], it draws from a small
//! probation pool. Stuck clients then only ever wait on each other.
//!
//! Responses grow with a client's promptness: every response is at most
//! [`MAX_RESPONSE_BYTES`] until the stream has ACKed one within [`PROMPT`]; each prompt ACK
//! doubles what its next response may carry, up to [`MAX_EARNED_RESPONSE_BYTES`], and a
//! NACK, a slow ACK or a stall brings it back to the base. The bytes above the base come
//! from a third pool, [`EARNED_BUDGET_BYTES`], taken only if free (a stream never waits for
//! them: it sends a base-size response instead) and held until the frame is written, even
//! past a stall. So a client that earns large responses and then stops reading pins at most
//! that pool, shared by all such clients, beyond the one base-size response per stream that
//! bounded stuck clients before.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::port::ByteBudget;

/// Resource bytes per response, at most (a single larger resource still goes alone).
/// A stream's response is held whole until its client reads it, so this bounds what
/// a slow Envoy can pin in memory, and keeps messages far below gRPC size limits. It is
/// also what the budget reserves for each response before it is built.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The most a prompt client's response may carry.
pub const MAX_EARNED_RESPONSE_BYTES: usize = 1 << 20;
/// Bytes above the base, in flight across every stream's earned responses. With the main
/// pool, what a 1,000-client sync holds in flight at its peak (4 + 4 MiB took 12 MiB off
/// that peak against 8 + 8, at the same sync time).
pub const EARNED_BUDGET_BYTES: usize = 4 << 20;
/// An ACK this soon after its response earns the stream a larger next one.
pub const PROMPT: Duration = Duration::from_secs(1);

/// Bytes in flight across streams that answer what they are sent: enough to keep every
/// socket of a 1,000-client sync busy.
pub const SEND_BUDGET_BYTES: usize = 4 << 20;
/// Bytes in flight across new and stalled streams.
pub const PROBATION_BYTES: usize = 2 << 20;
/// A response unwritten this long no longer counts against the budget, and its stream
/// goes back on probation.
pub const STALL: Duration = Duration::from_secs(2);

pub struct SendBudget {
    bytes: ByteBudget,
    probation: ByteBudget,
    earned: ByteBudget,
}

impl Default for SendBudget {
    fn default() -> Self {
        Self::new(SEND_BUDGET_BYTES)
    }
}

impl SendBudget {
    pub fn new(bytes: usize) -> Self {
        Self::with_probation(bytes, PROBATION_BYTES)
    }

    pub fn with_probation(bytes: usize, probation: usize) -> Self {
        Self {
            bytes: ByteBudget::new(bytes.max(MAX_RESPONSE_BYTES)),
            probation: ByteBudget::new(probation.max(MAX_RESPONSE_BYTES)),
            earned: ByteBudget::new(EARNED_BUDGET_BYTES),
        }
    }

    /// Bytes of the main pool not in flight now.
    pub fn available(&self) -> usize {
        self.bytes.available()
    }

    /// Waits (first come, first served within its pool) until this stream's previous response
    /// is written and its pool has room for a base-size response; adds what the stream has
    /// earned above that if the earned pool has it now.
    pub async fn reserve(&self, stream: &StreamSlot) -> Credit {
        let own = stream.own.clone().acquire_owned().await;
        let pool = if stream.trusted.load(Ordering::Acquire) { &self.bytes } else { &self.probation };
        let bytes = pool.take(MAX_RESPONSE_BYTES).await;
        let above = stream.earned.load(Ordering::Acquire).saturating_sub(MAX_RESPONSE_BYTES);
        let earned = (above > 0).then(|| self.earned.try_take(above)).flatten();
        let limit = MAX_RESPONSE_BYTES + earned.as_ref().map_or(0, |e| e.num_permits());
        match (own, bytes) {
            (Ok(own), Some(bytes)) => {
                Credit { _own: Some(own), bytes: Arc::new(Mutex::new(Some(bytes))), earned, limit }
            }
            // The semaphores are never closed; without them, sending unbudgeted is the safe fallback.
            _ => Credit { _own: None, bytes: Arc::default(), earned: None, limit: MAX_RESPONSE_BYTES },
        }
    }
}

/// One response in flight per stream, and which pool the stream draws from.
pub struct StreamSlot {
    own: Arc<Semaphore>,
    trusted: AtomicBool,
    /// What its next response may carry, as its promptness has earned.
    earned: AtomicUsize,
}

impl Default for StreamSlot {
    fn default() -> Self {
        Self {
            own: Arc::new(Semaphore::new(1)),
            trusted: AtomicBool::new(false),
            earned: AtomicUsize::new(MAX_RESPONSE_BYTES),
        }
    }
}

impl StreamSlot {
    /// The client answered a response: it reads, so it may use the main pool.
    pub fn answered(&self) {
        self.trusted.store(true, Ordering::Release);
    }

    /// Its last response is still in flight (held by HTTP/2, unwritten).
    pub fn is_busy(&self) -> bool {
        self.own.available_permits() == 0
    }

    /// Resolves once the response in flight is written (at once if there is none).
    pub async fn until_free(&self) {
        let _ = self.own.acquire().await;
    }

    /// A response of this stream stalled: back to probation until it answers again, and
    /// back to base-size responses.
    pub fn stalled(&self) {
        self.trusted.store(false, Ordering::Release);
        self.earned.store(MAX_RESPONSE_BYTES, Ordering::Release);
    }

    /// The client ACKed after `latency`: it answered, and within [`PROMPT`] its next response
    /// may be twice as large (up to [`MAX_EARNED_RESPONSE_BYTES`]); later, it is back to the base.
    pub fn acked(&self, latency: Duration) {
        self.answered();
        let earned = self.earned.load(Ordering::Acquire);
        let next = if latency <= PROMPT { (earned * 2).min(MAX_EARNED_RESPONSE_BYTES) } else { MAX_RESPONSE_BYTES };
        self.earned.store(next, Ordering::Release);
    }

    /// The client NACKed: it answered, and is back to base-size responses.
    pub fn nacked(&self) {
        self.answered();
        self.earned.store(MAX_RESPONSE_BYTES, Ordering::Release);
    }

    /// What the stream's next response may carry, as earned (the earned pool permitting).
    pub fn earned(&self) -> usize {
        self.earned.load(Ordering::Acquire)
    }
}

/// The right to put one response in flight; given back when its frame is dropped.
pub struct Credit {
    _own: Option<OwnedSemaphorePermit>,
    /// Shared with the stream, which can give it back early if the frame stalls.
    bytes: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    /// The bytes above the base, held until the frame is written, stall or not.
    earned: Option<OwnedSemaphorePermit>,
    limit: usize,
}

impl Drop for Credit {
    fn drop(&mut self) {
        // The stream may still hold an `InFlight` handle: the share must return now, not then.
        crate::lock::lock(&self.bytes).take();
    }
}

/// A stream's hold on the budget share of its response in flight.
pub struct InFlight(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl InFlight {
    /// Gives the share back while the frame is still unwritten; says whether it held any.
    pub fn release(self) -> bool {
        crate::lock::lock(&self.0).take().is_some()
    }
}

impl Credit {
    /// Resource bytes the response may carry.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Wraps an encoded frame so the credit returns once HTTP/2 has written and dropped it.
    /// Unused budget returns at once; a frame larger than a full response (one big resource)
    /// goes out on the credit it has.
    pub fn attach(mut self, frame: Vec<u8>) -> (Bytes, InFlight) {
        let above = frame.len().saturating_sub(MAX_RESPONSE_BYTES);
        if let Some(earned) = self.earned.as_mut() {
            let unused = earned.num_permits().saturating_sub(above);
            drop(earned.split(unused));
        }
        if let Some(bytes) = crate::lock::lock(&self.bytes).as_mut() {
            let unused = bytes.num_permits().saturating_sub(frame.len());
            drop(bytes.split(unused));
        }
        let in_flight = InFlight(self.bytes.clone());
        (Bytes::from_owner(Frame { frame, _credit: self }), in_flight)
    }
}

struct Frame {
    frame: Vec<u8>,
    _credit: Credit,
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

#[cfg(test)]
mod tests {
    //! With tokio's clock paused, a wait that cannot end times out the moment every task is
    //! idle: "still waiting" is decided, not guessed from a short real-time wait.
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_frame_holds_only_its_size_until_it_is_dropped() {
        let budget = SendBudget::new(MAX_RESPONSE_BYTES * 2);
        let slot = StreamSlot::default();
        slot.answered();
        let (frame, in_flight) = budget.reserve(&slot).await.attach(vec![0; 1000]);
        assert_eq!(budget.available(), MAX_RESPONSE_BYTES * 2 - 1000);
        drop(frame);
        assert_eq!(
            budget.available(),
            MAX_RESPONSE_BYTES * 2,
            "written: the share returns though the stream still looks"
        );
        assert!(!in_flight.release(), "nothing left to give back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waits_for_its_previous_frame_and_others_for_room() {
        let budget = Arc::new(SendBudget::new(MAX_RESPONSE_BYTES));
        let (mine, other) = (StreamSlot::default(), StreamSlot::default());
        mine.answered();
        other.answered();
        let (first, _) = budget.reserve(&mine).await.attach(vec![0; MAX_RESPONSE_BYTES]);
        let again = tokio::time::timeout(Duration::from_millis(50), budget.reserve(&mine)).await;
        assert!(again.is_err(), "one response in flight per stream");
        let others = tokio::time::timeout(Duration::from_millis(50), budget.reserve(&other)).await;
        assert!(others.is_err(), "the budget is full");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), budget.reserve(&other)).await.expect("room again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_frame_gives_its_budget_back_but_still_blocks_its_own_stream() {
        let budget = SendBudget::new(MAX_RESPONSE_BYTES);
        let (stuck, other) = (StreamSlot::default(), StreamSlot::default());
        stuck.answered();
        other.answered();
        let (frame, in_flight) = budget.reserve(&stuck).await.attach(vec![0; MAX_RESPONSE_BYTES]);
        assert!(in_flight.release(), "the share was still held");
        tokio::time::timeout(Duration::from_secs(1), budget.reserve(&other)).await.expect("others go on");
        let own = tokio::time::timeout(Duration::from_millis(50), budget.reserve(&stuck)).await;
        assert!(own.is_err(), "the stuck stream itself still waits for its frame");
        drop(frame);
        assert_eq!(budget.available(), MAX_RESPONSE_BYTES, "dropping the frame later returns nothing twice");
    }

    #[tokio::test(start_paused = true)]
    async fn streams_that_never_answered_wait_only_on_each_other() {
        let budget = SendBudget::with_probation(MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES);
        let (stuck, newcomer, healthy) = (StreamSlot::default(), StreamSlot::default(), StreamSlot::default());
        healthy.answered();
        let (_never_written, _) = budget.reserve(&stuck).await.attach(vec![0; MAX_RESPONSE_BYTES]);
        let waits = tokio::time::timeout(Duration::from_millis(50), budget.reserve(&newcomer)).await;
        assert!(waits.is_err(), "probation is full of the stuck stream's response");
        tokio::time::timeout(Duration::from_secs(1), budget.reserve(&healthy))
            .await
            .expect("a stream that answers is not held up by streams that do not");
        healthy.stalled();
        let demoted = tokio::time::timeout(Duration::from_millis(50), budget.reserve(&healthy)).await;
        assert!(demoted.is_err(), "after a stall, a stream draws from probation again");
    }

    #[test]
    fn a_prompt_ack_doubles_the_response_size_up_to_the_cap_and_anything_else_resets_it() {
        let slot = StreamSlot::default();
        assert_eq!(slot.earned(), MAX_RESPONSE_BYTES);
        for _ in 0..10 {
            slot.acked(PROMPT);
        }
        assert_eq!(slot.earned(), MAX_EARNED_RESPONSE_BYTES);
        slot.acked(PROMPT + Duration::from_millis(1));
        assert_eq!(slot.earned(), MAX_RESPONSE_BYTES, "a slow ACK");
        slot.acked(Duration::ZERO);
        slot.nacked();
        assert_eq!(slot.earned(), MAX_RESPONSE_BYTES, "a NACK");
        slot.acked(Duration::ZERO);
        slot.stalled();
        assert_eq!(slot.earned(), MAX_RESPONSE_BYTES, "a stall");
    }

    #[tokio::test(start_paused = true)]
    async fn earned_bytes_are_taken_only_if_free_and_a_stall_does_not_return_them() {
        let budget = SendBudget::new(SEND_BUDGET_BYTES);
        let slots: Vec<StreamSlot> = (0..EARNED_BUDGET_BYTES / MAX_EARNED_RESPONSE_BYTES + 1)
            .map(|_| {
                let slot = StreamSlot::default();
                slot.answered();
                (0..5).for_each(|_| slot.acked(Duration::ZERO));
                slot
            })
            .collect();
        let mut held = Vec::new();
        for slot in &slots[..slots.len() - 1] {
            let credit = budget.reserve(slot).await;
            assert_eq!(credit.limit(), MAX_EARNED_RESPONSE_BYTES);
            held.push(credit.attach(vec![0; MAX_EARNED_RESPONSE_BYTES]));
        }
        let last = tokio::time::timeout(Duration::from_secs(1), budget.reserve(&slots[slots.len() - 1]))
            .await
            .expect("an exhausted earned pool never makes a stream wait");
        assert_eq!(last.limit(), MAX_RESPONSE_BYTES, "it sends a base-size response instead");
        // Every earned response stalls: the base shares return, the earned ones stay held,
        // so clients that earned large responses and stopped reading pin at most that pool.
        for (_, in_flight) in held.drain(..).map(|(frame, in_flight)| (std::mem::forget(frame), in_flight)) {
            assert!(in_flight.release());
        }
        assert_eq!(budget.available(), SEND_BUDGET_BYTES - MAX_RESPONSE_BYTES, "only the last credit's base is out");
        drop(last);
        let another = StreamSlot::default();
        another.answered();
        (0..5).for_each(|_| another.acked(Duration::ZERO));
        let again = budget.reserve(&another);
        let again = tokio::time::timeout(Duration::from_secs(1), again).await.expect("base room");
        assert_eq!(again.limit(), MAX_RESPONSE_BYTES, "the stalled frames still hold the earned pool");
    }
}
