use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
use envoy_types::pb::envoy::config::endpoint::v3 as envoy_endpoint;
use envoy_types::pb::google::protobuf::value::Kind;
use prost::Message;

use super::*;
use crate::api::v1alpha1::EndpointExtension;
use crate::kubernetes::crd::{GrpcProbe, HealthProbeSpec, ProbeOverride, TargetRef};
use crate::model::{
    AddressType, CheckVerdicts, EndpointConditions, EndpointSlice, HealthProbe, ObjectKey, PortProtocol, Service,
    ServicePort, SliceEndpoint, SlicePort, SourceState, TargetPort, resolve,
};

fn state(probe: Option<HealthProbeSpec>) -> SourceState {
    let service = Service {
        key: ObjectKey::new("shop", "web"),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 80,
            protocol: PortProtocol::Tcp,
            target_port: TargetPort::Number(8080),
            app_protocol: Default::default(),
        }],
        external_name: false,
        traffic_distribution: None,
    };
    let endpoint = |ip: &str, ready: bool, zone: Option<&str>, pod: &str| SliceEndpoint {
        address: ip.parse().unwrap(),
        conditions: EndpointConditions { ready: Some(ready), ..Default::default() },
        zone: zone.map(str::to_owned),
        node_name: None,
        pod_name: Some(pod.into()),
        hostname: None,
        hints: Default::default(),
    };
    let slice = EndpointSlice {
        key: ObjectKey::new("shop", "web-1"),
        service_name: Some("web".into()),
        address_type: AddressType::Ipv4,
        ports: vec![SlicePort { name: "http".into(), port: 8080, protocol: PortProtocol::Tcp }],
        endpoints: vec![
            endpoint("10.0.0.1", true, Some("z1"), "web-1"),
            endpoint("10.0.0.2", true, Some("z2"), "web-canary-1"),
            endpoint("10.0.0.3", false, Some("z1"), "web-3"),
            endpoint("10.0.0.4", true, None, "web-4"),
        ],
    };
    let mut state = SourceState::default();
    state.services.insert(service.key.clone(), Arc::new(service));
    state.slices.insert(slice.key.clone(), Arc::new(slice));
    if let Some(spec) = probe {
        let key = ObjectKey::new("shop", "web");
        let valid = crate::kubernetes::probe_spec::validate(&key, &spec).map(Arc::new);
        let probe = HealthProbe { key, created: None, generation: None, valid };
        state.probes.insert(probe.key.clone(), Arc::new(probe));
    }
    state
}

fn probe() -> HealthProbeSpec {
    HealthProbeSpec {
        target_ref: TargetRef { kind: "Service".into(), name: "web".into() },
        interval_ms: Some(5000),
        overrides: vec![ProbeOverride {
            matches: crate::kubernetes::crd::EndpointMatch {
                pod_name: Some("web-canary-*".into()),
                ..Default::default()
            },
            interval_ms: Some(500),
            timeout_ms: Some(250),
            failure_threshold: Some(2),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Decodes our bytes with envoy-types: what Envoy itself will see.
fn envoy_cla(state: &SourceState, options: TranslateOptions) -> envoy_endpoint::ClusterLoadAssignment {
    envoy_cla_judged(state, options, &CheckVerdicts::default())
}

/// The first port's load assignment with `verdicts` applied, as Envoy decodes it.
fn envoy_cla_judged(
    state: &SourceState,
    options: TranslateOptions,
    verdicts: &CheckVerdicts,
) -> envoy_endpoint::ClusterLoadAssignment {
    let model = resolve(state);
    let bytes = load_assignment(model.ports().next().unwrap(), &options, verdicts, None).encode_to_vec();
    envoy_endpoint::ClusterLoadAssignment::decode(bytes.as_slice()).unwrap()
}

fn lb_endpoints(cla: &envoy_endpoint::ClusterLoadAssignment) -> Vec<(String, String, i32)> {
    cla.endpoints
        .iter()
        .flat_map(|l| {
            let zone = l.locality.as_ref().map(|l| l.zone.clone()).unwrap_or_default();
            l.lb_endpoints.iter().map(move |e| {
                let Some(envoy_endpoint::lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &e.host_identifier else {
                    panic!("no endpoint")
                };
                let address = endpoint.address.as_ref().unwrap().address.as_ref().unwrap();
                let envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa) = address else {
                    panic!()
                };
                let port = match sa.port_specifier {
                    Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                    _ => 0,
                };
                (zone.clone(), format!("{}:{}", sa.address, port), e.health_status)
            })
        })
        .collect()
}

#[test]
fn endpoints_are_grouped_by_zone_with_ip_and_target_port() {
    let cla = envoy_cla(&state(None), TranslateOptions::default());
    assert_eq!(cla.cluster_name, "web.shop:80");
    let healthy = HealthStatus::Healthy as i32;
    assert_eq!(
        lb_endpoints(&cla),
        [
            ("".to_string(), "10.0.0.4:8080".to_string(), healthy),
            ("z1".into(), "10.0.0.1:8080".into(), healthy),
            ("z2".into(), "10.0.0.2:8080".into(), healthy),
        ],
        "not-ready 10.0.0.3 is left out"
    );
}

#[test]
fn not_ready_endpoints_are_sent_unhealthy_when_asked() {
    let options = TranslateOptions { send_unhealthy_endpoints: true, ..Default::default() };
    let all = lb_endpoints(&envoy_cla(&state(None), options));
    assert!(all.contains(&("z1".into(), "10.0.0.3:8080".into(), HealthStatus::Unhealthy as i32)));
}

#[test]
fn endpoints_without_probe_carry_no_metadata() {
    let cla = envoy_cla(&state(None), TranslateOptions { typed_metadata: true, ..Default::default() });
    assert!(cla.endpoints.iter().flat_map(|l| &l.lb_endpoints).all(|e| e.metadata.is_none()));
}

#[test]
fn probe_metadata_carries_effective_values_per_endpoint() {
    let cla = envoy_cla(&state(Some(probe())), TranslateOptions::default());
    let mut seen = Vec::new();
    for e in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
        let metadata = e.metadata.as_ref().unwrap();
        assert!(metadata.typed_filter_metadata.is_empty(), "typed metadata is opt-in");
        let fields = &metadata.filter_metadata[METADATA_FILTER].fields;
        let number = |k: &str| match fields[k].kind {
            Some(Kind::NumberValue(n)) => n,
            ref other => panic!("{k}: {other:?}"),
        };
        let Some(Kind::StringValue(probe)) = &fields["probe"].kind else { panic!() };
        assert_eq!(probe, "shop/web");
        seen.push((
            number("probe_interval_ms"),
            number("timeout_ms"),
            number("failure_threshold"),
            number("success_threshold"),
        ));
    }
    assert_eq!(seen, [(5000.0, 1000.0, 3.0, 1.0), (5000.0, 1000.0, 3.0, 1.0), (500.0, 250.0, 2.0, 1.0)]);
}

#[test]
fn typed_metadata_is_the_extension_message() {
    let cla = envoy_cla(&state(Some(probe())), TranslateOptions { typed_metadata: true, ..Default::default() });
    let canary = &cla.endpoints[2].lb_endpoints[0];
    let any = &canary.metadata.as_ref().unwrap().typed_filter_metadata[METADATA_FILTER];
    assert_eq!(any.type_url, "type.googleapis.com/edgexds.v1alpha1.EndpointExtension");
    let extension = EndpointExtension::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        extension,
        EndpointExtension {
            probe: "shop/web".into(),
            probe_interval_ms: 500,
            failure_threshold: 2,
            success_threshold: 1,
            timeout_ms: 250
        }
    );
}

#[test]
fn encoding_is_deterministic() {
    let model = resolve(&state(Some(probe())));
    let options = TranslateOptions { typed_metadata: true, ..Default::default() };
    let encode = |model: &crate::model::Model| -> Vec<Vec<u8>> {
        model
            .ports()
            .map(|port| load_assignment(port, &options, &CheckVerdicts::default(), None).encode_to_vec())
            .collect()
    };
    let once = encode(&model);
    for _ in 0..20 {
        let again = encode(&resolve(&state(Some(probe()))));
        assert_eq!(once, again);
    }
}

fn only_cluster(state: &SourceState) -> Cluster {
    cluster_in_mode(state, ActiveHealthChecks::Cds)
}

fn cluster_in_mode(state: &SourceState, mode: ActiveHealthChecks) -> Cluster {
    let model = resolve(state);
    let options = TranslateOptions { active_health_checks: mode, ..Default::default() };
    let cluster = cluster(model.ports().next().unwrap(), options.active_health_checks);
    Cluster::decode(cluster.encode_to_vec().as_slice()).unwrap()
}

#[test]
fn cluster_is_eds_over_ads_with_the_probe_health_check() {
    let cluster = only_cluster(&state(Some(probe())));
    assert_eq!(cluster.name, "web.shop:80");
    let eds = cluster.eds_cluster_config.unwrap();
    assert_eq!(eds.service_name, "web.shop:80");
    assert!(cluster.ignore_health_on_host_removal, "removed endpoints leave even while passing health checks");
    assert!(matches!(
        eds.eds_config.unwrap().config_source_specifier,
        Some(envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(_))
    ));
    let hc = &cluster.health_checks[0];
    assert_eq!(hc.interval.unwrap().seconds, 5);
    assert_eq!(hc.no_traffic_interval.unwrap().seconds, 5, "idle clusters are probed at the same rate");
    assert_eq!(hc.timeout.unwrap().seconds, 1);
    assert_eq!((hc.unhealthy_threshold.unwrap().value, hc.healthy_threshold.unwrap().value), (3, 1));
    let Some(HealthChecker::HttpHealthCheck(http)) = &hc.health_checker else { panic!() };
    assert_eq!(http.path, "/healthz");
    let ranges =
        |r: &[envoy_types::pb::envoy::r#type::v3::Int64Range]| r.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>();
    assert_eq!(ranges(&http.expected_statuses), [(200, 400)], "2xx and 3xx pass, as in Kubernetes");
    assert_eq!(ranges(&http.retriable_statuses), [(100, 600)], "a bad status counts toward failureThreshold");
}

#[test]
fn cluster_without_probe_has_no_health_checks() {
    assert!(only_cluster(&state(None)).health_checks.is_empty());
}

#[test]
fn grpc_probe_makes_the_cluster_http2() {
    let spec = HealthProbeSpec { grpc: Some(GrpcProbe { service_name: Some("shop.Web".into()) }), ..probe() };
    let cluster = only_cluster(&state(Some(spec)));
    let Some(HealthChecker::GrpcHealthCheck(grpc)) = &cluster.health_checks[0].health_checker else { panic!() };
    assert_eq!(grpc.service_name, "shop.Web");
    assert!(
        cluster.typed_extension_protocol_options.contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    );
}

#[test]
fn hds_mode_leaves_http_and_tcp_checks_to_the_checkers_but_keeps_grpc_checks_on_sidecars() {
    assert!(cluster_in_mode(&state(Some(probe())), ActiveHealthChecks::Hds).health_checks.is_empty());
    assert_eq!(cluster_in_mode(&state(Some(probe())), ActiveHealthChecks::Both).health_checks.len(), 1);
    let grpc = HealthProbeSpec { grpc: Some(GrpcProbe { service_name: None }), ..probe() };
    let cluster = cluster_in_mode(&state(Some(grpc)), ActiveHealthChecks::Hds);
    assert_eq!(cluster.health_checks.len(), 1, "HDS cannot run gRPC checks, so sidecars keep them");
}

#[test]
fn a_failing_verdict_makes_a_ready_endpoint_unhealthy_and_never_revives_a_not_ready_one() {
    let model = resolve(&state(Some(probe())));
    let mut verdicts = CheckVerdicts::default();
    verdicts.insert("web.shop:80", "10.0.0.1:8080".parse().unwrap());
    verdicts.insert("web.shop:80", "10.0.0.3:8080".parse().unwrap());
    let cla = envoy_cla_judged(&state(Some(probe())), TranslateOptions::default(), &verdicts);
    let health: Vec<(String, i32)> = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            let Some(envoy_endpoint::lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &e.host_identifier else {
                panic!("no endpoint")
            };
            let address = endpoint.address.as_ref().unwrap();
            let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(socket)) =
                &address.address
            else {
                panic!("no socket address")
            };
            (socket.address.clone(), e.health_status)
        })
        .collect();
    let unhealthy = HealthStatus::Unhealthy as i32;
    assert!(health.contains(&("10.0.0.1".into(), unhealthy)));
    assert!(!health.iter().any(|(ip, _)| ip == "10.0.0.3"), "not ready in Kubernetes stays out");
    let status = &model.probe_statuses(&verdicts)[&ObjectKey::new("shop", "web")];
    assert_eq!((status.healthy_endpoints, status.unhealthy_endpoints), (2, 2));
}
