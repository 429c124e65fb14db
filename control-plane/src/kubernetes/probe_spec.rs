//! Validates a HealthProbe's spec, as the CRD's schema and CEL rules define it, into
//! the model's plain [`ValidProbe`]: every source (the API and manifests alike) goes
//! through here, so the model never sees a Kubernetes type.

use std::net::IpAddr;

use globset::Glob;
use ipnet::IpNet;

use crate::kubernetes::crd::{EndpointMatch, HealthProbeSpec, ProbeOverride};
use crate::model::limits::{
    INTERVAL_MS, MAX_NAME_BYTES, MAX_OVERRIDES, MAX_PATH_BYTES, THRESHOLD, TIMEOUT_MS, is_header_value,
};
use crate::model::{
    CheckKind, DEFAULT_FAILURE_THRESHOLD, DEFAULT_INTERVAL_MS, DEFAULT_SUCCESS_THRESHOLD, DEFAULT_TIMEOUT_MS,
    FieldError, ObjectKey, Override, ProbePolicy, ValidProbe,
};

fn invalid(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

/// The probe the spec describes, or the first field that breaks a rule.
pub fn validate(key: &ObjectKey, spec: &HealthProbeSpec) -> Result<ValidProbe, FieldError> {
    if spec.target_ref.kind != "Service" {
        return Err(invalid("spec.targetRef.kind", format!("must be Service, got {:?}", spec.target_ref.kind)));
    }
    if spec.target_ref.name.is_empty() {
        return Err(invalid("spec.targetRef.name", "must not be empty"));
    }
    check_len("spec.targetRef.name", Some(&spec.target_ref.name), MAX_NAME_BYTES)?;
    if spec.overrides.len() > MAX_OVERRIDES {
        return Err(invalid(
            "spec.overrides",
            format!("{} overrides: must have at most {MAX_OVERRIDES} items", spec.overrides.len()),
        ));
    }
    let port = spec
        .port
        .map(|port| {
            u16::try_from(port)
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| invalid("spec.port", format!("{port} is not a port number (1..=65535)")))
        })
        .transpose()?;
    let base = ProbePolicy {
        interval_ms: in_range("spec.intervalMs", spec.interval_ms, INTERVAL_MS, DEFAULT_INTERVAL_MS)?,
        timeout_ms: in_range("spec.timeoutMs", spec.timeout_ms, TIMEOUT_MS, DEFAULT_TIMEOUT_MS)?,
        failure_threshold: in_range(
            "spec.failureThreshold",
            spec.failure_threshold,
            THRESHOLD,
            DEFAULT_FAILURE_THRESHOLD,
        )?,
        success_threshold: in_range(
            "spec.successThreshold",
            spec.success_threshold,
            THRESHOLD,
            DEFAULT_SUCCESS_THRESHOLD,
        )?,
    };
    check_timeout("spec", &base)?;
    let overrides = spec
        .overrides
        .iter()
        .enumerate()
        .map(|(index, o)| validate_override(&format!("spec.overrides[{index}]"), o, &base))
        .collect::<Result<_, _>>()?;
    Ok(ValidProbe {
        key: key.clone(),
        service: spec.target_ref.name.clone(),
        port,
        check: check_kind(spec)?,
        base,
        overrides,
    })
}

fn check_kind(spec: &HealthProbeSpec) -> Result<CheckKind, FieldError> {
    let set: Vec<&str> =
        [spec.http.as_ref().map(|_| "http"), spec.tcp.as_ref().map(|_| "tcp"), spec.grpc.as_ref().map(|_| "grpc")]
            .into_iter()
            .flatten()
            .collect();
    if set.len() > 1 {
        return Err(invalid("spec", format!("exactly one of http, tcp, grpc may be set, found {}", set.join(", "))));
    }
    if let Some(http) = &spec.http {
        check_len("spec.http.path", Some(&http.path), MAX_PATH_BYTES)?;
        check_len("spec.http.host", http.host.as_ref(), MAX_PATH_BYTES)?;
        if !http.path.starts_with('/') {
            return Err(invalid("spec.http.path", format!("must start with '/', got {:?}", http.path)));
        }
        for (field, value) in [("spec.http.path", Some(&http.path)), ("spec.http.host", http.host.as_ref())] {
            if value.is_some_and(|v| !is_header_value(v)) {
                return Err(invalid(field, "must not contain NUL, CR or LF: it is sent in an HTTP request header"));
            }
        }
        return Ok(CheckKind::Http { path: http.path.clone(), host: http.host.clone().filter(|h| !h.is_empty()) });
    }
    if spec.tcp.is_some() {
        return Ok(CheckKind::Tcp);
    }
    if let Some(grpc) = &spec.grpc {
        check_len("spec.grpc.serviceName", grpc.service_name.as_ref(), MAX_NAME_BYTES)?;
        return Ok(CheckKind::Grpc { service_name: grpc.service_name.clone().filter(|s| !s.is_empty()) });
    }
    Ok(CheckKind::Http { path: crate::kubernetes::crd::default_http_path(), host: None })
}

fn in_range(field: &str, value: Option<i64>, (min, max): (i64, i64), default: u32) -> Result<u32, FieldError> {
    match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => u32::try_from(v).map_err(|_| invalid(field, "out of range")),
        Some(v) => Err(invalid(field, format!("{v} is out of range {min}..={max}"))),
    }
}

fn check_timeout(path: &str, policy: &ProbePolicy) -> Result<(), FieldError> {
    if policy.timeout_ms > policy.interval_ms {
        return Err(invalid(
            path,
            format!("timeoutMs ({}) must not exceed intervalMs ({})", policy.timeout_ms, policy.interval_ms),
        ));
    }
    Ok(())
}

fn validate_override(path: &str, o: &ProbeOverride, base: &ProbePolicy) -> Result<Override, FieldError> {
    let field = |name: &str| format!("{path}.{name}");
    let inherit = |value: Option<i64>, fallback: u32| value.or(Some(i64::from(fallback)));
    let policy = ProbePolicy {
        interval_ms: in_range(&field("intervalMs"), inherit(o.interval_ms, base.interval_ms), INTERVAL_MS, 0)?,
        timeout_ms: in_range(&field("timeoutMs"), inherit(o.timeout_ms, base.timeout_ms), TIMEOUT_MS, 0)?,
        failure_threshold: in_range(
            &field("failureThreshold"),
            inherit(o.failure_threshold, base.failure_threshold),
            THRESHOLD,
            0,
        )?,
        success_threshold: in_range(
            &field("successThreshold"),
            inherit(o.success_threshold, base.success_threshold),
            THRESHOLD,
            0,
        )?,
    };
    check_timeout(path, &policy)?;
    let EndpointMatch { zone, node_name, pod_name, address } = &o.matches;
    for (name, value) in [("zone", zone), ("nodeName", node_name), ("podName", pod_name), ("address", address)] {
        check_len(&field(&format!("match.{name}")), value.as_ref(), MAX_NAME_BYTES)?;
    }
    let pod_name = pod_name
        .as_deref()
        .map(|glob| {
            Glob::new(glob)
                .map(|g| (glob.to_owned(), g.compile_matcher()))
                .map_err(|e| invalid(field("match.podName"), format!("invalid glob {glob:?}: {e}")))
        })
        .transpose()?;
    let address = address.as_deref().map(|a| parse_net(a, &field("match.address"))).transpose()?;
    Ok(Override { zone: zone.clone(), node_name: node_name.clone(), pod_name, address, policy })
}

/// The API server's maxLength, in bytes (every allowed character is ASCII).
fn check_len(field: &str, value: Option<&String>, max: usize) -> Result<(), FieldError> {
    match value {
        Some(v) if v.len() > max => Err(invalid(field, format!("{} bytes: may be at most {max}", v.len()))),
        _ => Ok(()),
    }
}

fn parse_net(text: &str, field: &str) -> Result<IpNet, FieldError> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| invalid(field, format!("{text:?} is neither an IP address nor a CIDR range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::crd::{GrpcProbe, HttpProbe, TargetRef, TcpProbe};
    use crate::model::EndpointFacts;

    fn spec() -> HealthProbeSpec {
        HealthProbeSpec { target_ref: TargetRef { kind: "Service".into(), name: "web".into() }, ..Default::default() }
    }

    fn key() -> ObjectKey {
        ObjectKey::new("shop", "web")
    }

    fn facts(address: &str, pod: Option<&'static str>) -> EndpointFacts<'static> {
        EndpointFacts { address: address.parse().unwrap(), zone: Some("a"), node_name: Some("n1"), pod_name: pod }
    }

    #[test]
    fn defaults_apply_when_fields_are_unset() {
        let probe = validate(&key(), &spec()).unwrap();
        assert_eq!(
            probe.base,
            ProbePolicy { interval_ms: 5000, timeout_ms: 1000, failure_threshold: 3, success_threshold: 1 }
        );
        assert_eq!(probe.check, CheckKind::Http { path: "/healthz".into(), host: None });
    }

    #[test]
    fn interval_out_of_range_names_field_and_bounds() {
        let err = validate(&key(), &HealthProbeSpec { interval_ms: Some(50), ..spec() }).unwrap_err();
        assert_eq!(err.to_string(), "spec.intervalMs: 50 is out of range 100..=3600000");
    }

    #[test]
    fn timeout_longer_than_interval_is_rejected() {
        let err =
            validate(&key(), &HealthProbeSpec { interval_ms: Some(500), timeout_ms: Some(600), ..spec() }).unwrap_err();
        assert_eq!(err.to_string(), "spec: timeoutMs (600) must not exceed intervalMs (500)");
    }

    #[test]
    fn two_probe_kinds_are_rejected() {
        let err =
            validate(&key(), &HealthProbeSpec { tcp: Some(TcpProbe {}), grpc: Some(GrpcProbe::default()), ..spec() })
                .unwrap_err();
        assert_eq!(err.to_string(), "spec: exactly one of http, tcp, grpc may be set, found tcp, grpc");
    }

    #[test]
    fn threshold_and_kind_errors_are_precise() {
        let err = validate(&key(), &HealthProbeSpec { failure_threshold: Some(0), ..spec() }).unwrap_err();
        assert_eq!(err.field, "spec.failureThreshold");
        let mut bad_kind = spec();
        bad_kind.target_ref.kind = "Deployment".into();
        assert_eq!(
            validate(&key(), &bad_kind).unwrap_err().to_string(),
            "spec.targetRef.kind: must be Service, got \"Deployment\""
        );
        let bad_path = HealthProbeSpec { http: Some(HttpProbe { path: "healthz".into(), host: None }), ..spec() };
        assert_eq!(validate(&key(), &bad_path).unwrap_err().field, "spec.http.path");
        for (path, host, field) in
            [("/ok\r\nX: y", None, "spec.http.path"), ("/ok", Some("web\nX: y"), "spec.http.host")]
        {
            let broken =
                HealthProbeSpec { http: Some(HttpProbe { path: path.into(), host: host.map(Into::into) }), ..spec() };
            let error = validate(&key(), &broken).unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.to_string().contains("must not contain NUL, CR or LF"), "{error}");
        }
    }

    #[test]
    fn first_matching_override_wins_and_inherits_unset_fields() {
        let probe = validate(
            &key(),
            &HealthProbeSpec {
                overrides: vec![
                    ProbeOverride {
                        matches: EndpointMatch { pod_name: Some("web-canary-*".into()), ..Default::default() },
                        interval_ms: Some(500),
                        timeout_ms: Some(200),
                        ..Default::default()
                    },
                    ProbeOverride {
                        matches: EndpointMatch { address: Some("10.0.0.0/24".into()), ..Default::default() },
                        failure_threshold: Some(7),
                        ..Default::default()
                    },
                ],
                ..spec()
            },
        )
        .unwrap();
        let canary = probe.policy_for(&facts("10.0.0.5", Some("web-canary-1")));
        assert_eq!((canary.interval_ms, canary.timeout_ms, canary.failure_threshold), (500, 200, 3));
        let in_range = probe.policy_for(&facts("10.0.0.6", Some("web-1")));
        assert_eq!((in_range.interval_ms, in_range.failure_threshold), (5000, 7));
        assert_eq!(probe.policy_for(&facts("10.0.1.6", None)), probe.base);
    }

    #[test]
    fn override_match_on_zone_node_and_single_address() {
        let probe = validate(
            &key(),
            &HealthProbeSpec {
                overrides: vec![ProbeOverride {
                    matches: EndpointMatch {
                        zone: Some("a".into()),
                        node_name: Some("n1".into()),
                        address: Some("10.0.0.5".into()),
                        ..Default::default()
                    },
                    success_threshold: Some(2),
                    ..Default::default()
                }],
                ..spec()
            },
        )
        .unwrap();
        assert_eq!(probe.policy_for(&facts("10.0.0.5", None)).success_threshold, 2);
        assert_eq!(probe.policy_for(&facts("10.0.0.6", None)).success_threshold, 1);
    }

    #[test]
    fn override_errors_name_the_override() {
        let bad_address = HealthProbeSpec {
            overrides: vec![ProbeOverride {
                matches: EndpointMatch { address: Some("10.0.0.300".into()), ..Default::default() },
                ..Default::default()
            }],
            ..spec()
        };
        assert_eq!(
            validate(&key(), &bad_address).unwrap_err().to_string(),
            "spec.overrides[0].match.address: \"10.0.0.300\" is neither an IP address nor a CIDR range"
        );
        let too_fast = HealthProbeSpec {
            overrides: vec![ProbeOverride { interval_ms: Some(500), ..Default::default() }],
            ..spec()
        };
        assert_eq!(
            validate(&key(), &too_fast).unwrap_err().to_string(),
            "spec.overrides[0]: timeoutMs (1000) must not exceed intervalMs (500)"
        );
    }
}
