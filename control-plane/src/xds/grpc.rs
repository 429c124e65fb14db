//! gRPC framing for the xDS streams, straight on hyper.
//!
//! tonic encodes a stream's responses into one buffer that keeps the largest
//! response ever sent alive for the life of the stream (tens of kB per Envoy,
//! at rest). Here each response is encoded once into its own frame, which is
//! freed as soon as HTTP/2 has written it. Request bodies arrive through the port's
//! request layer, which has already bounded each message's size and arrival time.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, header};
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

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

/// The messages of a request body; an undecodable frame ends the stream with its status,
/// and so does a refusal of the request layer.
pub fn decode_requests<M: Message + Default>(body: Body) -> impl Stream<Item = Result<M, Status>> + Unpin + Send {
    struct Decoder {
        body: Body,
        buf: BytesMut,
        done: bool,
    }
    let state = Decoder { body, buf: BytesMut::new(), done: false };
    Box::pin(futures::stream::unfold(state, |mut d| async move {
        if d.done {
            return None;
        }
        loop {
            match next_message(&mut d.buf) {
                Ok(Some(bytes)) => {
                    let decoded = M::decode(bytes).map_err(undecodable);
                    d.done = decoded.is_err();
                    return Some((decoded, d));
                }
                Ok(None) => {}
                Err(status) => {
                    d.done = true;
                    return Some((Err(status), d));
                }
            }
            match d.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        d.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    d.done = true;
                    return Some((Err(Status::from_error(Box::new(e))), d));
                }
                None if d.buf.is_empty() => return None,
                None => {
                    d.done = true;
                    return Some((Err(Status::invalid_argument("request stream ended inside a message")), d));
                }
            }
        }
    }))
}

/// A message that is not the request it claims to be: the client's fault, never ours.
fn undecodable(error: prost::DecodeError) -> Status {
    Status::invalid_argument(format!("undecodable request: {error}"))
}

/// Takes one complete message off the front of `buf`, if it holds one.
fn next_message(buf: &mut BytesMut) -> Result<Option<Bytes>, Status> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(Status::unimplemented("compressed requests are not supported"));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
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
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

    use super::*;

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
        let decoded: Vec<_> = decode_requests::<DeltaDiscoveryRequest>(body).collect().await;
        let names: Vec<Vec<String>> = decoded.into_iter().map(|r| r.unwrap().resource_names_subscribe).collect();
        assert_eq!(names, [vec!["a".to_owned()], vec!["b".to_owned(), "c".to_owned()]]);
    }

    #[tokio::test]
    async fn a_compressed_undecodable_or_truncated_request_ends_the_stream_with_a_status() {
        let compressed = Body::from(vec![1u8, 0, 0, 0, 0]);
        let first = decode_requests::<DeltaDiscoveryRequest>(compressed).next().await.unwrap().unwrap_err();
        assert_eq!(first.code(), tonic::Code::Unimplemented);
        let garbage = Body::from(vec![0u8, 0, 0, 0, 2, 0xff, 0xff]);
        let first = decode_requests::<DeltaDiscoveryRequest>(garbage).next().await.unwrap().unwrap_err();
        assert_eq!(first.code(), tonic::Code::InvalidArgument, "{first}");
        let truncated = Body::from(vec![0u8, 0, 0, 0, 9, 1]);
        let mut stream = decode_requests::<DeltaDiscoveryRequest>(truncated);
        assert_eq!(stream.next().await.unwrap().unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(stream.next().await.is_none());
    }
}
