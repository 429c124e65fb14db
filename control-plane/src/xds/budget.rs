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

use std::sync::atomic::{AtomicBool, Ordering};
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

/// Bytes in flight across streams that answer what they are sent.
pub const SEND_BUDGET_BYTES: usize = 8 << 20;
/// Bytes in flight across new and stalled streams.
pub const PROBATION_BYTES: usize = 2 << 20;
/// A response unwritten this long no longer counts against the budget, and its stream
/// goes back on probation.
pub const STALL: Duration = Duration::from_secs(2);

pub struct SendBudget {
    bytes: ByteBudget,
    probation: ByteBudget,
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
        }
    }

    /// Bytes of the main pool not in flight now.
    pub fn available(&self) -> usize {
        self.bytes.available()
    }

    /// Waits (first come, first served within its pool) until this stream's previous response
    /// is written and its pool has room for a full-size response.
    pub async fn reserve(&self, stream: &StreamSlot) -> Credit {
        let own = stream.own.clone().acquire_owned().await;
        let pool = if stream.trusted.load(Ordering::Acquire) { &self.bytes } else { &self.probation };
        let bytes = pool.take(MAX_RESPONSE_BYTES).await;
        match (own, bytes) {
            (Ok(own), Some(bytes)) => Credit { _own: Some(own), bytes: Arc::new(Mutex::new(Some(bytes))) },
            // The semaphores are never closed; without them, sending unbudgeted is the safe fallback.
            _ => Credit { _own: None, bytes: Arc::default() },
        }
    }
}

/// One response in flight per stream, and which pool the stream draws from.
pub struct StreamSlot {
    own: Arc<Semaphore>,
    trusted: AtomicBool,
}

impl Default for StreamSlot {
    fn default() -> Self {
        Self { own: Arc::new(Semaphore::new(1)), trusted: AtomicBool::new(false) }
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

    /// A response of this stream stalled: back to probation until it answers again.
    pub fn stalled(&self) {
        self.trusted.store(false, Ordering::Release);
    }
}

/// The right to put one response in flight; given back when its frame is dropped.
pub struct Credit {
    _own: Option<OwnedSemaphorePermit>,
    /// Shared with the stream, which can give it back early if the frame stalls.
    bytes: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
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
    /// Wraps an encoded frame so the credit returns once HTTP/2 has written and dropped it.
    /// Unused budget returns at once; a frame larger than a full response (one big resource)
    /// goes out on the credit it has.
    pub fn attach(self, frame: Vec<u8>) -> (Bytes, InFlight) {
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
}
