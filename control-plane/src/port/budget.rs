//! A pool of bytes that many streams draw from: what all of them together may hold, whether
//! requests not yet received whole or responses not yet written.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes shared by every stream that draws from it; a share is a permit, given back when dropped.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    limit: usize,
}

/// What one holder has of a [`ByteBudget`].
pub type Share = OwnedSemaphorePermit;

impl ByteBudget {
    /// A pool of `limit` bytes (at most what one acquisition can name).
    pub fn new(limit: usize) -> Self {
        let limit = limit.min(u32::MAX as usize);
        Self { bytes: Arc::new(Semaphore::new(limit)), limit }
    }

    /// Bytes no holder has now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// `bytes` now, or `None` when the pool has not that much free.
    pub fn try_take(&self, bytes: usize) -> Option<Share> {
        let bytes = u32::try_from(bytes).ok()?;
        self.bytes.clone().try_acquire_many_owned(bytes).ok()
    }

    /// `bytes` once the pool has them, first come first served.
    pub async fn take(&self, bytes: usize) -> Option<Share> {
        let bytes = u32::try_from(bytes).ok()?;
        self.bytes.clone().acquire_many_owned(bytes).await.ok()
    }

    /// Grows or shrinks `held` to exactly `bytes`; `false` (and `held` unchanged) when the
    /// pool cannot give the difference.
    pub fn resize(&self, held: &mut Option<Share>, bytes: usize) -> bool {
        let have = held.as_ref().map_or(0, Share::num_permits);
        if bytes > have {
            let Some(more) = self.try_take(bytes - have) else { return false };
            match held {
                Some(share) => share.merge(more),
                None => *held = Some(more),
            }
        } else if bytes == 0 {
            *held = None;
        } else if let Some(share) = held.as_mut() {
            drop(share.split(have - bytes));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_resizes_within_the_pool_and_returns_when_dropped() {
        let budget = ByteBudget::new(100);
        let mut held = None;
        assert!(budget.resize(&mut held, 60));
        assert_eq!(budget.available(), 40);
        assert!(!budget.resize(&mut held, 101), "more than the pool");
        assert_eq!(budget.available(), 40, "a refused resize changes nothing");
        assert!(budget.resize(&mut held, 10));
        assert_eq!(budget.available(), 90);
        drop(held);
        assert_eq!(budget.available(), 100);
    }
}
