"""The Helm chart, checked with the real Helm library (helm-sdkpy) against a real
kube-apiserver and etcd (the suite's `kube-test-server`, built from their Go modules).

Lint runs strictly (any warning fails). Installs, upgrades and uninstalls go to the real
server, whose own validation accepts or refuses every object, and the stored objects are
read back with the real kubectl. The chart's RBAC is then proven by running edgexds with
its ServiceAccount's token: with every rule it serves and writes status, and without any
one rule it fails visibly.
"""

import asyncio
import base64
import http.server
import json
import os
import pathlib
import ssl
import subprocess
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request

import helm_sdkpy as helm
import pytest
import yaml
from charts import CHART, chart_with_values, install, lint, merged, uninstall, upgrade  # tests/py, on the path by conftest.py
from realparts import PATIENCE, Cluster, Edgexds

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALL_ON = yaml.safe_load((ROOT / "tests" / "helm" / "values-all-on.yaml").read_text())
RBAC_VERBS = sorted(tuple(v) for v in json.loads((ROOT / "tests" / "rbac-verbs.json").read_text()))
# The Nodes' zones place clients: cluster-scoped, so a ClusterRole of its own in every mode.
NODE_VERBS = [("list", "nodes"), ("watch", "nodes")]

WARNING = 2  # Helm lint severities: 1 info, 2 warning, 3 error


def test_lint_is_clean_with_default_values():
    serious = [m for m in lint(CHART) if m["Severity"] >= WARNING]
    assert serious == []


def test_lint_is_clean_with_every_option_on(tmp_path):
    serious = [m for m in lint(chart_with_values(tmp_path, ALL_ON)) if m["Severity"] >= WARNING]
    assert serious == []


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCount": -1},
        {"log": {"format": "xml"}},
        {"debounce": "fast"},
        {"service": {"xdsPort": 70000}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"replicas": 2},
        {"activeHealthChecks": {"mode": "sidecars"}},
        {"activeHealthChecks": {"checkersPerEndpoint": 0}},
        {"hdsCheckers": {"enabled": True}},
        {"xds": {"tls": {"source": "self-signed"}}},
        {"xds": {"auth": {"modes": []}}},
        {"xds": {"adminIdentities": ["ops"]}},
    ],
    ids=["negative-replicas", "unknown-log-format", "bad-debounce", "port-out-of-range", "bad-pull-policy", "bad-namespace", "unknown-key",
         "unknown-health-check-mode", "no-checkers-per-endpoint", "checkers-without-hds", "unknown-tls-source", "no-auth-mode",
         "identity-without-namespace"],
)
def test_values_schema_rejects_bad_values(tmp_path, bad):
    messages = lint(chart_with_values(tmp_path, merged(bad)))
    assert any(m["Severity"] > WARNING for m in messages), messages


@pytest.mark.parametrize(
    "values,says",
    [
        ({"xds": {"tls": {"source": "none"}}}, "mtls and token need TLS"),
        ({"xds": {"auth": {"modes": ["mtls"]}}}, "needs xds.auth.clientCASecret"),
        ({"xds": {"auth": {"modes": ["none", "token"]}}}, "none cannot be combined"),
        ({"xds": {"tls": {"source": "secret"}}}, "needs xds.tls.secretName"),
        ({"activeHealthChecks": {"mode": "hds"}, "hdsCheckers": {"enabled": True},
          "xds": {"auth": {"modes": ["mtls"], "clientCASecret": "mesh-ca"}}}, "add token to xds.auth.modes"),
        ({"xds": {"tls": {"source": "none"}, "auth": {"modes": ["none"]}}}, "injection needs xds.tls"),
    ],
    ids=["token-auth-without-tls", "mtls-without-client-ca", "none-with-token", "secret-without-name", "checkers-without-token-auth",
         "injection-without-tls"],
)
def test_security_settings_that_would_leave_the_port_open_or_unusable_are_refused_with_what_to_do(cluster, values, says):
    # Helm's lint only logs a template's fail(); an install renders for real and stops.
    with pytest.raises(helm.InstallError, match=says):
        install(cluster, values, release="refused", namespace="refused")


def test_chart_crd_is_the_generated_crd_byte_for_byte():
    assert (CHART / "crds" / "healthprobes.edgexds.io.yaml").read_bytes() == (ROOT / "crds" / "healthprobes.edgexds.io.yaml").read_bytes()


def test_chart_app_version_is_the_crate_version():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == cargo["workspace"]["package"]["version"]
    assert chart["apiVersion"] == "v2"


def rules(role: dict) -> list[tuple[str, str]]:
    return sorted((verb, resource) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"])


def assert_injection_webhook_is_selective_and_trusts_the_ca(webhook: dict, secret: dict):
    excluded = ["kube-system", "kube-public", "kube-node-lease", "edge"]
    by_name = {w["name"]: w for w in webhook["webhooks"]}
    assert sorted(by_name) == ["namespace.inject.edgexds.io", "pod.inject.edgexds.io"]
    for hook in by_name.values():
        assert (hook["failurePolicy"], hook["sideEffects"], hook["reinvocationPolicy"], hook["timeoutSeconds"]) == \
            ("Fail", "None", "IfNeeded", 10)
        assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                  "resources": ["pods"], "scope": "Namespaced"}]
        assert hook["clientConfig"]["service"] == {"name": "edgexds", "namespace": "edge", "path": "/inject", "port": 443}
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"], "the CA the serving certificate chains to"
        assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded} in \
            hook["namespaceSelector"]["matchExpressions"], "the API server never calls it for these"
    namespace, pod = by_name["namespace.inject.edgexds.io"], by_name["pod.inject.edgexds.io"]
    assert {"key": "edgexds.io/inject", "operator": "In", "values": ["enabled"]} in namespace["namespaceSelector"]["matchExpressions"]
    assert namespace["objectSelector"]["matchExpressions"] == [{"key": "edgexds.io/inject", "operator": "NotIn", "values": ["false"]}]
    assert {"key": "edgexds.io/inject", "operator": "NotIn", "values": ["enabled"]} in pod["namespaceSelector"]["matchExpressions"]
    assert pod["objectSelector"]["matchExpressions"] == [{"key": "edgexds.io/inject", "operator": "In", "values": ["true"]}]


def test_install_with_defaults_creates_a_small_restricted_deployment_with_exact_rbac(cluster):
    objects = install(cluster)
    kinds = sorted((kind, ns or "", name) for kind, ns, name in objects)
    print("\nrendered resources for default values:", *kinds, sep="\n  ")
    assert kinds == [
        ("ClusterRole", "", "edgexds"),
        ("ClusterRole", "", "edgexds-nodes"),
        ("ClusterRole", "", "edgexds-tokenreview"),
        ("ClusterRoleBinding", "", "edgexds"),
        ("ClusterRoleBinding", "", "edgexds-nodes"),
        ("ClusterRoleBinding", "", "edgexds-tokenreview"),
        ("CustomResourceDefinition", "", "healthprobes.edgexds.io"),
        ("Deployment", "edge", "edgexds"),
        ("MutatingWebhookConfiguration", "edge", "edgexds-edge-inject"),
        ("Secret", "edge", "edgexds-xds-tls"),
        ("Service", "edge", "edgexds"),
        ("ServiceAccount", "edge", "edgexds"),
    ]
    assert rules(objects["ClusterRole", None, "edgexds"]) == RBAC_VERBS
    webhook = objects["MutatingWebhookConfiguration", "edge", "edgexds-edge-inject"]
    assert_injection_webhook_is_selective_and_trusts_the_ca(webhook, objects["Secret", "edge", "edgexds-xds-tls"])
    assert rules(objects["ClusterRole", None, "edgexds-tokenreview"]) == [("create", "tokenreviews")]
    assert rules(objects["ClusterRole", None, "edgexds-nodes"]) == NODE_VERBS
    deployment = objects["Deployment", "edge", "edgexds"]
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/edgexds/edgexds:0.1.0"
    assert container["args"][:6] == [
        "serve", "--xds-addr=0.0.0.0:18000", "--admin-addr=0.0.0.0:19000",
        "--debounce=100ms", "--log-format=json", "--log-level=info",
    ]
    assert "--active-health-checks=cds" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--hds-")]
    # Secure by default: TLS from a generated CA, clients admitted by ServiceAccount token.
    for flag in ["--xds-tls-cert=/var/run/edgexds/tls/tls.crt", "--xds-tls-key=/var/run/edgexds/tls/tls.key",
                 "--xds-auth=token", "--xds-token-audience=edgexds"]:
        assert flag in container["args"]
    assert container["volumeMounts"] == [{"name": "xds-tls", "mountPath": "/var/run/edgexds/tls", "readOnly": True}]
    assert pod["volumes"][0]["secret"]["secretName"] == "edgexds-xds-tls"
    secret = objects["Secret", "edge", "edgexds-xds-tls"]
    assert secret["type"] == "kubernetes.io/tls"
    assert_certificate_is_for_the_service(secret, "edgexds", "edge")
    assert container["resources"] == {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p for p in objects["Service", "edge", "edgexds"]["spec"]["ports"]}
    assert (ports["grpc-xds"]["port"], ports["grpc-xds"]["appProtocol"]) == (18000, "grpc")
    assert ports["http-admin"]["port"] == 19000
    binding = objects["ClusterRoleBinding", None, "edgexds"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "edgexds", "namespace": "edge"}]

    # An upgrade changes the Deployment in place; an uninstall removes everything but the CRD.
    upgraded = upgrade(cluster, {"log": {"level": "debug"}})
    args = upgraded["Deployment", "edge", "edgexds"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--log-level=debug" in args
    assert upgraded["Deployment", "edge", "edgexds"]["metadata"]["generation"] == 2
    # The generated CA outlives upgrades: a new one would cut off every client that trusts it.
    assert upgraded["Secret", "edge", "edgexds-xds-tls"]["data"] == secret["data"]
    assert_injection_webhook_is_selective_and_trusts_the_ca(
        upgraded["MutatingWebhookConfiguration", "edge", "edgexds-edge-inject"], secret)
    uninstall(cluster, upgraded)


def assert_certificate_is_for_the_service(secret: dict, name: str, namespace: str):
    """The Secret's certificate chains to its ca.crt and names every way clients reach the Service."""
    with tempfile.TemporaryDirectory() as scratch:
        for key in ["tls.crt", "ca.crt"]:
            pathlib.Path(scratch, key).write_bytes(base64.b64decode(secret["data"][key]))
        for host in [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]:
            verified = subprocess.run(["openssl", "verify", "-CAfile", f"{scratch}/ca.crt", "-verify_hostname", host,
                                       f"{scratch}/tls.crt"], capture_output=True, text=True)
            assert verified.returncode == 0, f"{host}: {verified.stdout}{verified.stderr}"


def test_install_with_watch_namespaces_grants_only_namespaced_roles(cluster):
    # Roles go into the watched namespaces, which must exist: the real server refuses otherwise.
    cluster.ensure_namespace("shop", "payments")
    objects = install(cluster, {"watchNamespaces": ["shop", "payments"]})
    for namespace in ["shop", "payments"]:
        assert rules(objects["Role", namespace, "edgexds"]) == RBAC_VERBS
        assert objects["RoleBinding", namespace, "edgexds"]["subjects"][0]["namespace"] == "edge"
    args = objects["Deployment", "edge", "edgexds"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespaces=shop,payments" in args
    # TokenReview and Nodes are cluster-scoped: the only cluster-wide grants left, and all they allow.
    assert sorted(k for k in objects if k[0].startswith("Cluster")) == [
        ("ClusterRole", None, "edgexds-nodes"), ("ClusterRole", None, "edgexds-tokenreview"),
        ("ClusterRoleBinding", None, "edgexds-nodes"), ("ClusterRoleBinding", None, "edgexds-tokenreview")]
    assert rules(objects["ClusterRole", None, "edgexds-tokenreview"]) == [("create", "tokenreviews")]
    assert rules(objects["ClusterRole", None, "edgexds-nodes"]) == NODE_VERBS
    uninstall(cluster, objects)


def test_install_with_every_option_on(cluster):
    cluster.ensure_namespace("shop", "payments")
    objects = install(cluster, ALL_ON)
    name = "edgexds-full"
    pod = objects["Deployment", "edge", name]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    for flag in ["--namespaces=shop,payments", "--selector=edgexds.io/expose=true", "--debounce=250ms",
                 "--send-unhealthy-endpoints", "--typed-metadata", "--log-format=text", "--log-level=debug",
                 "--log-level=info,edgexds::xds=debug"]:
        assert flag in args
    assert pod["serviceAccountName"] == "edgexds-sa"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "exds"
    assert objects["PodDisruptionBudget", "edge", name]["spec"]["minAvailable"] == 2
    policy = objects["NetworkPolicy", "edge", name]["spec"]
    assert [rule["ports"][0]["port"] for rule in policy["ingress"]] == ["grpc-xds", "http-admin", "https-webhook"]
    assert "from" not in policy["ingress"][2], "the API server reaches the webhook from wherever it runs"
    for flag in ["--active-health-checks=hds", "--hds-checkers-per-endpoint=3", "--hds-report-interval=250ms",
                 "--hds-checker-identities=edge/edgexds-full-checker,shop/web", "--admin-identities=monitoring/ops",
                 "--xds-auth=mtls,token", "--xds-token-audience=edgexds-edge",
                 "--xds-client-ca=/var/run/edgexds/client-ca/ca.crt"]:
        assert flag in args
    assert [v["secret"]["secretName"] for v in pod["volumes"]] == ["mesh-xds-tls", "mesh-client-ca"]
    # An existing Secret: the chart generates none and asks cert-manager for nothing.
    assert not [k for k in objects if k[0] in ("Secret", "Certificate", "Issuer")]
    # HDS checkers: one Envoy per node, reaching edgexds through its Service, told its node name.
    checkers = objects["DaemonSet", "edge", name + "-checker"]["spec"]
    checker_pod = checkers["template"]["spec"]
    envoy = checker_pod["containers"][0]
    assert envoy["image"] == "registry.example.com/envoyproxy/envoy:v1.40.0"
    config_yaml = envoy["args"].index("--config-yaml")
    assert envoy["args"][config_yaml + 1] == '{"node":{"metadata":{"node_name":"$(NODE_NAME)"}}}'
    # As the server stores it: it defaults fieldRef.apiVersion.
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}} in envoy["env"]
    assert envoy["securityContext"]["readOnlyRootFilesystem"] is True
    assert checker_pod["priorityClassName"] == "system-node-critical"
    # The checkers' only credential: a token for edgexds alone, bound to the pod, and the CA.
    assert checker_pod["automountServiceAccountToken"] is False
    assert checker_pod["serviceAccountName"] == name + "-checker"
    assert objects["ServiceAccount", "edge", name + "-checker"]["automountServiceAccountToken"] is False
    sources = checker_pod["volumes"][1]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"] == {"audience": "edgexds-edge", "expirationSeconds": 3600, "path": "token"}
    assert sources[1]["secret"] == {"name": "mesh-xds-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    bootstrap = yaml.safe_load(objects["ConfigMap", "edge", name + "-checker"]["data"]["bootstrap.yaml"])
    assert bootstrap["hds_config"]["api_type"] == "GRPC"
    service = bootstrap["hds_config"]["grpc_services"][0]["google_grpc"]
    assert service["target_uri"] == name + ".edge.svc:18000"
    assert service["channel_credentials"]["ssl_credentials"]["root_certs"] == {"filename": "/var/run/edgexds/ca.crt"}
    assert service["call_credentials"][0]["from_plugin"]["typed_config"]["secret_data"] == {"filename": "/var/run/edgexds/token"}
    # The control plane's Service and Deployment must never select checker pods.
    service_selector = objects["Service", "edge", name]["spec"]["selector"]
    checker_labels = checkers["template"]["metadata"]["labels"]
    assert not all(checker_labels.get(k) == v for k, v in service_selector.items())
    # The real server has no monitoring.coreos.com API: no ServiceMonitor is rendered.
    assert not [k for k in objects if k[0] == "ServiceMonitor"]
    uninstall(cluster, objects, release="edgexds")


# cert-manager, where its API exists: the chart asks it for the certificate instead.

@pytest.fixture
def cert_manager_crds(cluster):
    crds = sorted((cluster.bin_dir / "cert-manager-crds").glob("*.yaml"))
    assert crds, f"tests/k8s/build puts cert-manager's CRDs in {cluster.bin_dir}/cert-manager-crds"
    for crd in crds:
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io", "crd/clusterissuers.cert-manager.io")
    yield
    for crd in crds:
        cluster.kubectl("delete", "--wait=true", "-f", str(crd))


def test_with_cert_manager_the_chart_asks_it_for_a_ca_and_a_renewable_serving_certificate(cluster, cert_manager_crds):
    objects = install(cluster, release="edgexds", namespace="cm")
    kinds = sorted((kind, name) for kind, ns, name in objects if kind in ("Secret", "Certificate", "Issuer"))
    assert kinds == [("Certificate", "edgexds-xds"), ("Certificate", "edgexds-xds-ca"),
                     ("Issuer", "edgexds-selfsigned"), ("Issuer", "edgexds-xds-ca")]
    serving = objects["Certificate", "cm", "edgexds-xds"]["spec"]
    assert serving["secretName"] == "edgexds-xds-tls"
    assert serving["dnsNames"] == ["edgexds", "edgexds.cm", "edgexds.cm.svc", "edgexds.cm.svc.cluster.local"]
    assert serving["issuerRef"] == {"name": "edgexds-xds-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert objects["Certificate", "cm", "edgexds-xds-ca"]["spec"]["isCA"] is True
    pod = objects["Deployment", "cm", "edgexds"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "edgexds-xds-tls"
    # The webhook serves the same certificate; cert-manager's CA injector fills in its CA.
    webhook = objects["MutatingWebhookConfiguration", "cm", "edgexds-cm-inject"]
    assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "cm/edgexds-xds"
    assert all("caBundle" not in w["clientConfig"] for w in webhook["webhooks"])
    uninstall(cluster, objects, namespace="cm")

    # With an issuer of the platform's own, the chart creates no CA of its own.
    objects = install(cluster, {"xds": {"tls": {"issuerRef": {"kind": "ClusterIssuer", "name": "mesh-ca"}}}},
                      release="edgexds", namespace="cm")
    kinds = sorted((kind, name) for kind, ns, name in objects if kind in ("Secret", "Certificate", "Issuer"))
    assert kinds == [("Certificate", "edgexds-xds")]
    assert objects["Certificate", "cm", "edgexds-xds"]["spec"]["issuerRef"] == {
        "name": "mesh-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    uninstall(cluster, objects, namespace="cm")


# RBAC, least privilege for real: edgexds runs with the chart's ServiceAccount token.

def shop(namespace: str) -> list[dict]:
    """A Service, its EndpointSlice and a HealthProbe: every watch has something to list. No
    traffic is ever sent here: the address is TEST-NET-1's (RFC 5737), never a real host's."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": namespace, "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
         "endpoints": [{"addresses": ["192.0.2.1"], "conditions": {"ready": True}}]},
        {"apiVersion": "edgexds.io/v1alpha1", "kind": "HealthProbe", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"targetRef": {"name": "web"}, "http": {}}},
        *({"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind, "metadata": {"name": "web", "namespace": namespace},
           "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
                    "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}}
          for kind in ROUTE_KINDS),
    ]


ROUTE_KINDS = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes"}


@pytest.fixture
def rbac_release(cluster):
    """The chart installed with default values (cluster-wide RBAC) and a shop to watch."""
    cluster.ensure_namespace("rbac-shop")
    cluster.apply(*shop("rbac-shop"))
    objects = install(cluster, release="edgexds", namespace="edge")
    yield objects
    uninstall(cluster, objects)


def accepted(cluster: Cluster, namespace: str) -> bool:
    """The probe's status and each route's entry for its Service are written."""
    probe = cluster.get("healthprobe", "web", namespace) or {}
    conditions = probe.get("status", {}).get("conditions", [])
    routes = [cluster.get(plural, "web", namespace) or {} for plural in ROUTE_KINDS.values()]
    parents = [r.get("status", {}).get("parents", []) for r in routes]
    return (any(c["type"] == "Accepted" and c["status"] == "True" for c in conditions)
            and all(any(p["controllerName"] == "edgexds.io/mesh" for p in each) for each in parents))


def clear_status(cluster: Cluster, namespace: str):
    """Leaves edgexds a status to write."""
    for resource in ["healthprobe", *ROUTE_KINDS.values()]:
        cluster.kubectl("patch", resource, "web", "-n", namespace, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": None}))


def serves_and_writes_status(cluster: Cluster, kubeconfig: str, namespace: str, *args: str):
    clear_status(cluster, namespace)
    edgexds = Edgexds(kubeconfig, *args)
    edgexds.until("ready", lambda: edgexds.get("/readyz")[0] == 200)
    edgexds.until("status written", lambda: accepted(cluster, namespace))
    assert edgexds.metric("edgexds_kube_watch_failures_total") == 0
    assert edgexds.metric('edgexds_kube_status_writes_total{result="failed"}') == 0
    assert edgexds.metric('edgexds_kube_route_status_writes_total{result="failed"}') == 0
    edgexds.stop()


def without(cluster: Cluster, kind: str, name: str, namespace: str | None, verb: str, resource: str):
    """Replaces the role's rules by the same rules less `verb` on `resource`, and waits until the
    API server's authorizer has seen it."""
    role = cluster.get(kind, name, namespace)
    rules = []
    for rule in role["rules"]:
        for each in rule["resources"]:
            verbs = [v for v in rule["verbs"] if (v, each) != (verb, resource)]
            if verbs:
                rules.append({**rule, "resources": [each], "verbs": verbs})
    cluster.apply({"apiVersion": role["apiVersion"], "kind": kind,
                   "metadata": {"name": name, **({"namespace": namespace} if namespace else {})}, "rules": rules})
    plural, _, subresource = resource.partition("/")
    group = {"services": "", "nodes": "", "endpointslices": ".discovery.k8s.io", "healthprobes": ".edgexds.io",
             "httproutes": ".gateway.networking.k8s.io", "grpcroutes": ".gateway.networking.k8s.io"}[plural]
    can_i = ["auth", "can-i", verb, plural + group, "--as=system:serviceaccount:edge:edgexds"]
    can_i += [f"--subresource={subresource}"] if subresource else []
    can_i += ["-n", namespace or "rbac-shop"]
    deadline = time.monotonic() + PATIENCE
    while cluster.kubectl(*can_i, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"{verb} {resource} still allowed"
        time.sleep(0.1)


KIND_OF = {"services": "service", "endpointslices": "endpointslice", "healthprobes": "healthprobe", "nodes": "node",
           "httproutes": "httproute", "grpcroutes": "grpcroute"}


def fails_visibly(cluster: Cluster, kubeconfig: str, namespace: str, verb: str, resource: str, *args: str):
    clear_status(cluster, namespace)
    edgexds = Edgexds(kubeconfig, *args)
    if resource == "healthprobes/status":
        edgexds.until("a failed status write", lambda: edgexds.metric('edgexds_kube_status_writes_total{result="failed"}') > 0)
        said = edgexds.stop()
        assert "cannot write status" in said and "forbidden" in said, said
        return
    if resource.endswith("routes/status"):
        edgexds.until("a failed route status write",
                      lambda: edgexds.metric('edgexds_kube_route_status_writes_total{result="failed"}') > 0)
        said = edgexds.stop()
        assert "cannot write route status" in said and "forbidden" in said, said
        return
    kind = KIND_OF[resource]
    edgexds.until(f"a refused {verb} of {resource}",
                  lambda: edgexds.metric(f'edgexds_kube_watch_failures_total{{kind="{kind}",code="403"}}') > 0)
    assert edgexds.metric("edgexds_kube_watches_failing") >= 1
    if verb == "list":
        assert edgexds.get("/readyz")[0] == 503, "not ready: it has nothing true to serve"
    said = edgexds.stop()
    assert "watch failed" in said and "forbidden" in said, said


def test_the_charts_cluster_role_is_exactly_enough(cluster, rbac_release, tmp_path):
    kubeconfig = cluster.token_kubeconfig(tmp_path, "edge", "edgexds")
    serves_and_writes_status(cluster, kubeconfig, "rbac-shop")


@pytest.mark.parametrize("verb,resource", [tuple(v) for v in json.loads((ROOT / "tests" / "rbac-verbs.json").read_text())],
                         ids=lambda v: v)
def test_without_any_one_cluster_role_rule_edgexds_fails_visibly(cluster, rbac_release, tmp_path, verb, resource):
    without(cluster, "ClusterRole", "edgexds", None, verb, resource)
    fails_visibly(cluster, cluster.token_kubeconfig(tmp_path, "edge", "edgexds"), "rbac-shop", verb, resource)


@pytest.mark.parametrize("verb,resource", NODE_VERBS, ids=lambda v: v)
def test_without_either_node_rule_edgexds_fails_visibly(cluster, rbac_release, tmp_path, verb, resource):
    without(cluster, "ClusterRole", "edgexds-nodes", None, verb, resource)
    fails_visibly(cluster, cluster.token_kubeconfig(tmp_path, "edge", "edgexds"), "rbac-shop", verb, resource)


def test_namespaced_roles_are_enough_and_each_rule_is_needed(cluster, tmp_path):
    cluster.ensure_namespace("orders", "payments")
    for namespace in ["orders", "payments"]:
        cluster.apply(*shop(namespace))
    objects = install(cluster, {"watchNamespaces": ["orders", "payments"]})
    try:
        kubeconfig = cluster.token_kubeconfig(tmp_path, "edge", "edgexds")
        serves_and_writes_status(cluster, kubeconfig, "payments", "--namespaces=orders,payments")
        for verb, resource in RBAC_VERBS:
            role = objects["Role", "payments", "edgexds"]
            without(cluster, "Role", "edgexds", "payments", verb, resource)
            fails_visibly(cluster, kubeconfig, "payments", verb, resource, "--namespaces=orders,payments")
            cluster.apply({"apiVersion": role["apiVersion"], "kind": "Role",
                           "metadata": {"name": "edgexds", "namespace": "payments"}, "rules": role["rules"]})
    finally:
        uninstall(cluster, objects)


def test_uninstall_removes_the_webhook_configuration_before_the_service_behind_it(cluster):
    """Pod creation must never wait on a webhook whose Service is gone: the API server's own
    watch events, ordered by their resourceVersions (one etcd revision for all), show the
    order Helm deleted them in."""
    objects = install(cluster, release="edgexds", namespace="order")

    def events(watcher: subprocess.Popen):
        decoder, buffered = json.JSONDecoder(), ""
        for line in watcher.stdout:
            buffered += line
            try:
                event, _ = decoder.raw_decode(buffered.strip())
            except json.JSONDecodeError:
                continue
            buffered = ""
            yield event

    watches = {}
    for kind, name, namespace in [("mutatingwebhookconfigurations", "edgexds-order-inject", None),
                                  ("services", "edgexds", "order")]:
        args = [cluster.kubectl_binary, f"--kubeconfig={cluster.kubeconfig}", "get", kind,
                f"--field-selector=metadata.name={name}", "--watch", "--output-watch-events", "-o", "json"]
        watcher = subprocess.Popen(args + (["-n", namespace] if namespace else []), stdout=subprocess.PIPE, text=True)
        stream = events(watcher)
        assert next(stream)["type"] == "ADDED", "the watch is open: it listed the object"
        watches[kind] = (watcher, stream)
    uninstall(cluster, objects, namespace="order")
    deleted = {}
    for kind, (watcher, stream) in watches.items():
        deleted[kind] = next(int(e["object"]["metadata"]["resourceVersion"]) for e in stream if e["type"] == "DELETED")
        watcher.kill()
    assert deleted["mutatingwebhookconfigurations"] < deleted["services"], deleted


class OlderVersion:
    """The real API server behind a plain-HTTP proxy on loopback that reports another Kubernetes
    version at /version, as a cluster older than the test server would: Helm takes its
    Capabilities.KubeVersion from there."""

    def __init__(self, cluster: Cluster, version: str, directory: pathlib.Path):
        config = json.loads(pathlib.Path(cluster.kubeconfig).read_text())
        user = config["users"][0]["user"]
        context = ssl.create_default_context(cafile=cluster.ca)
        context.load_cert_chain(user["client-certificate"], user["client-key"])
        upstream = cluster.url

        class Handler(http.server.BaseHTTPRequestHandler):
            def forward(self):
                if self.path.split("?")[0] == "/version":
                    body = json.dumps({"major": "1", "minor": version.split(".")[1], "gitVersion": f"v{version}",
                                       "platform": "linux/amd64"}).encode()
                    status, headers = 200, {"Content-Type": "application/json"}
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    request = urllib.request.Request(upstream + self.path, data=self.rfile.read(length) if length else None,
                                                     method=self.command,
                                                     headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    try:
                        with urllib.request.urlopen(request, context=context, timeout=30) as reply:
                            status, headers, body = reply.status, dict(reply.headers), reply.read()
                    except urllib.error.HTTPError as error:
                        status, headers, body = error.code, dict(error.headers), error.read()
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = directory / "older.kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "older",
            "clusters": [{"name": "older", "cluster": {"server": f"http://127.0.0.1:{self.server.server_port}"}}],
            "contexts": [{"name": "older", "context": {"cluster": "older", "user": "none"}}],
            "users": [{"name": "none", "user": {}}],
        }))

    def close(self):
        self.server.shutdown()


def test_with_injection_on_a_cluster_older_than_1_29_is_refused_with_why(cluster, tmp_path):
    older = OlderVersion(cluster, "1.28.9", tmp_path)
    try:
        config = helm.Configuration(namespace="older", kubeconfig=str(older.kubeconfig))
        with pytest.raises(helm.InstallError, match="injection needs Kubernetes 1.29 or newer"):
            asyncio.run(helm.Install(config).run("edgexds", str(CHART), values=None, wait=False, timeout=60,
                                                 create_namespace=True))
        # The same cluster takes the chart with injection off.
        result = asyncio.run(helm.Install(config).run("edgexds", str(CHART), values={"injection": {"enabled": False}},
                                                      wait=False, timeout=60, create_namespace=True))
        assert result["info"]["status"] == "deployed"
        asyncio.run(helm.Uninstall(config).run("edgexds", wait=False))
    finally:
        older.close()


def test_every_alert_has_a_severity_a_summary_a_description_a_runbook_section_and_both_promtool_cases():
    rules = yaml.safe_load((CHART / "files" / "edgexds.rules.yaml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"] if "alert" in r]
    runbook = (ROOT / "docs" / "operations.md").read_text()
    anchors = {line[4:].strip().lower() for line in runbook.splitlines() if line.startswith("### ")}
    cases = {t["name"] for t in yaml.safe_load((ROOT / "tests" / "prometheus" / "edgexds.rules.test.yaml").read_text())["tests"]}
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert alert["annotations"]["summary"] and "{{" in alert["annotations"]["description"], name
        url = alert["annotations"]["runbook_url"]
        assert url.endswith(f"docs/operations.md#{name.lower()}") and name.lower() in anchors, f"{name}: no section in docs/operations.md"
        assert {f"{name} fires", f"{name} stays quiet"} <= cases, f"{name}: promtool cases"


@pytest.fixture
def operator_crds(cluster):
    directory = pathlib.Path(os.environ.get("EDGEXDS_PROMETHEUS_BIN", "")) / "operator-crds"
    crds = sorted(directory.glob("*.yaml"))
    assert crds, f"tests/prometheus/build puts the Prometheus Operator's CRDs in {directory} (EDGEXDS_PROMETHEUS_BIN)"
    for crd in crds:
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
    yield
    for crd in crds:
        cluster.kubectl("delete", "--wait=true", "-f", str(crd))


def test_with_the_prometheus_operator_the_chart_ships_its_rules_and_scrape_config_and_the_server_accepts_them(
        cluster, operator_crds):
    objects = install(cluster, {"serviceMonitor": {"enabled": True}}, release="edgexds", namespace="mon")
    rule = objects["PrometheusRule", "mon", "edgexds"]
    shipped = yaml.safe_load((CHART / "files" / "edgexds.rules.yaml").read_text())
    assert rule["spec"] == shipped, "the PrometheusRule is the promtool-tested rules file, as stored by the server"
    monitor = objects["ServiceMonitor", "mon", "edgexds"]
    assert monitor["spec"]["endpoints"] == [{"port": "http-admin", "path": "/metrics", "interval": "30s"}]
    uninstall(cluster, objects, namespace="mon")
