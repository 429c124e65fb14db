"""The Helm chart through the real Helm library (helm-sdkpy): lint, and releases installed
into the suite's real kube-apiserver, read back as the server stored them."""

import asyncio
import pathlib
import shutil

import helm_sdkpy as helm
import yaml
from realparts import Cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgexds"


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
