//! Timestamps as Kubernetes writes them: RFC 3339, whole seconds, UTC.

use std::time::SystemTime;

use k8s_openapi::jiff::Timestamp;

pub fn rfc3339(time: SystemTime) -> String {
    Timestamp::try_from(time)
        .and_then(|t| Timestamp::from_second(t.as_second()))
        .map_or_else(|_| String::new(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn whole_seconds_in_utc() {
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_900);
        assert_eq!(super::rfc3339(time), "2023-11-14T22:13:20Z");
    }
}
