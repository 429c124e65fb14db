//! A process-wide budget of response bytes in flight: encoded, but not yet written to a socket.
//!
//! Without it, 1,000 Envoys syncing at once each hold a response in memory while
//! the sockets drain, and the peak grows with the fleet. Each stream also has at
//! most one response in flight, so a client that stops reading pins one response
//! of the budget, not a queue.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::MAX_RESPONSE_BYTES;

/// Bytes in flight across all streams.
pub const SEND_BUDGET_BYTES: usize = 8 << 20;

pub struct SendBudget {
    bytes: Arc<Semaphore>,
}

impl Default for SendBudget {
    fn default() -> Self {
        Self::new(SEND_BUDGET_BYTES)
    }
}

impl SendBudget {
    pub fn new(bytes: usize) -> Self {
        Self { bytes: Arc::new(Semaphore::new(bytes.max(MAX_RESPONSE_BYTES))) }
    }

    /// Bytes of the budget not in flight now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Waits (first come, first served) until this stream's previous response is written and
    /// the budget has room for a full-size response.
    pub async fn reserve(&self, stream: &StreamSlot) -> Credit {
        let own = stream.0.clone().acquire_owned().await;
        let bytes = self.bytes.clone().acquire_many_owned(MAX_RESPONSE_BYTES as u32).await;
        match (own, bytes) {
            (Ok(own), Ok(bytes)) => Credit { _own: Some(own), bytes: Some(bytes) },
            // The semaphores are never closed; without them, sending unbudgeted is the safe fallback.
            _ => Credit { _own: None, bytes: None },
        }
    }
}

/// One response in flight per stream.
pub struct StreamSlot(Arc<Semaphore>);

impl Default for StreamSlot {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(1)))
    }
}

/// The right to put one response in flight; given back when its frame is dropped.
pub struct Credit {
    _own: Option<OwnedSemaphorePermit>,
    bytes: Option<OwnedSemaphorePermit>,
}

impl Credit {
    /// Wraps an encoded frame so the credit returns once HTTP/2 has written and dropped it.
    /// Unused budget returns at once; a frame larger than a full response (one big resource)
    /// goes out on the credit it has.
    pub fn attach(mut self, frame: Vec<u8>) -> Bytes {
        if let Some(bytes) = &mut self.bytes {
            let unused = bytes.num_permits().saturating_sub(frame.len());
            drop(bytes.split(unused));
        }
        Bytes::from_owner(Frame { frame, _credit: self })
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
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_frame_holds_only_its_size_until_it_is_dropped() {
        let budget = SendBudget::new(MAX_RESPONSE_BYTES * 2);
        let slot = StreamSlot::default();
        let frame = budget.reserve(&slot).await.attach(vec![0; 1000]);
        assert_eq!(budget.available(), MAX_RESPONSE_BYTES * 2 - 1000);
        drop(frame);
        assert_eq!(budget.available(), MAX_RESPONSE_BYTES * 2);
    }

    #[tokio::test]
    async fn a_stream_waits_for_its_previous_frame_and_others_for_room() {
        let budget = Arc::new(SendBudget::new(MAX_RESPONSE_BYTES));
        let (mine, other) = (StreamSlot::default(), StreamSlot::default());
        let first = budget.reserve(&mine).await.attach(vec![0; MAX_RESPONSE_BYTES]);
        let again = tokio::time::timeout(Duration::from_millis(50), budget.reserve(&mine)).await;
        assert!(again.is_err(), "one response in flight per stream");
        let others = tokio::time::timeout(Duration::from_millis(50), budget.reserve(&other)).await;
        assert!(others.is_err(), "the budget is full");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), budget.reserve(&other)).await.expect("room again");
    }
}
