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
