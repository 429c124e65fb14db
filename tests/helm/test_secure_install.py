"""The chart's secure defaults, proven with real parts: the chart installed into the real
kube-apiserver, edgexds run exactly as its Deployment says (its arguments, its mounted TLS
Secret, its ServiceAccount's token), and real Envoys connecting the way the chart and the
examples tell them to: a sidecar from `examples/kubernetes/envoy-sidecar.yaml` and a checker
from the chart's own bootstrap, each with a projected-style token for audience `edgexds` and
the CA. Only what a kubelet would do is done by hand: writing the Secret's files, issuing the
tokens (TokenRequest), and the pods' addresses (the tests' loopback ports instead of Service
DNS names, with the name the certificate carries kept for verification).
"""

import base64
import json
import pathlib
import time
import urllib.request

import grpc
import pytest
import yaml
from charts import install, uninstall
from realparts import PATIENCE, Cluster, Edgexds, Envoy, free_port, outcome

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "secure"
SERVICE_NAME = f"edgexds.{NAMESPACE}.svc"  # what the chart's certificate names and clients dial
HDS = "/envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck"
DELTA_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (payloads here stay under 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


# A DeltaDiscoveryRequest for every cluster from node "probe": answered once a client is in.
CLUSTERS = field(1, field(1, b"probe")) + field(2, b"type.googleapis.com/envoy.config.cluster.v3.Cluster")


@pytest.fixture(scope="module")
def upstream(cluster):
    """The web Service's one pod, on the test kubelet: it answers every path, /healthz too."""
    cluster.ensure_namespace("shop")
    return cluster.run_pod("shop", "web-0", "web"), 8080


def shop() -> list[dict]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web-client", "namespace": "shop"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "edgexds.io/v1alpha1", "kind": "HealthProbe", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"targetRef": {"name": "web"}, "http": {}, "intervalMs": 1000}},
    ]


class Release:
    """The chart installed with its defaults plus HDS checkers, and edgexds running as its Deployment says."""

    def __init__(self, cluster: Cluster, directory: pathlib.Path):
        self.cluster, self.directory = cluster, directory
        self.objects = install(cluster, {"activeHealthChecks": {"mode": "hds"}, "hdsCheckers": {"enabled": True}},
                               namespace=NAMESPACE)
        secret = self.objects["Secret", NAMESPACE, "edgexds-xds-tls"]["data"]
        self.tls = directory / "tls"  # what the kubelet mounts at /var/run/edgexds/tls
        self.tls.mkdir()
        for key in ["tls.crt", "tls.key", "ca.crt"]:
            (self.tls / key).write_bytes(base64.b64decode(secret[key]))
        container = self.objects["Deployment", NAMESPACE, "edgexds"]["spec"]["template"]["spec"]["containers"][0]
        args = [a.replace("/var/run/edgexds/tls", str(self.tls)) for a in container["args"][1:]
                if not a.startswith(("--xds-addr=", "--admin-addr=", "--log-format=", "--webhook-addr="))]
        kubeconfig = cluster.token_kubeconfig(directory, NAMESPACE, "edgexds")
        self.edgexds = Edgexds(kubeconfig, *args, f"--webhook-addr=127.0.0.1:{free_port()}")
        self.edgexds.until("ready", lambda: self.edgexds.get("/readyz")[0] == 200)

    def credentials(self, name: str, namespace: str, account: str, *token_args: str) -> pathlib.Path:
        """A pod's /var/run/edgexds: a token for audience edgexds, and the CA."""
        directory = self.directory / name
        directory.mkdir()
        token = self.cluster.kubectl("create", "token", account, "-n", namespace, "--audience=edgexds",
                                     "--duration=1h", *token_args).stdout.strip()
        (directory / "token").write_text(token)
        (directory / "ca.crt").write_bytes((self.tls / "ca.crt").read_bytes())
        return directory

    def dial_here(self, grpc_service: dict, credentials: pathlib.Path) -> dict:
        """A google_grpc service as the chart or example wrote it, pointed at this edgexds."""
        text = json.dumps(grpc_service).replace("/var/run/edgexds", str(credentials))
        service = json.loads(text)
        assert service["google_grpc"]["target_uri"].split(":")[0] in (SERVICE_NAME, "edgexds.edgexds.svc")
        service["google_grpc"]["target_uri"] = self.edgexds.xds
        service["google_grpc"]["channel_args"] = {"args": {"grpc.ssl_target_name_override": {"string_value": SERVICE_NAME}}}
        return service

    def channel(self) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials((self.tls / "ca.crt").read_bytes())
        return grpc.secure_channel(self.edgexds.xds, credentials, options=[("grpc.ssl_target_name_override", SERVICE_NAME)])

    def close(self):
        said = self.edgexds.stop()
        uninstall(self.cluster, self.objects, namespace=NAMESPACE)
        return said


@pytest.fixture(scope="module")
def release(cluster, upstream, tmp_path_factory):
    cluster.apply(*shop())
    started = Release(cluster, tmp_path_factory.mktemp("secure"))
    yield started
    started.close()


def test_a_sidecar_from_the_example_syncs_over_tls_with_its_token_and_routes_traffic(release, upstream, tmp_path):
    bootstrap = yaml.safe_load((ROOT / "examples" / "kubernetes" / "envoy-sidecar.yaml").read_text())
    credentials = release.credentials("sidecar", "shop", "web-client")
    ads = bootstrap["dynamic_resources"]["ads_config"]
    ads["grpc_services"] = [release.dial_here(s, credentials) for s in ads["grpc_services"]]
    listener = free_port()
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listener
    sidecar = Envoy(tmp_path, "sidecar", bootstrap)
    try:
        endpoint = f"web.shop:80::{upstream[0]}:{upstream[1]}::"
        sidecar.until("the web cluster and its endpoint", lambda: endpoint in sidecar.get("/clusters"))
        with urllib.request.urlopen(f"http://127.0.0.1:{listener}/", timeout=5) as reply:
            assert (reply.status, reply.read()) == (200, b"web-0")
        proxies = json.loads(release.edgexds.get("/debug/proxies", base=release.edgexds.debug)[1])
        print("\n/debug/proxies:", json.dumps(proxies)[:600])
        assert [p["identity"] for p in proxies] == ["shop/web-client"], "the sidecar is known by its identity"
    finally:
        sidecar.stop()


def test_a_checker_from_the_charts_bootstrap_checks_endpoints_as_its_bound_node(release, tmp_path):
    config_map = release.objects["ConfigMap", NAMESPACE, "edgexds-checker"]
    bootstrap = yaml.safe_load(config_map["data"]["bootstrap.yaml"])
    example = (ROOT / "examples" / "kubernetes" / "envoy-checker.yaml").read_text()
    assert yaml.safe_load(example.replace("edgexds.edgexds.svc", SERVICE_NAME)) == bootstrap, \
        "examples/kubernetes/envoy-checker.yaml is the chart's checker bootstrap"
    # The DaemonSet's pod, as a kubelet would have it: bound to a node, so its token names that node.
    pod_name, node_name = "edgexds-checker-x7k2p", "edge-node-1"
    release.cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "namespace": NAMESPACE},
                           "spec": {"nodeName": node_name, "serviceAccountName": "edgexds-checker",
                                    "automountServiceAccountToken": False,
                                    "containers": [{"name": "envoy", "image": "envoy"}]}})
    credentials = release.credentials("checker", NAMESPACE, "edgexds-checker",
                                      "--bound-object-kind=Pod", f"--bound-object-name={pod_name}")
    hds = bootstrap["hds_config"]
    hds["grpc_services"] = [release.dial_here(s, credentials) for s in hds["grpc_services"]]
    daemon_set = release.objects["DaemonSet", NAMESPACE, "edgexds-checker"]["spec"]["template"]["spec"]
    # The DaemonSet's own arguments, as the kubelet expands them; the bootstrap goes by file here.
    args, given = [], iter(daemon_set["containers"][0]["args"])
    for arg in given:
        if arg == "--config-path":
            next(given)
        else:
            args.append(arg.replace("$(POD_NAME)", pod_name).replace("$(NODE_NAME)", node_name))
    checker = Envoy(tmp_path, "checker", bootstrap, *args)
    try:
        def checking():
            view = json.loads(release.edgexds.get("/debug/hds", base=release.edgexds.debug)[1] or "{}")
            ours = [c for c in view.get("checkers", []) if c["node_name"] == node_name and c["reports"] > 0]
            # Other tests' Services share this API server: only the shop's endpoint is ours.
            verdicts = [e["verdict"] for e in view.get("endpoints", []) if e["cluster"] == "web.shop:80"]
            return ours and verdicts == ["healthy"]

        checker.until("the checker reporting the endpoint healthy", checking)
    finally:
        checker.stop()


def test_without_a_token_or_with_another_identity_nobody_gets_in(release):
    channel = release.channel()
    code, message = outcome(channel, DELTA_ADS, True)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "token" in message, message
    sidecar = (release.credentials("intruder", "shop", "web-client") / "token").read_text()
    code, message = outcome(channel, HDS, True, sidecar)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "--hds-checker-identities" in message, message
    # A token for the Kubernetes API, not for edgexds, is refused by the TokenReview's audience check.
    api_token = release.cluster.kubectl("create", "token", "web-client", "-n", "shop").stdout.strip()
    code, message = outcome(channel, DELTA_ADS, True, api_token)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "audience" in message, message


def test_without_the_tokenreview_rule_new_tokens_are_refused_visibly_and_verified_ones_keep_working(release):
    """Runs last in this module: it takes the release's TokenReview permission away."""
    channel = release.channel()
    known = (release.credentials("known", "shop", "web-client") / "token").read_text()
    assert outcome(channel, DELTA_ADS, True, known, CLUSTERS) == (grpc.StatusCode.OK, "")
    release.cluster.kubectl("delete", "clusterrolebinding", "edgexds-tokenreview")
    can_i = ["auth", "can-i", "create", "tokenreviews.authentication.k8s.io", f"--as=system:serviceaccount:{NAMESPACE}:edgexds"]
    deadline = time.monotonic() + PATIENCE
    while release.cluster.kubectl(*can_i, check=False).returncode == 0:
        assert time.monotonic() < deadline, "create tokenreviews still allowed"
        time.sleep(0.1)
    fresh = (release.credentials("fresh", "shop", "web-client") / "token").read_text()
    code, message = outcome(channel, DELTA_ADS, True, fresh, CLUSTERS)
    assert code == grpc.StatusCode.UNAVAILABLE and "not allowed to create TokenReviews" in message, message
    assert release.edgexds.metric('edgexds_auth_token_reviews_total{result="forbidden"}') >= 1
    assert outcome(channel, DELTA_ADS, True, known, CLUSTERS) == (grpc.StatusCode.OK, ""), "a verified token keeps working"
