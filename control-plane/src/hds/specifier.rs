//! A checker's schedule: its assigned endpoints as `ClusterHealthCheck`s, one per group.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
use envoy_types::pb::envoy::config::core::v3::{Address, Locality, SocketAddress};
use envoy_types::pb::envoy::config::endpoint::v3::Endpoint;
use envoy_types::pb::envoy::service::health::v3::{ClusterHealthCheck, HealthCheckSpecifier, LocalityEndpoints};
use envoy_types::pb::google::protobuf;

use super::targets::{Group, Target};
use crate::translate::health_check;

/// Endpoint addresses by zone.
type ByZone<'a> = BTreeMap<Option<&'a str>, Vec<SocketAddr>>;

/// The schedule of one checker, from the targets assigned to it; groups and zones come out sorted.
pub fn specifier_for<'a>(
    targets: impl IntoIterator<Item = &'a Target>,
    report_interval: Duration,
) -> HealthCheckSpecifier {
    let mut groups: BTreeMap<&str, (&Group, ByZone)> = BTreeMap::new();
    for target in targets {
        let (_, zones) = groups.entry(&target.group.name).or_insert_with(|| (&target.group, BTreeMap::new()));
        zones.entry(target.zone.as_deref()).or_default().push(target.endpoint.address);
    }
    HealthCheckSpecifier {
        cluster_health_checks: groups.into_values().map(|(group, zones)| cluster_health_check(group, zones)).collect(),
        interval: Some(protobuf::Duration {
            seconds: report_interval.as_secs() as i64,
            nanos: report_interval.subsec_nanos() as i32,
        }),
    }
}

fn cluster_health_check(group: &Group, zones: ByZone) -> ClusterHealthCheck {
    let mut check = health_check(&group.check, &group.policy);
    if let Some(HealthChecker::HttpHealthCheck(http)) = &mut check.health_checker
        && http.host.is_empty()
    {
        // Sidecars send the cluster name as Host; checkers must probe the same way.
        http.host = group.cluster.to_string();
    }
    ClusterHealthCheck {
        cluster_name: group.name.clone(),
        health_checks: vec![check],
        locality_endpoints: zones
            .into_iter()
            .map(|(zone, addresses)| LocalityEndpoints {
                locality: zone.map(|zone| Locality { zone: zone.to_owned(), ..Default::default() }),
                endpoints: addresses.into_iter().map(endpoint).collect(),
            })
            .collect(),
        ..Default::default()
    }
}

fn endpoint(address: SocketAddr) -> Endpoint {
    Endpoint {
        address: Some(Address {
            address: Some(AddressKind::SocketAddress(SocketAddress {
                address: address.ip().to_string(),
                port_specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(u32::from(
                        address.port(),
                    )),
                ),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hds::targets::EndpointKey;
    use crate::model::{CheckKind, ProbePolicy};

    fn target(ip: &str, zone: &str, interval_ms: u32) -> Target {
        let cluster: Arc<str> = Arc::from("web.shop:80");
        let policy = ProbePolicy { interval_ms, timeout_ms: 100, failure_threshold: 2, success_threshold: 1 };
        Target {
            endpoint: EndpointKey { cluster: cluster.clone(), address: format!("{ip}:8080").parse().unwrap() },
            group: Arc::new(Group {
                name: format!("hds/web.shop:80/{interval_ms}"),
                cluster,
                check: CheckKind::Http { path: "/healthz".into(), host: None },
                policy,
            }),
            zone: Some(zone.into()),
            node_name: None,
        }
    }

    #[test]
    fn each_probe_policy_becomes_its_own_cluster_health_check_with_its_interval() {
        let targets = [target("10.0.0.1", "z1", 5000), target("10.0.0.2", "z1", 500), target("10.0.0.3", "z2", 5000)];
        let spec = specifier_for(&targets, Duration::from_millis(500));
        assert_eq!(spec.interval.unwrap().nanos, 500_000_000);
        let intervals: Vec<(String, i64, i32, usize)> = spec
            .cluster_health_checks
            .iter()
            .map(|c| {
                let interval = c.health_checks[0].interval.unwrap();
                let endpoints = c.locality_endpoints.iter().map(|l| l.endpoints.len()).sum();
                (c.cluster_name.clone(), interval.seconds, interval.nanos, endpoints)
            })
            .collect();
        assert_eq!(
            intervals,
            [("hds/web.shop:80/500".into(), 0, 500_000_000, 1), ("hds/web.shop:80/5000".into(), 5, 0, 2)]
        );
        let Some(HealthChecker::HttpHealthCheck(http)) = &spec.cluster_health_checks[0].health_checks[0].health_checker
        else {
            panic!("not HTTP")
        };
        assert_eq!((http.path.as_str(), http.host.as_str()), ("/healthz", "web.shop:80"));
        // Which targets are whose is the hub's job (hub_tests: two checkers split the endpoints).
        assert!(specifier_for([], Duration::from_secs(1)).cluster_health_checks.is_empty(), "a checker with nothing");
    }
}
