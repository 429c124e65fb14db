"""The Helm chart, checked with the real Helm library (helm-sdkpy) against a real
kube-apiserver and etcd (the suite's `kube-test-server`, built from their Go modules).

Lint runs strictly (any warning fails). Installs, upgrades and uninstalls go to the real
server, whose own validation accepts or refuses every object, and the stored objects are
read back with the real kubectl. The chart's RBAC is then proven by running edgexds with
its ServiceAccount's token: with every rule it serves and writes status, and without any
one rule it fails visibly.
"""

import asyncio
import json
import pathlib
import shutil
import time
import tomllib

import helm_sdkpy as helm
import pytest
import yaml
from realparts import PATIENCE, Cluster, Edgexds  # tests/py, put on the path by conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgexds"
ALL_ON = yaml.safe_load((ROOT / "tests" / "helm" / "values-all-on.yaml").read_text())
RBAC_VERBS = sorted(tuple(v) for v in json.loads((ROOT / "tests" / "rbac-verbs.json").read_text()))

WARNING = 2  # Helm lint severities: 1 info, 2 warning, 3 error


def lint(chart: pathlib.Path) -> list[dict]:
    result = asyncio.run(helm.Lint(helm.Configuration()).run(str(chart)))
    return result.get("Messages") or []


def chart_with_values(tmp_path: pathlib.Path, values: dict) -> pathlib.Path:
    copy = tmp_path / "edgexds"
    shutil.copytree(CHART, copy)
    (copy / "values.yaml").write_text(yaml.safe_dump(values))
    return copy


def merged(overrides: dict) -> dict:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


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
    ],
    ids=["negative-replicas", "unknown-log-format", "bad-debounce", "port-out-of-range", "bad-pull-policy", "bad-namespace", "unknown-key",
         "unknown-health-check-mode", "no-checkers-per-endpoint", "checkers-without-hds"],
)
def test_values_schema_rejects_bad_values(tmp_path, bad):
    messages = lint(chart_with_values(tmp_path, merged(bad)))
    assert any(m["Severity"] > WARNING for m in messages), messages


def test_chart_crd_is_the_generated_crd_byte_for_byte():
    assert (CHART / "crds" / "healthprobes.edgexds.io.yaml").read_bytes() == (ROOT / "crds" / "healthprobes.edgexds.io.yaml").read_bytes()


def test_chart_app_version_is_the_crate_version():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == cargo["workspace"]["package"]["version"]
    assert chart["apiVersion"] == "v2"


async def _release(action, cluster: Cluster, release: str, namespace: str, values: dict | None, **options) -> dict:
    config = helm.Configuration(namespace=namespace, kubeconfig=cluster.kubeconfig)
    return await action(config).run(release, str(CHART), values=values, wait=False, timeout=60, **options)


def install(cluster: Cluster, values: dict | None = None, release: str = "edgexds", namespace: str = "edge") -> dict:
    """Installs the chart into the real server; returns {(kind, namespace, name): object as the server stored it}."""
    result = asyncio.run(_release(helm.Install, cluster, release, namespace, values, create_namespace=True))
    assert result["info"]["status"] == "deployed"
    return stored_objects(cluster, result, namespace)


def upgrade(cluster: Cluster, values: dict | None, release: str = "edgexds", namespace: str = "edge") -> dict:
    result = asyncio.run(_release(helm.Upgrade, cluster, release, namespace, values))
    assert result["info"]["status"] == "deployed"
    return stored_objects(cluster, result, namespace)


def uninstall(cluster: Cluster, objects: dict, release: str = "edgexds", namespace: str = "edge"):
    config = helm.Configuration(namespace=namespace, kubeconfig=cluster.kubeconfig)
    asyncio.run(helm.Uninstall(config).run(release, wait=False))
    # Helm never deletes what it installs from crds/: the HealthProbes outlive a release.
    left = [key for key in objects if key[0] != "CustomResourceDefinition" and cluster.get(key[0], key[2], key[1])]
    assert left == [], f"left behind by uninstall: {left}"


def stored_objects(cluster: Cluster, release: dict, namespace: str) -> dict:
    objects = {}
    rendered = [o for o in yaml.safe_load_all(release["manifest"]) if o]
    crds = [yaml.safe_load(p.read_text()) for p in (CHART / "crds").glob("*.yaml")]
    for obj in rendered + crds:
        kind, name = obj["kind"], obj["metadata"]["name"]
        scoped = None if kind.startswith("Cluster") or kind == "CustomResourceDefinition" else obj["metadata"].get("namespace", namespace)
        stored = cluster.get(kind, name, scoped)
        assert stored is not None, f"{kind} {scoped}/{name} was not stored by the API server"
        objects[kind, scoped, name] = stored
    return objects


def rules(role: dict) -> list[tuple[str, str]]:
    return sorted((verb, resource) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"])


def test_install_with_defaults_creates_a_small_restricted_deployment_with_exact_rbac(cluster):
    objects = install(cluster)
    kinds = sorted((kind, ns or "", name) for kind, ns, name in objects)
    print("\nrendered resources for default values:", *kinds, sep="\n  ")
    assert kinds == [
        ("ClusterRole", "", "edgexds"),
        ("ClusterRoleBinding", "", "edgexds"),
        ("CustomResourceDefinition", "", "healthprobes.edgexds.io"),
        ("Deployment", "edge", "edgexds"),
        ("Service", "edge", "edgexds"),
        ("ServiceAccount", "edge", "edgexds"),
    ]
    assert rules(objects["ClusterRole", None, "edgexds"]) == RBAC_VERBS
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
    uninstall(cluster, upgraded)


def test_install_with_watch_namespaces_grants_only_namespaced_roles(cluster):
    # Roles go into the watched namespaces, which must exist: the real server refuses otherwise.
    cluster.ensure_namespace("shop", "payments")
    objects = install(cluster, {"watchNamespaces": ["shop", "payments"]})
    assert not [k for k in objects if k[0].startswith("Cluster")]
    for namespace in ["shop", "payments"]:
        assert rules(objects["Role", namespace, "edgexds"]) == RBAC_VERBS
        assert objects["RoleBinding", namespace, "edgexds"]["subjects"][0]["namespace"] == "edge"
    args = objects["Deployment", "edge", "edgexds"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespaces=shop,payments" in args
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
    assert [rule["ports"][0]["port"] for rule in policy["ingress"]] == ["grpc-xds", "http-admin"]
    for flag in ["--active-health-checks=hds", "--hds-checkers-per-endpoint=3", "--hds-report-interval=250ms"]:
        assert flag in args
    # HDS checkers: one Envoy per node, reaching edgexds through its Service, told its node name.
    checkers = objects["DaemonSet", "edge", name + "-checker"]["spec"]
    checker_pod = checkers["template"]["spec"]
    envoy = checker_pod["containers"][0]
    assert envoy["image"] == "registry.example.com/envoyproxy/envoy:v1.40.0"
    assert '--config-yaml={"node":{"metadata":{"node_name":"$(NODE_NAME)"}}}' in envoy["args"]
    # As the server stores it: it defaults fieldRef.apiVersion.
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}} in envoy["env"]
    assert envoy["securityContext"]["readOnlyRootFilesystem"] is True
    assert checker_pod["priorityClassName"] == "system-node-critical"
    assert checker_pod["automountServiceAccountToken"] is False
    bootstrap = yaml.safe_load(objects["ConfigMap", "edge", name + "-checker"]["data"]["bootstrap.yaml"])
    assert bootstrap["hds_config"]["api_type"] == "GRPC"
    address = bootstrap["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"]["socket_address"] == {"address": name + ".edge.svc", "port_value": 18000}
    # The control plane's Service and Deployment must never select checker pods.
    service_selector = objects["Service", "edge", name]["spec"]["selector"]
    checker_labels = checkers["template"]["metadata"]["labels"]
    assert not all(checker_labels.get(k) == v for k, v in service_selector.items())
    # The real server has no monitoring.coreos.com API: no ServiceMonitor is rendered.
    assert not [k for k in objects if k[0] == "ServiceMonitor"]
    uninstall(cluster, objects, release="edgexds")


# RBAC, least privilege for real: edgexds runs with the chart's ServiceAccount token.

def shop(namespace: str) -> list[dict]:
    """A Service, its EndpointSlice and a HealthProbe: every watch has something to list."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": namespace, "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
         "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]},
        {"apiVersion": "edgexds.io/v1alpha1", "kind": "HealthProbe", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"targetRef": {"name": "web"}, "http": {}}},
    ]


@pytest.fixture
def rbac_release(cluster):
    """The chart installed with default values (cluster-wide RBAC) and a shop to watch."""
    cluster.ensure_namespace("rbac-shop")
    cluster.apply(*shop("rbac-shop"))
    objects = install(cluster, release="edgexds", namespace="edge")
    yield objects
    uninstall(cluster, objects)


def accepted(cluster: Cluster, namespace: str) -> bool:
    probe = cluster.get("healthprobe", "web", namespace) or {}
    conditions = probe.get("status", {}).get("conditions", [])
    return any(c["type"] == "Accepted" and c["status"] == "True" for c in conditions)


def clear_status(cluster: Cluster, namespace: str):
    """Leaves edgexds a status to write."""
    cluster.kubectl("patch", "healthprobe", "web", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": None}))


def serves_and_writes_status(cluster: Cluster, kubeconfig: str, namespace: str, *args: str):
    clear_status(cluster, namespace)
    edgexds = Edgexds(kubeconfig, *args)
    edgexds.until("ready", lambda: edgexds.get("/readyz")[0] == 200)
    edgexds.until("status written", lambda: accepted(cluster, namespace))
    assert edgexds.metric("edgexds_kube_watch_failures_total") == 0
    assert edgexds.metric('edgexds_kube_status_writes_total{result="failed"}') == 0
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
    group = {"services": "", "endpointslices": ".discovery.k8s.io", "healthprobes": ".edgexds.io"}[plural]
    can_i = ["auth", "can-i", verb, plural + group, "--as=system:serviceaccount:edge:edgexds"]
    can_i += [f"--subresource={subresource}"] if subresource else []
    can_i += ["-n", namespace or "rbac-shop"]
    deadline = time.monotonic() + PATIENCE
    while cluster.kubectl(*can_i, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"{verb} {resource} still allowed"
        time.sleep(0.1)


KIND_OF = {"services": "service", "endpointslices": "endpointslice", "healthprobes": "healthprobe"}


def fails_visibly(cluster: Cluster, kubeconfig: str, namespace: str, verb: str, resource: str, *args: str):
    clear_status(cluster, namespace)
    edgexds = Edgexds(kubeconfig, *args)
    if resource == "healthprobes/status":
        edgexds.until("a failed status write", lambda: edgexds.metric('edgexds_kube_status_writes_total{result="failed"}') > 0)
        said = edgexds.stop()
        assert "cannot write status" in said and "forbidden" in said, said
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


def test_namespaced_roles_are_enough_and_each_rule_is_needed(cluster, tmp_path):
    cluster.ensure_namespace("shop", "payments")
    for namespace in ["shop", "payments"]:
        cluster.apply(*shop(namespace))
    objects = install(cluster, {"watchNamespaces": ["shop", "payments"]})
    try:
        kubeconfig = cluster.token_kubeconfig(tmp_path, "edge", "edgexds")
        serves_and_writes_status(cluster, kubeconfig, "payments", "--namespaces=shop,payments")
        for verb, resource in RBAC_VERBS:
            role = objects["Role", "payments", "edgexds"]
            without(cluster, "Role", "edgexds", "payments", verb, resource)
            fails_visibly(cluster, kubeconfig, "payments", verb, resource, "--namespaces=shop,payments")
            cluster.apply({"apiVersion": role["apiVersion"], "kind": "Role",
                           "metadata": {"name": "edgexds", "namespace": "payments"}, "rules": role["rules"]})
    finally:
        uninstall(cluster, objects)
