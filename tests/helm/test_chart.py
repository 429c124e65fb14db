"""The Helm chart, checked with the real Helm library (helm-sdkpy).

Lint runs strictly (any warning fails); installs go to kmock's Kubernetes
emulator, and the created objects are read back and checked.
"""

import asyncio
import json
import os
import pathlib
import shutil
import tomllib

# Helm keeps the release record in memory: the emulator cannot store protobuf-encoded Secrets.
os.environ.setdefault("HELM_DRIVER", "memory")

import aiohttp  # noqa: E402
import helm_sdkpy as helm  # noqa: E402
import kmock  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

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


async def _install(values: dict | None, namespace: str = "edge") -> dict:
    """Installs the chart into a fresh emulated cluster; returns {(kind, namespace, name): object}."""
    async with kmock.KubernetesEmulator() as k8s, kmock.Server(k8s) as server:
        k8s.resources.load_bundled()
        url = str(server.url).rstrip("/")
        # kmock serves /api/v1 with groupVersion "/v1"; client-go needs "v1" to map core kinds.
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/api/v1") as response:
                core = await response.json()
        core["groupVersion"] = "v1"
        k8s["get /api/v1"] << core
        kubeconfig = yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": url}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "test", "namespace": namespace}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
        })
        config = helm.Configuration(namespace=namespace, kubeconfig=kubeconfig)
        release = await helm.Install(config).run("edgexds", str(CHART), values=values, wait=False, timeout=60)
        assert release["info"]["status"] == "deployed"
        return {(dict(obj)["kind"], ns, name): dict(obj) for (_, ns, name), obj in k8s.objects.items()}


def install(values: dict | None = None) -> dict:
    return asyncio.run(_install(values))


def rules(role: dict) -> list[tuple[str, str]]:
    return sorted((verb, resource) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"])


def test_install_with_defaults_creates_a_small_restricted_deployment_with_exact_rbac():
    objects = install()
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


def test_install_with_watch_namespaces_grants_only_namespaced_roles():
    objects = install({"watchNamespaces": ["shop", "payments"]})
    assert not [k for k in objects if k[0].startswith("Cluster")]
    for namespace in ["shop", "payments"]:
        assert rules(objects["Role", namespace, "edgexds"]) == RBAC_VERBS
        assert objects["RoleBinding", namespace, "edgexds"]["subjects"][0]["namespace"] == "edge"
    args = objects["Deployment", "edge", "edgexds"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespaces=shop,payments" in args


def test_install_with_every_option_on():
    objects = install(ALL_ON)
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
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in envoy["env"]
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
    # The emulated cluster has no monitoring.coreos.com API: no ServiceMonitor is rendered.
    assert not [k for k in objects if k[0] == "ServiceMonitor"]
