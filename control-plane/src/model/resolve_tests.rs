use super::*;
use crate::kubernetes::crd::ProbeOverride;
use crate::model::EndpointConditions;
use crate::model::fixtures::{endpoint, probe, probe_spec, service, slice, state};

fn first(model: &Model) -> &ResolvedService {
    model.services.values().next().expect("a resolved Service")
}

fn addresses(port: &ResolvedPort) -> Vec<String> {
    port.endpoints.iter().map(|e| format!("{}:{}", e.address, e.port)).collect()
}

#[test]
fn one_cluster_per_service_port_named_service_namespace_port() {
    let model = resolve(&state(vec![service("shop", "web", &[("http", 80), ("grpc", 9090)])], vec![], vec![]));
    let names: Vec<_> = model.ports().map(|p| p.cluster_name.as_str()).collect();
    assert_eq!(names, ["web.shop:80", "web.shop:9090"]);
}

#[test]
fn endpoints_in_several_slices_are_merged_not_duplicated() {
    let slices = vec![
        slice(
            "shop",
            "web-a",
            "web",
            &[("http", 8080)],
            vec![endpoint("10.0.0.1", false, "z1"), endpoint("10.0.0.2", true, "z1")],
        ),
        slice(
            "shop",
            "web-b",
            "web",
            &[("http", 8080)],
            vec![endpoint("10.0.0.1", true, "z1"), endpoint("10.0.0.3", true, "z2")],
        ),
    ];
    let model = resolve(&state(vec![service("shop", "web", &[("http", 80)])], slices, vec![]));
    let port = &first(&model).ports[0];
    assert_eq!(addresses(port), ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
    assert_eq!(port.endpoints[0].health, EndpointHealth::Ready, "ready in any slice wins");
}

#[test]
fn endpoint_port_comes_from_the_slice_port_of_the_same_name() {
    let slices = vec![slice(
        "shop",
        "web-a",
        "web",
        &[("http", 8080), ("metrics", 9100)],
        vec![endpoint("10.0.0.1", true, "z1")],
    )];
    let svc = service("shop", "web", &[("http", 80), ("metrics", 9100), ("other", 7)]);
    let model = resolve(&state(vec![svc], slices, vec![]));
    let ports = &first(&model).ports;
    assert_eq!(addresses(&ports[0]), ["10.0.0.1:8080"]);
    assert_eq!(addresses(&ports[1]), ["10.0.0.1:9100"]);
    assert!(ports[2].endpoints.is_empty(), "a port no slice carries has no endpoints");
}

#[test]
fn health_maps_ready_draining_and_not_ready() {
    let mut draining = endpoint("10.0.0.2", false, "z1");
    draining.conditions = EndpointConditions { ready: Some(false), serving: Some(true), terminating: Some(true) };
    let mut unknown = endpoint("10.0.0.3", true, "z1");
    unknown.conditions = EndpointConditions::default();
    let slices = vec![slice(
        "shop",
        "s",
        "web",
        &[("http", 8080)],
        vec![endpoint("10.0.0.1", true, "z1"), draining, unknown, endpoint("10.0.0.4", false, "z1")],
    )];
    let model = resolve(&state(vec![service("shop", "web", &[("http", 80)])], slices, vec![]));
    let health: Vec<_> = first(&model).ports[0].endpoints.iter().map(|e| e.health).collect();
    assert_eq!(
        health,
        [EndpointHealth::Ready, EndpointHealth::Draining, EndpointHealth::Ready, EndpointHealth::NotReady],
        "unknown readiness counts as ready"
    );
}

#[test]
fn slices_of_other_namespaces_or_services_do_not_leak() {
    let slices = vec![
        slice("other", "s1", "web", &[("http", 8080)], vec![endpoint("10.0.0.1", true, "z")]),
        slice("shop", "s2", "api", &[("http", 8080)], vec![endpoint("10.0.0.2", true, "z")]),
    ];
    let model = resolve(&state(vec![service("shop", "web", &[("http", 80)])], slices, vec![]));
    assert!(first(&model).ports[0].endpoints.is_empty());
}

#[test]
fn fqdn_slices_and_external_name_services_produce_nothing_and_are_reported() {
    let mut fqdn = slice("shop", "f", "web", &[("http", 80)], vec![]);
    fqdn.address_type = AddressType::Fqdn;
    let mut external = service("shop", "ext", &[("http", 80)]);
    external.external_name = true;
    let model = resolve(&state(vec![external, service("shop", "web", &[("http", 80)])], vec![fqdn], vec![]));
    assert_eq!(model.services.len(), 1);
    let objects: Vec<_> = model.diagnostics.iter().map(|d| d.object.as_str()).collect();
    assert_eq!(objects, ["EndpointSlice shop/f", "Service shop/ext"]);
}

#[test]
fn probe_covers_all_ports_or_the_one_it_names_with_effective_values() {
    let mut spec = probe_spec("web", Some(80));
    spec.overrides = vec![ProbeOverride {
        matches: crate::kubernetes::crd::EndpointMatch { zone: Some("z2".into()), ..Default::default() },
        interval_ms: Some(500),
        timeout_ms: Some(100),
        ..Default::default()
    }];
    let slices = vec![slice(
        "shop",
        "s",
        "web",
        &[("http", 8080), ("grpc", 9090)],
        vec![endpoint("10.0.0.1", true, "z1"), endpoint("10.0.0.2", true, "z2")],
    )];
    let model = resolve(&state(
        vec![service("shop", "web", &[("http", 80), ("grpc", 9090)])],
        slices,
        vec![probe("shop", "p", "2024-01-01T00:00:00Z", spec)],
    ));
    let ports = &first(&model).ports;
    let intervals: Vec<_> = ports[0].endpoints.iter().map(|e| e.probe.map(|p| p.interval_ms)).collect();
    assert_eq!(intervals, [Some(5000), Some(500)]);
    assert!(ports[1].probe.is_none() && ports[1].endpoints.iter().all(|e| e.probe.is_none()));
    let status = &model.probes[&ObjectKey::new("shop", "p")];
    assert_eq!((status.accepted.clone(), status.resolved_refs.clone()), (Ok(()), Some(Ok(()))));
    assert_eq!(status.matched_endpoints, 2);
}

#[test]
fn older_probe_wins_a_port_and_the_other_is_conflicted() {
    let probes = vec![
        probe("shop", "young", "2024-06-01T00:00:00Z", probe_spec("web", None)),
        probe("shop", "old", "2024-01-01T00:00:00Z", probe_spec("web", Some(80))),
        probe("shop", "also-old", "2024-01-01T00:00:00Z", probe_spec("web", Some(81))),
    ];
    let model = resolve(&state(vec![service("shop", "web", &[("http", 80), ("b", 81)])], vec![], probes));
    let ports = &first(&model).ports;
    assert_eq!(&*ports[0].probe.as_ref().unwrap().probe.key.name, "old");
    assert_eq!(&*ports[1].probe.as_ref().unwrap().probe.key.name, "also-old", "same time: name decides");
    let young = &model.probes[&ObjectKey::new("shop", "young")];
    assert_eq!(young.conflicted.as_deref(), Some("HealthProbe shop/also-old already covers Service port web:81"));
    assert_eq!(model.probes[&ObjectKey::new("shop", "old")].conflicted, None);
}

#[test]
fn invalid_probe_is_ignored_with_its_error_and_never_fatal() {
    let mut bad = probe_spec("web", None);
    bad.interval_ms = Some(10);
    let good = probe_spec("web", None);
    let model = resolve(&state(
        vec![service("shop", "web", &[("http", 80)])],
        vec![],
        vec![probe("shop", "bad", "2023-01-01T00:00:00Z", bad), probe("shop", "good", "2024-01-01T00:00:00Z", good)],
    ));
    let status = &model.probes[&ObjectKey::new("shop", "bad")];
    assert_eq!(status.accepted, Err("spec.intervalMs: 10 is out of range 100..=3600000".into()));
    assert_eq!(status.resolved_refs, None);
    assert_eq!(
        &*first(&model).ports[0].probe.as_ref().unwrap().probe.key.name,
        "good",
        "older but invalid: no conflict"
    );
    assert!(model.diagnostics.iter().any(|d| d.object == "HealthProbe shop/bad" && d.message.contains("intervalMs")));
}

#[test]
fn unresolved_targets_are_reported_precisely() {
    let mut external = service("shop", "ext", &[("http", 80)]);
    external.external_name = true;
    let model = resolve(&state(
        vec![service("shop", "web", &[("http", 80)]), external],
        vec![],
        vec![
            probe("shop", "no-svc", "t", probe_spec("missing", None)),
            probe("shop", "no-port", "t", probe_spec("web", Some(81))),
            probe("shop", "ext", "t", probe_spec("ext", None)),
        ],
    ));
    let refs = |n: &str| {
        let problem = model.probes[&ObjectKey::new("shop", n)].resolved_refs.clone().unwrap().unwrap_err();
        (problem.reason, problem.message)
    };
    assert_eq!(refs("no-svc"), ("ServiceNotFound", "Service shop/missing not found".into()));
    assert_eq!(refs("no-port"), ("PortNotFound", "Service shop/web has no port 81 (ports: {80})".into()));
    assert_eq!(
        refs("ext"),
        ("ExternalNameService", "Service shop/ext is of type ExternalName and has no endpoints".into())
    );
}

#[test]
fn probes_in_other_namespaces_do_not_apply() {
    let model = resolve(&state(
        vec![service("shop", "web", &[("http", 80)])],
        vec![],
        vec![probe("other", "p", "t", probe_spec("web", None))],
    ));
    assert!(first(&model).ports[0].probe.is_none());
}
