//! What one client may cost on the xDS port, each bound defined once: [`Limit`] owns its
//! flag, environment variable, default, accepted range, `limit` label and refusal, and the
//! command line, the README's table, the metric and every refusal are derived from it.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use clap::{Arg, ArgMatches, Command};
use envoy_types::pb::envoy::config::core::v3::Node;
use prost::Message;
use tonic::{Code, Status};

/// How a limit's value is written and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    /// Held in milliseconds, written as `10s` or `500ms`.
    Duration,
}

/// One per-client bound on the xDS port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    NodeBytes,
    NackMessageBytes,
    SubscriptionNames,
    NameBytes,
    SubscriptionBytes,
    StreamsPerConnection,
    Connections,
    ConnectionsPerPeer,
    UnauthenticatedConnections,
    UnauthenticatedGrace,
    HandshakeTimeout,
    TokenReviewsPerPeer,
    RequestBytes,
    PendingRequestBytes,
    RequestTimeout,
    ConcurrentCsds,
    CsdsResponseBytes,
}

/// Everything about one limit, written once.
pub struct Spec {
    pub flag: &'static str,
    pub env: &'static str,
    pub label: &'static str,
    /// As the flag takes it; the default value is parsed from this text.
    pub default: &'static str,
    pub unit: Unit,
    /// Values the flag accepts, inclusive (milliseconds for durations).
    pub range: (u64, u64),
    /// The flag's help: what the limit bounds.
    pub help: &'static str,
    /// What a client gets past it, for the README's table.
    pub past: &'static str,
    /// The refusal's message; `{max}` is replaced by the limit's value.
    pub refusal: &'static str,
    pub code: Code,
}

const MAX: u64 = u32::MAX as u64;

impl Limit {
    pub const ALL: [Limit; 17] = [
        Limit::NodeBytes,
        Limit::NackMessageBytes,
        Limit::SubscriptionNames,
        Limit::NameBytes,
        Limit::SubscriptionBytes,
        Limit::StreamsPerConnection,
        Limit::Connections,
        Limit::ConnectionsPerPeer,
        Limit::UnauthenticatedConnections,
        Limit::UnauthenticatedGrace,
        Limit::HandshakeTimeout,
        Limit::TokenReviewsPerPeer,
        Limit::RequestBytes,
        Limit::PendingRequestBytes,
        Limit::RequestTimeout,
        Limit::ConcurrentCsds,
        Limit::CsdsResponseBytes,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn spec(self) -> &'static Spec {
        match self {
            Limit::NodeBytes => &Spec {
                flag: "max-node-bytes",
                env: "EDGEXDS_MAX_NODE_BYTES",
                label: "node_bytes",
                default: "16384",
                unit: Unit::Bytes,
                range: (1, MAX),
                help: "Largest Node (id, cluster, metadata, locality) a client may send, in bytes; Envoy's extension list is not kept and not counted",
                past: "stream ends `RESOURCE_EXHAUSTED`; measured without Envoy's extension list, which is not kept",
                refusal: "node id, cluster, metadata and locality exceed {max} bytes",
                code: Code::ResourceExhausted,
            },
            Limit::NackMessageBytes => &Spec {
                flag: "max-nack-message-bytes",
                env: "EDGEXDS_MAX_NACK_MESSAGE_BYTES",
                label: "nack_message_bytes",
                default: "1024",
                unit: Unit::Bytes,
                range: (1, MAX),
                help: "A NACK's error message is kept and logged cut to this many bytes",
                past: "the NACK message is cut when kept (`/debug/proxies`, CSDS) and logged",
                refusal: "a NACK message longer than {max} bytes is cut",
                code: Code::Ok,
            },
            Limit::SubscriptionNames => &Spec {
                flag: "max-subscription-names",
                env: "EDGEXDS_MAX_SUBSCRIPTION_NAMES",
                label: "subscription_names",
                default: "10000",
                unit: Unit::Count,
                range: (1, MAX),
                help: "Names one stream may subscribe to per resource type beyond as many as the served snapshot holds of that type",
                past: "per type and stream, counted beyond as many names as the snapshot holds of the type (so 12,000 clusters are never refused); stream ends `RESOURCE_EXHAUSTED`",
                refusal: "a subscription of more than {max} names beyond those the snapshot holds",
                code: Code::ResourceExhausted,
            },
            Limit::NameBytes => &Spec {
                flag: "max-name-bytes",
                env: "EDGEXDS_MAX_NAME_BYTES",
                label: "name_bytes",
                default: "512",
                unit: Unit::Bytes,
                range: (64, 65_536),
                help: "Longest resource name a client may subscribe to, list or unsubscribe, in bytes (the longest name edgexds serves is under 400)",
                past: "any one name in a request; stream ends `RESOURCE_EXHAUSTED`",
                refusal: "a resource name longer than {max} bytes",
                code: Code::ResourceExhausted,
            },
            Limit::SubscriptionBytes => &Spec {
                flag: "max-subscription-bytes",
                env: "EDGEXDS_MAX_SUBSCRIPTION_BYTES",
                label: "subscription_bytes",
                default: "1048576",
                unit: Unit::Bytes,
                range: (1, MAX),
                help: "Bytes of names one stream may hold subscribed per resource type beyond the bytes of every name the served snapshot holds of that type",
                past: "per type and stream, counted beyond the bytes of every name the snapshot holds of the type; stream ends `RESOURCE_EXHAUSTED`",
                refusal: "a subscription of more than {max} bytes of names beyond those the snapshot holds",
                code: Code::ResourceExhausted,
            },
            Limit::StreamsPerConnection => &Spec {
                flag: "max-streams-per-connection",
                env: "EDGEXDS_MAX_STREAMS_PER_CONNECTION",
                label: "streams_per_connection",
                default: "16",
                unit: Unit::Count,
                range: (1, 1024),
                help: "Concurrent streams on one xDS connection",
                past: "the extra stream gets `RESOURCE_EXHAUSTED`; HTTP/2 refuses past twice the limit",
                refusal: "more than {max} concurrent streams on one connection",
                code: Code::ResourceExhausted,
            },
            Limit::Connections => &Spec {
                flag: "max-connections",
                env: "EDGEXDS_MAX_CONNECTIONS",
                label: "connections",
                default: "2048",
                unit: Unit::Count,
                range: (1, MAX),
                help: "Open xDS connections that have had a stream let in by authentication (with authentication off: any stream), in total",
                past: "the stream that would have let the connection in gets `RESOURCE_EXHAUSTED`",
                refusal: "edgexds serves {max} authenticated connections already",
                code: Code::ResourceExhausted,
            },
            Limit::ConnectionsPerPeer => &Spec {
                flag: "max-connections-per-peer",
                env: "EDGEXDS_MAX_CONNECTIONS_PER_PEER",
                label: "connections_per_peer",
                default: "128",
                unit: Unit::Count,
                range: (1, MAX),
                help: "Open xDS connections from one IP address, authenticated or not",
                past: "the connection's requests get `RESOURCE_EXHAUSTED` (beyond 64 such connections at once, it is closed)",
                refusal: "{max} connections from this address already",
                code: Code::ResourceExhausted,
            },
            Limit::UnauthenticatedConnections => &Spec {
                flag: "max-unauthenticated-connections",
                env: "EDGEXDS_MAX_UNAUTHENTICATED_CONNECTIONS",
                label: "unauthenticated_connections",
                default: "256",
                unit: Unit::Count,
                range: (1, MAX),
                help: "Open xDS connections that have not yet had a stream let in by authentication, in a pool apart from --max-connections",
                past: "a new connection takes the place of the oldest such connection of the address that holds the most; if that address is its own, it is refused as past `--max-connections-per-peer` is",
                refusal: "{max} connections without an authenticated stream already, most of them from this address",
                code: Code::ResourceExhausted,
            },
            Limit::UnauthenticatedGrace => &Spec {
                flag: "unauthenticated-grace",
                env: "EDGEXDS_UNAUTHENTICATED_GRACE",
                label: "unauthenticated_grace",
                default: "10s",
                unit: Unit::Duration,
                range: (100, 3_600_000),
                help: "Time an xDS connection may stay open without an authenticated stream (with authentication off: without any stream), from when it opens or its last one ends, e.g. 10s",
                past: "the connection is closed; gRPC health calls and refused streams do not keep it open",
                refusal: "no authenticated stream for {max}",
                code: Code::Unauthenticated,
            },
            Limit::TokenReviewsPerPeer => &Spec {
                flag: "max-token-reviews-per-peer",
                env: "EDGEXDS_MAX_TOKEN_REVIEWS_PER_PEER",
                label: "token_reviews_per_peer",
                default: "5",
                unit: Unit::Count,
                range: (1, 10_000),
                help: "TokenReviews one client IP address may cause a second, and at once as a burst; tokens verified before, and ones refused without a review (malformed, expired, for another audience or issuer, badly signed), cost none",
                past: "the request gets `RESOURCE_EXHAUSTED`",
                refusal: "this address has caused {max} token reviews in the last second; retry shortly",
                code: Code::ResourceExhausted,
            },
            Limit::HandshakeTimeout => &Spec {
                flag: "handshake-timeout",
                env: "EDGEXDS_HANDSHAKE_TIMEOUT",
                label: "handshake_timeout",
                default: "10s",
                unit: Unit::Duration,
                range: (1, 3_600_000),
                help: "Time a new xDS connection has to finish its TLS handshake and send its first request, e.g. 10s",
                past: "a connection that sent no request by then (no HTTP/2 preface) is closed",
                refusal: "no request within {max}",
                code: Code::DeadlineExceeded,
            },
            Limit::RequestBytes => &Spec {
                flag: "max-request-bytes",
                env: "EDGEXDS_MAX_REQUEST_BYTES",
                label: "request_bytes",
                default: "4194304",
                unit: Unit::Bytes,
                range: (1, MAX),
                help: "Largest request message, in bytes, on any service of the port",
                past: "one request message, on any service of the port; its stream ends `RESOURCE_EXHAUSTED`",
                refusal: "a request message larger than {max} bytes",
                code: Code::ResourceExhausted,
            },
            Limit::PendingRequestBytes => &Spec {
                flag: "max-pending-request-bytes",
                env: "EDGEXDS_MAX_PENDING_REQUEST_BYTES",
                label: "pending_request_bytes",
                default: "16777216",
                unit: Unit::Bytes,
                range: (1, MAX),
                help: "Bytes of partly received request messages held across all streams of every service",
                past: "partly received requests across all streams of every service; the stream that would exceed it ends `RESOURCE_EXHAUSTED`",
                refusal: "the server holds {max} bytes of partly received requests already",
                code: Code::ResourceExhausted,
            },
            Limit::RequestTimeout => &Spec {
                flag: "request-timeout",
                env: "EDGEXDS_REQUEST_TIMEOUT",
                label: "request_timeout",
                default: "30s",
                unit: Unit::Duration,
                range: (1, 3_600_000),
                help: "Time for a request message to arrive whole once it has started, e.g. 30s",
                past: "a request message started but not finished by then ends its stream `DEADLINE_EXCEEDED`",
                refusal: "a request message was not received whole within {max}",
                code: Code::DeadlineExceeded,
            },
            Limit::ConcurrentCsds => &Spec {
                flag: "max-concurrent-csds",
                env: "EDGEXDS_MAX_CONCURRENT_CSDS",
                label: "concurrent_csds",
                default: "2",
                unit: Unit::Count,
                range: (1, 1024),
                help: "CSDS requests answered at once",
                past: "more CSDS requests at once get `RESOURCE_EXHAUSTED`",
                refusal: "more than {max} CSDS requests at once; retry shortly",
                code: Code::ResourceExhausted,
            },
            Limit::CsdsResponseBytes => &Spec {
                flag: "max-csds-response-bytes",
                env: "EDGEXDS_MAX_CSDS_RESPONSE_BYTES",
                label: "csds_response_bytes",
                default: "8388608",
                unit: Unit::Bytes,
                range: (1, MAX),
                help: "Largest CSDS response, in bytes",
                past: "a larger answer is refused; narrow it with `node_matchers` or `exclude_resource_contents`",
                refusal: "the answer would exceed {max} bytes: narrow it with node_matchers or exclude_resource_contents",
                code: Code::ResourceExhausted,
            },
        }
    }

    pub const fn label(self) -> &'static str {
        self.spec().label
    }

    /// A value of this limit as its flag takes it: `10s` for durations, digits otherwise.
    pub fn format(self, value: u64) -> String {
        match self.spec().unit {
            Unit::Duration => humantime::format_duration(Duration::from_millis(value)).to_string(),
            Unit::Count | Unit::Bytes => value.to_string(),
        }
    }

    /// Reads a value as the flag takes it, within the limit's range.
    pub fn parse(self, text: &str) -> Result<u64, String> {
        let spec = self.spec();
        let value = match spec.unit {
            Unit::Duration => humantime::parse_duration(text)
                .map_err(|e| format!("{e} (write e.g. 10s or 500ms)"))?
                .as_millis()
                .try_into()
                .map_err(|_| "too long".to_owned())?,
            Unit::Count | Unit::Bytes => {
                text.trim().parse::<u64>().map_err(|e| format!("{e} (write a whole number)"))?
            }
        };
        let (min, max) = spec.range;
        if !(min..=max).contains(&value) {
            return Err(format!("must be between {} and {}", self.format(min), self.format(max)));
        }
        Ok(value)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The README's table of limits, as `edgexds limits` prints it: one row per limit, from
/// its one definition.
pub fn markdown_table() -> String {
    let mut table =
        String::from("| flag | variable | default | `limit` label | what happens past it |\n|---|---|---|---|---|\n");
    for limit in Limit::ALL {
        let spec = limit.spec();
        table.push_str(&format!(
            "| `--{}` | `{}` | {} | `{}` | {} |\n",
            spec.flag, spec.env, spec.default, spec.label, spec.past
        ));
    }
    table
}

/// Every limit's value: what one client may cost on the xDS port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits([u64; Limit::COUNT]);

static DEFAULTS: LazyLock<Limits> = LazyLock::new(|| {
    Limits(Limit::ALL.map(|limit| {
        limit.parse(limit.spec().default).unwrap_or_else(|e| panic!("the default of --{}: {e}", limit.spec().flag))
    }))
});

impl Default for Limits {
    fn default() -> Self {
        *DEFAULTS
    }
}

impl Limits {
    pub fn get(&self, limit: Limit) -> u64 {
        self.0[limit as usize]
    }

    /// The value as a size or count in memory.
    pub fn usize(&self, limit: Limit) -> usize {
        usize::try_from(self.get(limit)).unwrap_or(usize::MAX)
    }

    pub fn duration(&self, limit: Limit) -> Duration {
        Duration::from_millis(self.get(limit))
    }

    /// These limits with `limit` set to `value` (not range-checked: tests set tiny ones).
    pub fn with(mut self, limit: Limit, value: u64) -> Self {
        self.0[limit as usize] = value;
        self
    }

    /// The status a client gets past `limit`: the limit's message with its value, what the
    /// client sent (`detail`, if any), and the flag to raise.
    pub fn refusal(&self, limit: Limit, detail: impl fmt::Display) -> Refusal {
        let spec = limit.spec();
        let what = spec.refusal.replace("{max}", &limit.format(self.get(limit)));
        let detail = detail.to_string();
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        let status = Status::new(spec.code, format!("{what}{detail} (raise with --{})", spec.flag));
        Refusal { limit: Some(limit), status }
    }
}

/// The command line takes every limit from [`Limit::ALL`]: one flag and one variable each.
impl clap::Args for Limits {
    fn augment_args(command: Command) -> Command {
        Limit::ALL.into_iter().fold(command, |command, limit| {
            let spec = limit.spec();
            command.arg(
                Arg::new(spec.label)
                    .long(spec.flag)
                    .env(spec.env)
                    .help(spec.help)
                    .default_value(spec.default)
                    .value_parser(move |text: &str| limit.parse(text)),
            )
        })
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for Limits {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut limits = Limits::default();
        limits.update_from_arg_matches(matches)?;
        Ok(limits)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for limit in Limit::ALL {
            if let Some(value) = matches.get_one::<u64>(limit.label()) {
                self.0[limit as usize] = *value;
            }
        }
        Ok(())
    }
}

/// A request refused: the status the client gets, and the limit that refused it (the
/// metric label), if it was a limit and not a protocol error.
#[derive(Debug)]
pub struct Refusal {
    pub limit: Option<Limit>,
    pub status: Status,
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
    (format!("{}... [{} bytes, cut]", crate::model::limits::text_prefix(text, max), text.len()), true)
}

/// The part of a client's `Node` worth keeping, if within [`Limit::NodeBytes`]. Envoy lists
/// every extension it was built with (about 60 kB); nothing here reads that list, so it is
/// dropped before the size is checked, and the rest (id, cluster, metadata, locality, user
/// agent) is what the limit bounds. Every service that keeps a node (xDS and HDS streams)
/// keeps it through here.
pub fn kept_node(mut node: Node, limits: &Limits) -> Result<Node, Refusal> {
    node.extensions = Vec::new();
    let size = node.encoded_len();
    if size as u64 > limits.get(Limit::NodeBytes) {
        return Err(limits.refusal(Limit::NodeBytes, format!("{size} bytes")));
    }
    Ok(node)
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

    #[test]
    fn every_limit_has_its_own_flag_variable_and_label_and_a_default_within_its_range() {
        let mut seen = std::collections::BTreeSet::new();
        for limit in Limit::ALL {
            let spec = limit.spec();
            assert!(seen.insert(spec.flag) && seen.insert(spec.env) && seen.insert(spec.label), "{limit:?}");
            assert_eq!(spec.env, format!("EDGEXDS_{}", spec.flag.to_uppercase().replace('-', "_")));
            assert_eq!(limit.parse(&limit.format(Limits::default().get(limit))), Ok(Limits::default().get(limit)));
            assert!(spec.refusal.contains("{max}"), "{limit:?}");
        }
    }

    #[test]
    fn the_readme_limits_table_is_the_one_the_limits_declare() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let expected = markdown_table();
        assert!(
            readme.contains(&expected),
            "the README's Limits table differs from what `Limit` declares; replace it with \
             `cargo run -- limits`:\n{expected}"
        );
    }

    #[test]
    fn a_refusal_names_the_value_what_was_sent_and_the_flag_to_raise() {
        let refusal = Limits::default().refusal(Limit::RequestTimeout, "");
        assert_eq!(refusal.status.code(), Code::DeadlineExceeded);
        assert_eq!(
            refusal.status.message(),
            "a request message was not received whole within 30s (raise with --request-timeout)"
        );
        let refusal = Limits::default().with(Limit::NodeBytes, 300).refusal(Limit::NodeBytes, "900 bytes");
        assert_eq!(refusal.limit, Some(Limit::NodeBytes));
        assert_eq!(
            refusal.status.message(),
            "node id, cluster, metadata and locality exceed 300 bytes: 900 bytes (raise with --max-node-bytes)"
        );
    }
}
