//! The bounds of a HealthProbe, defined once: the CRD's schema is generated from these,
//! and validation of every source (manifests included) checks the same numbers.

/// `intervalMs` and `timeoutMs`, in milliseconds (`timeoutMs` may go down to 1).
pub const INTERVAL_MS: (i64, i64) = (100, 3_600_000);
pub const TIMEOUT_MS: (i64, i64) = (1, INTERVAL_MS.1);
/// `failureThreshold` and `successThreshold`.
pub const THRESHOLD: (i64, i64) = (1, 100);
/// Overrides per probe.
pub const MAX_OVERRIDES: usize = 32;
/// Names, zones, node names and globs: at most a DNS subdomain's length.
pub const MAX_NAME_BYTES: usize = 253;
/// HTTP paths and hosts.
pub const MAX_PATH_BYTES: usize = 1024;

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn text_prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[..end]
}

/// An HTTP header value as Envoy's validation takes one (non-strict): no NUL, CR or LF. A
/// probe's host and path go into requests Envoy makes, so a value with a line break would
/// make every sidecar reject the cluster it is in. The CRD's schema says the same with
/// [`HEADER_VALUE_PATTERN`] and [`PATH_PATTERN`].
pub fn is_header_value(value: &str) -> bool {
    !value.contains(['\0', '\r', '\n'])
}

/// [`is_header_value`] as the CRD's schema pattern (RE2, as the API server reads it).
pub const HEADER_VALUE_PATTERN: &str = "^[^\\x00\\r\\n]*$";
/// An HTTP probe's path: it starts with `/`, and is a header value.
pub const PATH_PATTERN: &str = "^/[^\\x00\\r\\n]*$";
