//! What one client may cost: every input a client controls on the xDS port has a bound
//! here, a flag to change it, a `limit` label on `edgexds_limit_hits_total`, and a
//! gRPC status that says which flag to raise.

use std::time::Duration;

use tonic::Status;

use crate::model::limits::text_prefix;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdsLimits {
    /// Encoded size of a client's `Node` (id, cluster, metadata, ...).
    pub max_node_bytes: usize,
    /// A NACK's error message is kept and logged cut to this many bytes.
    pub max_nack_message_bytes: usize,
    /// Names one stream may subscribe to, per resource type.
    pub max_subscription_names: usize,
    /// Concurrent streams (RPCs) on one connection.
    pub max_streams_per_connection: u32,
    /// Open connections on the xDS port.
    pub max_connections: usize,
    /// Open connections from one IP address.
    pub max_connections_per_peer: usize,
    /// Time for a new connection to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// One request message, at most.
    pub max_request_bytes: usize,
    /// Bytes of partly received request messages, across all streams.
    pub max_pending_request_bytes: usize,
    /// Time for one request message to arrive whole once it has started.
    pub request_timeout: Duration,
    /// CSDS requests answered at once; more are refused.
    pub max_concurrent_csds: usize,
    /// One CSDS response, at most.
    pub max_csds_response_bytes: usize,
}

impl Default for XdsLimits {
    fn default() -> Self {
        Self {
            max_node_bytes: 16 << 10,
            max_nack_message_bytes: 1024,
            max_subscription_names: 10_000,
            max_streams_per_connection: 16,
            max_connections: 2048,
            max_connections_per_peer: 128,
            handshake_timeout: Duration::from_secs(10),
            max_request_bytes: 4 << 20,
            max_pending_request_bytes: 16 << 20,
            request_timeout: Duration::from_secs(30),
            max_concurrent_csds: 2,
            max_csds_response_bytes: 8 << 20,
        }
    }
}

/// The limits the protocol state of one stream applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_node_bytes: usize,
    pub max_nack_message_bytes: usize,
    pub max_subscription_names: usize,
    /// Resource bytes per response (a larger single resource goes alone). Not a flag: the
    /// send budget reserves [`super::MAX_RESPONSE_BYTES`] per response, so only tests set
    /// it, lower, to make every sync come in many parts.
    pub response_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        XdsLimits::default().stream()
    }
}

impl XdsLimits {
    pub fn stream(&self) -> StreamLimits {
        StreamLimits {
            max_node_bytes: self.max_node_bytes,
            max_nack_message_bytes: self.max_nack_message_bytes,
            max_subscription_names: self.max_subscription_names,
            response_bytes: super::MAX_RESPONSE_BYTES,
        }
    }
}

/// A request the stream refuses: the status the client gets, and the limit that
/// refused it (the metric label), if it was a limit and not a protocol error.
#[derive(Debug)]
pub struct Refusal {
    pub limit: Option<&'static str>,
    pub status: Status,
}

impl Refusal {
    /// `limit` is both the metric label and, with `_` as `-`, the flag's name after `max-`.
    pub fn limit(limit: &'static str, flag: &str, what: impl std::fmt::Display) -> Self {
        Self { limit: Some(limit), status: Status::resource_exhausted(format!("{what} (raise with --{flag})")) }
    }
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Self { limit: None, status }
    }
}

/// `text` cut to at most `max` bytes at a character boundary; says whether it was cut.
pub fn truncate(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_owned(), false);
    }
    (format!("{}... [{} bytes, cut]", text_prefix(text, max), text.len()), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_a_character_boundary_and_says_how_long_the_text_was() {
        assert_eq!(truncate("short", 10), ("short".to_owned(), false));
        let (cut, was_cut) = truncate("ééééé", 3);
        assert!(was_cut);
        assert_eq!(cut, "é... [10 bytes, cut]");
    }
}
