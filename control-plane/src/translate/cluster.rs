//! A Service port becomes an EDS cluster fed over ADS, with the active health check of its probe.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::health_check::{
    GrpcHealthCheck, HealthChecker, HttpHealthCheck, TcpHealthCheck,
};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, HealthCheck, Http2ProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use prost::Name;

use super::ActiveHealthChecks;
use crate::model::{CheckKind, ProbePolicy, ResolvedPort};

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Whether HDS can run this kind of check: Envoy's HDS announces HTTP and TCP only.
pub fn hds_can_check(check: &CheckKind) -> bool {
    matches!(check, CheckKind::Http { .. } | CheckKind::Tcp)
}

pub fn cluster(port: &ResolvedPort, mode: ActiveHealthChecks) -> Cluster {
    let mut cluster = Cluster {
        name: port.cluster_name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ConfigSource {
                resource_api_version: ApiVersion::V3 as i32,
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
                ..Default::default()
            }),
            service_name: port.cluster_name.clone(),
        }),
        // Kubernetes decides membership: a removed endpoint goes at once,
        // even while it still passes Envoy's own health checks.
        ignore_health_on_host_removal: true,
        ..Default::default()
    };
    if port.port.app_protocol.is_http2() {
        cluster.typed_extension_protocol_options.insert(HTTP_PROTOCOL_OPTIONS.to_owned(), http2_options());
    }
    if let Some(coverage) = &port.probe {
        let probe = &coverage.probe;
        if mode == ActiveHealthChecks::Hds && hds_can_check(&probe.check) {
            // Assigned checkers probe instead; the verdict arrives as EDS health_status.
            return cluster;
        }
        cluster.health_checks = vec![health_check(&probe.check, &probe.base)];
        if matches!(probe.check, CheckKind::Grpc { .. }) && !port.port.app_protocol.is_http2() {
            // gRPC health checks need an HTTP/2 upstream.
            cluster.typed_extension_protocol_options.insert(HTTP_PROTOCOL_OPTIONS.to_owned(), http2_options());
        }
    }
    cluster
}

pub fn health_check(check: &CheckKind, policy: &ProbePolicy) -> HealthCheck {
    let interval = Some(millis(policy.interval_ms));
    HealthCheck {
        timeout: Some(millis(policy.timeout_ms)),
        interval,
        // Without this Envoy probes idle clusters only once a minute.
        no_traffic_interval: interval,
        unhealthy_threshold: Some(UInt32Value { value: policy.failure_threshold }),
        healthy_threshold: Some(UInt32Value { value: policy.success_threshold }),
        health_checker: Some(match check {
            CheckKind::Http { path, host } => HealthChecker::HttpHealthCheck(HttpHealthCheck {
                path: path.clone(),
                host: host.clone().unwrap_or_default(),
                // Kubernetes probe semantics: 200-399 pass, and only failureThreshold
                // failures in a row fail. Envoy's default fails a host on its first non-200.
                expected_statuses: vec![Int64Range { start: 200, end: 400 }],
                retriable_statuses: vec![Int64Range { start: 100, end: 600 }],
                ..Default::default()
            }),
            CheckKind::Tcp => HealthChecker::TcpHealthCheck(TcpHealthCheck::default()),
            CheckKind::Grpc { service_name } => HealthChecker::GrpcHealthCheck(GrpcHealthCheck {
                service_name: service_name.clone().unwrap_or_default(),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn millis(ms: u32) -> Duration {
    Duration { seconds: i64::from(ms / 1000), nanos: ((ms % 1000) * 1_000_000) as i32 }
}

fn http2_options() -> Any {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())),
        })),
        ..Default::default()
    };
    Any { type_url: HttpProtocolOptions::type_url(), value: prost::Message::encode_to_vec(&options) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_split_into_seconds_and_nanos() {
        let d = millis(1500);
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
    }
}
