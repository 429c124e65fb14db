//! The one layer every request body on the xDS port is read through, whatever service it is
//! for (xDS of either flavour, CSDS, HDS): it follows the gRPC message framing as bytes
//! arrive and refuses a message larger than [`Limit::RequestBytes`], bytes of partly
//! received messages beyond [`Limit::PendingRequestBytes`] across every stream, and a
//! message started but not whole within [`Limit::RequestTimeout`].
//!
//! Without it, a client that starts many large messages and never finishes them (while
//! answering PINGs, so keepalive never closes it) pins memory until the process runs out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::budget::{ByteBudget, Share};
use super::limits::{Limit, Limits};
use super::metrics::PortMetrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// gRPC's message prefix: a compression flag and a 4-byte length.
const PREFIX_BYTES: usize = 5;

/// The budget of partly received requests, shared by every stream on the port.
#[derive(Clone)]
pub struct RequestLimits {
    pending: ByteBudget,
    limits: Limits,
    metrics: PortMetrics,
}

impl RequestLimits {
    pub fn new(limits: Limits, metrics: PortMetrics) -> Self {
        let pending = limits.usize(Limit::PendingRequestBytes).max(limits.usize(Limit::RequestBytes));
        Self { pending: ByteBudget::new(pending), limits, metrics }
    }

    /// Shows the bytes held now in the pending-request gauge.
    fn report(&self) {
        let held = self.pending.limit() - self.pending.available();
        self.metrics.pending_request_bytes.set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Bytes of partly received requests no stream holds now.
    pub fn available(&self) -> usize {
        self.pending.available()
    }

    pub fn limit(&self) -> usize {
        self.pending.limit()
    }

    /// `body`, read under these limits.
    pub fn wrap<B>(self: &Arc<Self>, body: B) -> LimitedBody<B> {
        LimitedBody {
            inner: body,
            limits: self.clone(),
            held: None,
            prefix: [0; PREFIX_BYTES],
            prefix_len: 0,
            message_len: 0,
            remaining: 0,
            deadline: None,
            failed: false,
        }
    }
}

/// A request body read under [`RequestLimits`]. Its error, when a limit refuses, is the
/// [`tonic::Status`] the client gets, which every service finds in the error's chain.
pub struct LimitedBody<B> {
    inner: B,
    limits: Arc<RequestLimits>,
    /// This stream's share of the pending budget: the bytes of its message in progress.
    held: Option<Share>,
    prefix: [u8; PREFIX_BYTES],
    prefix_len: usize,
    message_len: usize,
    /// Bytes of the message in progress still to come, once its prefix is whole.
    remaining: usize,
    /// When the message in progress must be whole.
    deadline: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl<B> LimitedBody<B> {
    /// Bytes of the message in progress received so far.
    fn in_progress(&self) -> usize {
        match self.prefix_len {
            0 => 0,
            PREFIX_BYTES => PREFIX_BYTES + self.message_len - self.remaining,
            partial => partial,
        }
    }

    /// Follows the framing through `data`; refuses a message too large or too many bytes held.
    fn account(&mut self, data: &[u8]) -> Result<(), Limit> {
        let mut rest = data;
        let mut started = false;
        while !rest.is_empty() {
            if self.prefix_len < PREFIX_BYTES {
                started |= self.prefix_len == 0;
                let take = (PREFIX_BYTES - self.prefix_len).min(rest.len());
                self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&rest[..take]);
                self.prefix_len += take;
                rest = &rest[take..];
                if self.prefix_len == PREFIX_BYTES {
                    let [_, a, b, c, d] = self.prefix;
                    self.message_len = u32::from_be_bytes([a, b, c, d]) as usize;
                    if self.message_len > self.limits.limits.usize(Limit::RequestBytes) {
                        return Err(Limit::RequestBytes);
                    }
                    self.remaining = self.message_len;
                }
            } else {
                let take = self.remaining.min(rest.len());
                self.remaining -= take;
                rest = &rest[take..];
            }
            if self.prefix_len == PREFIX_BYTES && self.remaining == 0 {
                // Whole: the next byte starts a new message, with a deadline of its own.
                self.prefix_len = 0;
            }
        }
        let in_progress = self.in_progress();
        let resized = self.limits.pending.resize(&mut self.held, in_progress);
        self.limits.report();
        if !resized {
            return Err(Limit::PendingRequestBytes);
        }
        if in_progress == 0 {
            self.deadline = None;
        } else if started || self.deadline.is_none() {
            let timeout = self.limits.limits.duration(Limit::RequestTimeout);
            self.deadline = Some(Box::pin(tokio::time::sleep(timeout)));
        }
        Ok(())
    }

    /// Gives this stream's share back.
    fn release(&mut self) {
        if self.held.take().is_some() {
            self.limits.report();
        }
        self.deadline = None;
    }

    fn refuse(&mut self, limit: Limit) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failed = true;
        self.release();
        self.limits.metrics.limit_hits.hit(limit);
        let refusal = self.limits.limits.refusal(limit, "");
        Poll::Ready(Some(Err(Box::new(refusal.status))))
    }
}

impl<B> Drop for LimitedBody<B> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return this.refuse(Limit::RequestTimeout);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(limit) = this.account(data)
                {
                    return this.refuse(limit);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
            None => {
                // A message cut off by the end of the body is the decoder's to report.
                this.release();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status a refused body ended with, or else a status for a body that failed.
pub fn status_of(error: BoxError) -> tonic::Status {
    tonic::Status::from_error(error)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn limits(pending: u64, request: u64) -> Arc<RequestLimits> {
        let limits = Limits::default().with(Limit::PendingRequestBytes, pending).with(Limit::RequestBytes, request);
        Arc::new(RequestLimits::new(limits, PortMetrics::default()))
    }

    /// A message's prefix and its first `len - 5` bytes, then nothing more, ever.
    fn started(len: usize) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let mut bytes = vec![0u8, 0, 0, 0x03, 0x84];
        bytes.resize(len, 7);
        let frames = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(bytes)))])
            .chain(futures::stream::pending());
        StreamBody::new(frames)
    }

    async fn first_error<B>(body: &mut LimitedBody<B>) -> tonic::Status
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(error)) => return status_of(error),
                None => panic!("the body ended without an error"),
            }
        }
    }

    #[tokio::test]
    async fn messages_split_across_and_packed_into_frames_hold_only_what_is_incomplete() {
        let limits = limits(1000, 1000);
        let mut two = vec![0u8, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 4, 9];
        let rest = two.split_off(11);
        let frames = futures::stream::iter([two, rest].map(|b| Ok::<_, Infallible>(Frame::data(Bytes::from(b)))));
        let mut body = limits.wrap(StreamBody::new(frames));
        body.frame().await.unwrap().unwrap();
        assert_eq!(limits.available(), 1000 - 3, "the second message's first 3 bytes are held");
        body.frame().await.unwrap().unwrap();
        assert_eq!(limits.available(), 1000 - 6, "its prefix is whole and 1 of its 4 bytes came");
    }

    #[tokio::test]
    async fn partly_received_requests_share_one_bounded_budget() {
        let limits = limits(1000, 1000);
        let mut first = limits.wrap(started(600));
        first.frame().await.unwrap().unwrap();
        let mut second = limits.wrap(started(600));
        let refused = first_error(&mut second).await;
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
        assert!(refused.message().contains("--max-pending-request-bytes"), "{refused}");
        drop(first);
        let mut again = limits.wrap(started(600));
        again.frame().await.unwrap().expect("the first stream's share came back when it ended");
    }

    #[tokio::test]
    async fn a_message_longer_than_the_limit_is_refused_from_its_prefix() {
        let mut body = limits(10_000, 100).wrap(started(20));
        let refused = first_error(&mut body).await;
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
        assert!(refused.message().contains("--max-request-bytes"), "{refused}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_not_received_whole_in_time_is_refused_and_gives_its_bytes_back() {
        let limits = limits(10_000, 10_000);
        let mut body = limits.wrap(started(10));
        let started = tokio::time::Instant::now();
        let refused = first_error(&mut body).await;
        assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused}");
        assert_eq!(started.elapsed(), Duration::from_secs(30), "the default --request-timeout");
        assert_eq!(limits.available(), limits.limit(), "its bytes were given back");
        assert!(body.frame().await.is_none(), "a refused body ends");
    }
}
