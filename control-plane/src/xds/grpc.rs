//! gRPC framing for the delta xDS streams, straight on hyper.
//!
//! tonic encodes a stream's responses into one buffer that keeps the largest
//! response ever sent alive for the life of the stream (tens of kB per Envoy,
//! at rest). Here each response is encoded once into its own frame, which is
//! freed as soon as HTTP/2 has written it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, header};
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Status;

use super::limits::XdsLimits;
use super::metrics::XdsMetrics;

/// Bounds what clients can make the server hold of requests not yet received whole:
/// a client that starts many large messages and never finishes them (while answering
/// PINGs, so keepalive never closes it) gets a status instead of pinning memory.
pub struct RequestBudget {
    bytes: Arc<Semaphore>,
    limit: usize,
    max_request_bytes: usize,
    timeout: std::time::Duration,
    metrics: Arc<XdsMetrics>,
}

impl RequestBudget {
    pub fn new(limits: &XdsLimits, metrics: Arc<XdsMetrics>) -> Self {
        let limit = limits.max_pending_request_bytes.max(limits.max_request_bytes).min(u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(limit)),
            limit,
            max_request_bytes: limits.max_request_bytes,
            timeout: limits.request_timeout,
            metrics,
        }
    }

    /// Bytes not held by any stream now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Bytes all streams together may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `more` bytes into `held`, or refuses when every stream together holds too much.
    fn hold(&self, held: &mut Option<OwnedSemaphorePermit>, more: usize) -> Result<(), Status> {
        let Ok(permit) =
            u32::try_from(more).map_err(drop).and_then(|n| self.bytes.clone().try_acquire_many_owned(n).map_err(drop))
        else {
            self.metrics.limit_hit("pending_request_bytes");
            return Err(Status::resource_exhausted(format!(
                "the server holds {} bytes of partly received requests already (raise with --max-pending-request-bytes)",
                self.limit
            )));
        };
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

/// Gives back the budget of `consumed` bytes taken off the buffer.
fn release(held: &mut Option<OwnedSemaphorePermit>, remaining: usize) {
    if let Some(permit) = held.as_mut() {
        let extra = permit.num_permits().saturating_sub(remaining);
        drop(permit.split(extra));
        if remaining == 0 {
            *held = None;
        }
    }
}
pub const HEADER_BYTES: usize = 5;
const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// What a stream task sends: an encoded response frame, or the status that ends the stream.
/// Boxed: tokio allocates channel slots 32 at a time, and a `Status` is large.
pub type Outbound = Box<Result<Bytes, Status>>;

/// A frame buffer for a `len`-byte message: its uncompressed-length prefix written, room for the rest.
pub fn frame_with_capacity(len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_BYTES + len);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    frame
}

/// The messages of a request body; an undecodable frame ends the stream with its status.
pub fn decode_requests<M: Message + Default>(
    body: Body,
    budget: Arc<RequestBudget>,
) -> impl Stream<Item = Result<M, Status>> + Unpin + Send {
    struct Decoder {
        body: Body,
        buf: BytesMut,
        held: Option<OwnedSemaphorePermit>,
        /// When the message now arriving must be whole.
        deadline: Option<tokio::time::Instant>,
        done: bool,
    }
    let state = Decoder { body, buf: BytesMut::new(), held: None, deadline: None, done: false };
    Box::pin(futures::stream::unfold(state, move |mut d| {
        let budget = budget.clone();
        async move {
            if d.done {
                return None;
            }
            loop {
                match next_message(&mut d.buf, budget.max_request_bytes) {
                    Ok(Some(bytes)) => {
                        release(&mut d.held, d.buf.len());
                        d.deadline = (!d.buf.is_empty()).then(|| tokio::time::Instant::now() + budget.timeout);
                        let decoded =
                            M::decode(bytes).map_err(|e| Status::internal(format!("undecodable request: {e}")));
                        d.done = decoded.is_err();
                        return Some((decoded, d));
                    }
                    Ok(None) => {}
                    Err(status) => {
                        d.done = true;
                        budget.metrics.limit_hit("request_bytes");
                        return Some((Err(status), d));
                    }
                }
                let deadline = d.deadline;
                let frame = tokio::select! {
                    frame = d.body.frame() => frame,
                    () = sleep_until(deadline) => {
                        budget.metrics.limit_hit("request_timeout");
                        d.done = true;
                        let status = Status::deadline_exceeded(format!(
                            "a request message was not received whole within {:?} (raise with --request-timeout)",
                            budget.timeout
                        ));
                        return Some((Err(status), d));
                    }
                };
                match frame {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            if let Err(status) = budget.hold(&mut d.held, data.len()) {
                                d.done = true;
                                return Some((Err(status), d));
                            }
                            if d.buf.is_empty() {
                                d.deadline = Some(tokio::time::Instant::now() + budget.timeout);
                            }
                            d.buf.extend_from_slice(&data);
                        }
                    }
                    Some(Err(e)) => {
                        d.done = true;
                        return Some((Err(Status::cancelled(format!("request stream failed: {e}"))), d));
                    }
                    None if d.buf.is_empty() => return None,
                    None => {
                        d.done = true;
                        return Some((Err(Status::internal("request stream ended inside a message")), d));
                    }
                }
            }
        }
    }))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Takes one complete message off the front of `buf`, if it holds one.
fn next_message(buf: &mut BytesMut, max_request_bytes: usize) -> Result<Option<Bytes>, Status> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(Status::unimplemented("compressed requests are not supported"));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max_request_bytes {
        return Err(Status::resource_exhausted(format!(
            "request of {len} bytes exceeds {max_request_bytes} (raise with --max-request-bytes)"
        )));
    }
    if buf.len() < HEADER_BYTES + len {
        return Ok(None);
    }
    buf.advance(HEADER_BYTES);
    let message = buf.split_to(len).freeze();
    if buf.is_empty() {
        // Start afresh so a large request's buffer is not kept for the life of the stream.
        *buf = BytesMut::new();
    }
    Ok(Some(message))
}

/// A streaming gRPC response: each frame as the stream task sends it, then trailers with the
/// final status (OK when the task simply ends).
pub fn streaming_response(outbound: mpsc::Receiver<Outbound>) -> Response<Body> {
    let frames = futures::stream::unfold(Some(outbound), |state| async move {
        let mut outbound = state?;
        let (frame, next) = match outbound.recv().await.map(|boxed| *boxed) {
            Some(Ok(bytes)) => (Frame::data(bytes), Some(outbound)),
            Some(Err(status)) => (Frame::trailers(trailers(&status)), None),
            None => (Frame::trailers(trailers(&Status::ok(""))), None),
        };
        Some((Ok::<_, Infallible>(frame), next))
    });
    let mut response = Response::new(Body::new(StreamBody::new(frames.boxed())));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    response
}

/// A response that is only a status, as gRPC sends an immediate error.
pub fn status_response(status: Status) -> Response<Body> {
    status.into_http()
}

fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        // Only a message that cannot be a header value gets here; the code still goes out.
        map.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    map
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

    use super::*;

    fn budget() -> Arc<RequestBudget> {
        Arc::new(RequestBudget::new(&XdsLimits::default(), Arc::default()))
    }

    fn encode_frame(message: &impl Message) -> Vec<u8> {
        let mut frame = frame_with_capacity(message.encoded_len());
        message.encode_raw(&mut frame);
        frame
    }

    fn request(names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn messages_split_across_and_packed_into_body_chunks_are_decoded_in_order() {
        let mut bytes = encode_frame(&request(&["a"]));
        bytes.extend_from_slice(&encode_frame(&request(&["b", "c"])));
        let (first, rest) = bytes.split_at(3);
        let chunks: Vec<Result<Bytes, Infallible>> =
            vec![Ok(Bytes::copy_from_slice(first)), Ok(Bytes::copy_from_slice(rest))];
        let body = Body::from_stream(futures::stream::iter(chunks));
        let decoded: Vec<_> = decode_requests::<DeltaDiscoveryRequest>(body, budget()).collect().await;
        let names: Vec<Vec<String>> = decoded.into_iter().map(|r| r.unwrap().resource_names_subscribe).collect();
        assert_eq!(names, [vec!["a".to_owned()], vec!["b".to_owned(), "c".to_owned()]]);
    }

    #[tokio::test]
    async fn a_compressed_or_oversized_or_truncated_request_ends_the_stream_with_a_status() {
        let compressed = Body::from(vec![1u8, 0, 0, 0, 0]);
        let first = decode_requests::<DeltaDiscoveryRequest>(compressed, budget()).next().await.unwrap().unwrap_err();
        assert_eq!(first.code(), tonic::Code::Unimplemented);
        let oversized = Body::from(vec![0u8, 0xff, 0xff, 0xff, 0xff]);
        let first = decode_requests::<DeltaDiscoveryRequest>(oversized, budget()).next().await.unwrap().unwrap_err();
        assert_eq!(first.code(), tonic::Code::ResourceExhausted);
        let truncated = Body::from(vec![0u8, 0, 0, 0, 9, 1]);
        let mut stream = decode_requests::<DeltaDiscoveryRequest>(truncated, budget());
        assert_eq!(stream.next().await.unwrap().unwrap_err().code(), tonic::Code::Internal);
        assert!(stream.next().await.is_none());
    }

    fn partial_body(bytes: Vec<u8>) -> Body {
        // Sends a message's first bytes, then never the rest.
        let chunks = futures::stream::iter([Ok::<_, Infallible>(Bytes::from(bytes))]).chain(futures::stream::pending());
        Body::from_stream(chunks)
    }

    #[tokio::test]
    async fn partly_received_requests_share_one_bounded_budget() {
        let limits = XdsLimits { max_pending_request_bytes: 1000, max_request_bytes: 1000, ..XdsLimits::default() };
        let budget = Arc::new(RequestBudget::new(&limits, Arc::default()));
        let start = |len: usize| {
            let mut bytes = vec![0u8, 0, 0, 0x03, 0x84];
            bytes.resize(len, 7);
            decode_requests::<DeltaDiscoveryRequest>(partial_body(bytes), budget.clone())
        };
        let mut first = start(600);
        let waiting = tokio::time::timeout(Duration::from_millis(50), first.next()).await;
        assert!(waiting.is_err(), "the first half-sent message is held");
        let refused = start(600).next().await.unwrap().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
        assert!(refused.message().contains("--max-pending-request-bytes"), "{refused}");
        drop(first);
        let mut again = start(600);
        let waiting = tokio::time::timeout(Duration::from_millis(50), again.next()).await;
        assert!(waiting.is_err(), "the first stream's share came back when it ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_not_received_whole_in_time_ends_the_stream() {
        let budget = budget();
        let mut stream = decode_requests::<DeltaDiscoveryRequest>(partial_body(vec![0, 0, 0, 0, 9, 1]), budget.clone());
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
        assert!(stream.next().await.is_none());
        assert_eq!(budget.bytes.available_permits(), budget.limit, "its bytes were given back");
    }
}
