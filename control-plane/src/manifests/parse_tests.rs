use super::*;
use crate::model::{AddressType, ObjectKey, ObjectKind, PortProtocol, SourceObject, TargetPort};

/// The file's objects, or its first error: the file's own, else the first object's refusal.
fn parse(name: &str, text: &str) -> Result<Vec<SourceObject>, ParseError> {
    let parsed = parse_file(Path::new(name), text)?;
    match parsed.refused.into_iter().next() {
        Some(refused) => Err(refused.error),
        None => Ok(parsed.objects.into_iter().map(|l| l.object).collect()),
    }
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  ports:
  - { name: http, port: 80, targetPort: 8080 }
  - { name: admin, port: 9000, targetPort: admin, protocol: UDP }
";

#[test]
fn multi_document_yaml_keeps_known_kinds_and_ignores_others() {
    let text = format!(
        "{SERVICE}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: web }}\n---\n# only a comment\n---\n{}",
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: { kubernetes.io/service-name: web }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints:
- addresses: [10.0.0.1]
  conditions: { ready: false, serving: true, terminating: true }
  zone: z1
  nodeName: n1
  hostname: web-0
  targetRef: { kind: Pod, name: web-0 }
"
    );
    let objects = parse("m.yaml", &text).unwrap();
    assert_eq!(objects.len(), 2);
    let SourceObject::Service(service) = &objects[0] else { panic!("{objects:?}") };
    assert_eq!(service.key, ObjectKey::new("shop", "web"));
    assert_eq!(service.ports[0].target_port, TargetPort::Number(8080));
    assert_eq!(service.ports[1].target_port, TargetPort::Name("admin".into()));
    assert_eq!(service.ports[1].protocol, PortProtocol::Udp);
    let SourceObject::EndpointSlice(slice) = &objects[1] else { panic!("{objects:?}") };
    assert_eq!(slice.key, ObjectKey::new(DEFAULT_NAMESPACE, "web-1"), "namespace defaults like kubectl");
    assert_eq!(slice.service_name.as_deref(), Some("web"));
    assert_eq!(slice.address_type, AddressType::Ipv4);
    let endpoint = &slice.endpoints[0];
    assert_eq!(endpoint.address.to_string(), "10.0.0.1");
    assert!(
        !endpoint.conditions.is_ready() && endpoint.conditions.is_serving() && endpoint.conditions.is_terminating()
    );
    assert_eq!(
        (endpoint.zone.as_deref(), endpoint.node_name.as_deref(), endpoint.pod_name.as_deref()),
        (Some("z1"), Some("n1"), Some("web-0"))
    );
    assert_eq!(endpoint.hostname.as_deref(), Some("web-0"));
}

#[test]
fn list_kind_and_json_files_are_read() {
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "x"}, "spec": {"ports": [{"port": 1}]}},
        {"apiVersion": "edgexds.io/v1alpha1", "kind": "HealthProbe", "metadata": {"name": "p", "namespace": "x",
         "creationTimestamp": "2024-01-02T03:04:05Z", "generation": 4},
         "spec": {"targetRef": {"name": "a"}, "tcp": {}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}}
    ]}"#;
    let objects = parse("list.json", list).unwrap();
    assert_eq!(objects.len(), 2);
    let SourceObject::HealthProbe(probe) = &objects[1] else { panic!("{objects:?}") };
    assert_eq!(probe.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    assert_eq!(probe.generation, Some(4));
    // Validation requires kind Service, so a valid probe shows the default applied.
    let valid = probe.valid.as_ref().expect("targetRef.kind defaults to Service");
    assert_eq!(valid.service, "a", "targetRef.kind defaults to Service");
    assert_eq!(parse("list.yaml", "apiVersion: v1\nkind: ServiceList\nitems: []\n").unwrap(), vec![]);
}

#[test]
fn yaml_syntax_error_reports_file_and_line() {
    let text = format!("{SERVICE}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web: oops\n");
    let err = parse("bad.yaml", &text).unwrap_err();
    assert_eq!(err.path, Path::new("bad.yaml"));
    assert_eq!(err.line, 12, "{err}");
    assert!(err.to_string().starts_with("bad.yaml:12: "), "{err}");
}

#[test]
fn wrong_field_type_reports_line_of_the_field() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: { name: web }\nspec:\n  ports:\n  - port: eighty\n";
    let err = parse("svc.yaml", text).unwrap_err();
    assert_eq!(err.line, 6, "{err}");
}

#[test]
fn semantic_error_names_the_object_and_field() {
    let text = "---\napiVersion: v1\nkind: Service\nmetadata: { name: web }\nspec:\n  ports:\n  - port: 70000\n";
    let err = parse("svc.yaml", text).unwrap_err();
    assert_eq!(err.to_string(), "svc.yaml:2: Service web: spec.ports[0].port: 70000 is not a port number (1..=65535)");
    let no_name = "apiVersion: v1\nkind: Service\nmetadata: {}\n";
    assert!(parse("svc.yaml", no_name).unwrap_err().message.contains("metadata.name: is required"));
}

#[test]
fn json_syntax_error_reports_line() {
    let err = parse("x.json", "{\n  \"kind\": \"Service\",\n  oops\n}").unwrap_err();
    assert_eq!(err.line, 3, "{err}");
}

#[test]
fn bad_endpoint_address_is_precise() {
    let text = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: s }
addressType: IPv4
endpoints:
- addresses: [not-an-ip]
";
    let err = parse("s.yaml", text).unwrap_err();
    assert!(err.message.ends_with("endpoints[0].addresses[0]: \"not-an-ip\" is not an IP address"), "{err}");
}

#[test]
fn an_address_of_the_other_family_than_the_slice_is_refused() {
    let slice = |family: &str, address: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{ name: s }}\naddressType: {family}\nendpoints: [{{ addresses: [\"{address}\"] }}]\n"
        )
    };
    let error = parse("s.yaml", &slice("IPv4", "fd00::1")).unwrap_err();
    assert!(error.message.contains("\"fd00::1\" is not an address of the slice's addressType IPv4"), "{error}");
    assert!(parse("s.yaml", &slice("IPv6", "10.0.0.1")).is_err());
    assert!(parse("s.yaml", &slice("IPv6", "fd00::1")).is_ok());
}

#[test]
fn fqdn_slices_parse_without_endpoints() {
    let text = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: s }
addressType: FQDN
endpoints:
- addresses: [example.com]
";
    let SourceObject::EndpointSlice(slice) = &parse("s.yaml", text).unwrap()[0] else { panic!() };
    assert_eq!(slice.address_type, AddressType::Fqdn);
    assert!(slice.endpoints.is_empty());
}

#[test]
fn document_splitting_tracks_start_lines() {
    let docs = split_documents("a: 1\n---\nb: 2\n--- # c\nc: 3");
    assert_eq!(docs, vec![(1, "a: 1\n"), (3, "b: 2\n"), (5, "c: 3")]);
}

#[test]
fn names_follow_the_api_servers_rules() {
    let service = |name: &str, namespace: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: \"{name}\", namespace: \"{namespace}\" }}\nspec: {{ ports: [{{ port: 80 }}] }}\n"
        )
    };
    assert!(parse("ok.yaml", &service("web-1", "shop")).is_ok());
    let long = "a".repeat(10_000);
    for (name, namespace, why) in [
        (long.as_str(), "shop", "no more than 63 characters"),
        ("Web", "shop", "RFC 1035 label"),
        ("1web", "shop", "RFC 1035 label"),
        ("web.shop", "shop", "RFC 1035 label"),
        ("web", "Shop_1", "RFC 1123 label"),
    ] {
        let error = parse("bad.yaml", &service(name, namespace)).unwrap_err();
        assert!(error.message.contains(why), "{name:?}/{namespace:?}: {error}");
        assert!(error.message.len() < 300, "a long name is shortened in the message");
    }
}

#[test]
fn each_object_is_accepted_or_refused_on_its_own_and_a_refusal_names_the_object_it_meant() {
    let text = format!(
        "{SERVICE}---\napiVersion: edgexds.io/v1alpha1\nkind: HealthProbe\nmetadata: {{ name: fast, namespace: shop }}\nspec: {{ targetRef: {{ name: web }}, intervalMs: 50 }}\n---\napiVersion: edgexds.io/v1alpha1\nkind: HealthProbe\nmetadata: {{ name: ok, namespace: shop }}\nspec: {{ targetRef: {{ name: web }} }}\n"
    );
    let parsed = parse_file(Path::new("mixed.yaml"), &text).unwrap();
    let accepted: Vec<String> = parsed.objects.iter().map(|l| l.object.key().to_string()).collect();
    assert_eq!(accepted, ["shop/web", "shop/ok"]);
    assert_eq!(parsed.refused.len(), 1);
    let refused = &parsed.refused[0];
    assert_eq!(refused.object, Some((ObjectKind::HealthProbe, ObjectKey::new("shop", "fast"))));
    assert_eq!(refused.error.line, 9, "{}", refused.error);
    assert!(refused.error.message.contains("intervalMs"), "{}", refused.error);
}

#[test]
fn a_probe_the_api_server_would_refuse_is_refused_with_the_rule_it_breaks() {
    let overrides: String = (0..33).map(|i| format!("  - {{ match: {{ zone: z{i} }}, intervalMs: 1000 }}\n")).collect();
    let text = format!(
        "apiVersion: edgexds.io/v1alpha1\nkind: HealthProbe\nmetadata: {{ name: p, namespace: x }}\nspec:\n  targetRef: {{ name: a }}\n  overrides:\n{overrides}"
    );
    let error = parse("p.yaml", &text).unwrap_err();
    assert!(error.message.contains("at most 32"), "{error}");
    let timeout = "apiVersion: edgexds.io/v1alpha1\nkind: HealthProbe\nmetadata: { name: p }\nspec: { targetRef: { name: a }, intervalMs: 200, timeoutMs: 500 }\n";
    let error = parse("p.yaml", timeout).unwrap_err();
    assert!(error.message.contains("must not exceed intervalMs"), "{error}");
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let started = std::time::Instant::now();
    let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let error = parse("deep.yaml", &deep).unwrap_err();
    assert!(error.message.contains("nested deeper than 64"), "{error}");
    let block: String = (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
    assert!(parse("block.yaml", &block).unwrap_err().message.contains("nested deeper"));
    let json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse("deep.json", &json).unwrap_err().message.contains("nested deeper"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "refused without parsing");
    let quoted = "apiVersion: v1\nkind: Service\nmetadata: { name: web, annotations: { a: \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\" } }\nspec: { ports: [{ port: 80 }] }\n";
    assert!(parse("quoted.yaml", quoted).is_ok(), "brackets inside quotes do not count");
}

#[test]
fn service_ports_are_checked_across_as_the_api_server_checks_them() {
    let service = |ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: web, namespace: shop }}\nspec: {{ ports: [{ports}] }}\n"
        )
    };
    for (ports, why) in [
        ("{ name: a, port: 80 }, { name: b, port: 80 }", "spec.ports[1]: Duplicate value: port 80 protocol TCP"),
        ("{ name: a, port: 80 }, { name: a, port: 81 }", "spec.ports[1].name: Duplicate value: \"a\""),
        ("{ port: 80 }, { name: b, port: 81 }", "spec.ports[0].name: Required value"),
        ("{ name: Web_1, port: 80 }", "spec.ports[0].name: \"Web_1\" must be an RFC 1123 label"),
        (
            "{ name: a, port: 80, targetPort: web--http }",
            "spec.ports[0].targetPort: \"web--http\" must be an IANA service name",
        ),
    ] {
        let error = parse("svc.yaml", &service(ports)).unwrap_err();
        assert!(error.message.contains(why), "{ports}: {error}");
    }
    let ok = "{ name: http, port: 80, targetPort: http }, { name: dns, port: 80, protocol: UDP }";
    assert!(parse("svc.yaml", &service(ok)).is_ok(), "the same number on another protocol is fine");
}
