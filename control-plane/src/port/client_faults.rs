//! One status rule for every service on the port: a message that does not decode (bad
//! protobuf, a string that is not UTF-8) is the client's fault, `INVALID_ARGUMENT`. tonic's
//! generated services (CSDS, HDS, gRPC health) answer it `INTERNAL`, which tells a client
//! the server broke; this rewrites that one case, in a trailers-only answer or in trailers.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response};
use http_body_util::BodyExt;

/// How tonic's codec words a message that did not decode (prost's `DecodeError`), as it
/// stands in `grpc-message`, spaces percent-encoded or not.
const UNDECODABLE: [&str; 2] = ["failed to decode Protobuf message", "failed%20to%20decode%20Protobuf%20message"];

/// `response`, with an `INTERNAL` status for an undecodable message made `INVALID_ARGUMENT`.
pub async fn client_faults(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    undecodable_is_invalid_argument(&mut parts.headers);
    let body = body.map_frame(|frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            undecodable_is_invalid_argument(&mut trailers);
            http_body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    });
    Response::from_parts(parts, Body::new(body))
}

fn undecodable_is_invalid_argument(headers: &mut HeaderMap) {
    let internal = headers.get("grpc-status").is_some_and(|s| s == "13");
    let undecodable = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| UNDECODABLE.iter().any(|prefix| m.starts_with(prefix)));
    if internal && undecodable {
        headers.insert("grpc-status", HeaderValue::from_static("3"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_internal_status_for_an_undecodable_message_becomes_invalid_argument() {
        let mut undecodable = HeaderMap::new();
        undecodable.insert("grpc-status", HeaderValue::from_static("13"));
        undecodable.insert("grpc-message", HeaderValue::from_static("failed%20to%20decode%20Protobuf%20message: x"));
        undecodable_is_invalid_argument(&mut undecodable);
        assert_eq!(undecodable["grpc-status"], "3");
        let mut other = HeaderMap::new();
        other.insert("grpc-status", HeaderValue::from_static("13"));
        other.insert("grpc-message", HeaderValue::from_static("something%20broke"));
        undecodable_is_invalid_argument(&mut other);
        assert_eq!(other["grpc-status"], "13");
    }
}
