//! A response stream's body as the port hands it back: it keeps the stream's places (its
//! count against the connection's streams, its hold on the connection) until the stream is
//! dropped, and ends the stream `UNAUTHENTICATED` once the token it was let in with is
//! revoked, whichever service it belongs to.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tracing::info;

use super::connections::Held;
use crate::auth::{Identity, Revocation};

/// A stream's count against its connection's streams, given back when the stream ends.
pub struct StreamCount(Arc<AtomicU32>);

impl StreamCount {
    /// Counts one more stream in `streams` if fewer than `max` are open.
    pub fn take(streams: &Arc<AtomicU32>, max: u64) -> Option<Self> {
        if u64::from(streams.fetch_add(1, Ordering::AcqRel)) >= max {
            streams.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(streams.clone()))
    }
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a stream holds while it is open.
pub struct Places {
    pub count: StreamCount,
    pub held: Option<Held>,
}

pub struct StreamBody {
    inner: Body,
    revoked: Option<BoxFuture<'static, Identity>>,
    ended: bool,
    _places: Places,
}

impl StreamBody {
    pub fn new(inner: Body, places: Places, revocation: Option<(Revocation, Identity)>) -> Self {
        let revoked = revocation.map(|(mut revocation, identity)| -> BoxFuture<'static, Identity> {
            Box::pin(async move {
                revocation.revoked().await;
                identity
            })
        });
        Self { inner, revoked, ended: false, _places: places }
    }
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(revoked) = self.revoked.as_mut()
            && let Poll::Ready(identity) = revoked.as_mut().poll(cx)
        {
            info!(identity = %identity.name(), "ending a stream: the token it was let in with is no longer valid");
            self.ended = true;
            // The service's side of the stream goes now, not when the client hangs up.
            self.inner = Body::empty();
            let mut trailers = HeaderMap::new();
            let status = Status::unauthenticated("the token this stream was let in with is no longer valid");
            // A fixed ASCII message always encodes.
            let _ = status.add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    /// A refusal is all headers (gRPC's trailers-only), and must stay so: a client reads the
    /// status from headers only when they end the stream.
    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.inner.is_end_stream() || self.revoked.is_none() {
            true => self.inner.size_hint(),
            false => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places() -> Places {
        Places { count: StreamCount::take(&Arc::default(), 1).expect("a place"), held: None }
    }

    fn revocable() -> (tokio::sync::watch::Sender<bool>, Option<(Revocation, Identity)>) {
        let (revoke, revoked) = tokio::sync::watch::channel(false);
        let identity = Identity::from_spiffe("spiffe://td/ns/shop/sa/web").expect("an identity");
        (revoke, Some((Revocation::new(revoked), identity)))
    }

    #[test]
    fn a_refusal_stays_trailers_only_when_the_stream_could_be_revoked() {
        let (_revoke, revocation) = revocable();
        let refused = StreamBody::new(Body::empty(), places(), revocation);
        assert!(refused.is_end_stream());
    }

    #[tokio::test]
    async fn a_revoked_stream_ends_unauthenticated_and_drops_the_services_side() {
        use http_body_util::BodyExt;
        let (revoke, revocation) = revocable();
        let (_keep, endless) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, axum::Error>>(1);
        let inner = Body::new(http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(endless)));
        let mut body = StreamBody::new(inner, places(), revocation);
        revoke.send_replace(true);
        let trailers = body.frame().await.expect("a frame").expect("trailers").into_trailers().expect("trailers");
        let status = Status::from_header_map(&trailers).expect("a status");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(body.frame().await.is_none() && body.is_end_stream());
    }
}
