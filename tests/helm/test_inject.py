"""Sidecar injection, proven with real parts: the chart installed into the real kube-apiserver,
which calls the webhook over TLS through the chart's own MutatingWebhookConfiguration (its
selectors, its CA bundle, its Service) at a pod the test kubelet runs with the Deployment's
webhook arguments; the stored pod specs read back; and the injected sidecar run for real, a
real Envoy started with the stored spec's bootstrap, syncing with edgexds over TLS with the
pod's own bound token, while an app process with exactly the injected environment calls a
Service through it with curl and grpcio.

What a kubelet would do is done by hand, and only that: expanding `$(VAR)` from the downward
API, issuing the pod's token (TokenRequest), placing the token file, and the address edgexds
is dialled at (its loopback port instead of the Service's DNS name, the certificate's name
kept for verification). The webhook's pod runs edgexds on an empty manifests directory: pods
on the test kubelet cannot reach the API server, which listens on the host's loopback.

The same release also carries the operations checks that need edgexds as the chart runs it
(Kubernetes source, TLS, token auth, injection): the dashboard's series, and a real
Prometheus (built from its Go module) scraping it, with the alert rules firing and resolving.
"""

import base64
import json
import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import grpc
import pytest
from charts import install, uninstall
from realparts import PATIENCE, TARGET, Cluster, Edgexds, Envoy, Prometheus, free_port, outcome, until

NAMESPACE = "mesh-system"
SERVICE = f"edgexds.{NAMESPACE}.svc"
WEBHOOK = "edgexds-mesh-system-inject"
ON, OFF = "inject-on", "inject-off"
PARKED = "parked"  # a Node no kubelet runs: pods bound to it are stored and never started
# Unschedulable and tainted, so the scheduler never sends other tests' pods there.
PARKED_NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": PARKED},
               "spec": {"unschedulable": True, "taints": [{"key": "edgexds.io/parked", "effect": "NoSchedule"}]}}
ROOT = pathlib.Path(__file__).resolve().parents[2]


class Release:
    """The chart installed with its defaults (injection on), its webhook served by a pod."""

    def __init__(self, cluster: Cluster, directory: pathlib.Path):
        self.cluster, self.directory = cluster, directory
        self.objects = install(cluster, namespace=NAMESPACE)
        secret = self.objects["Secret", NAMESPACE, "edgexds-xds-tls"]["data"]
        self.tls = directory / "tls"  # what the kubelet mounts at /var/run/edgexds/tls
        self.tls.mkdir()
        for key in ["tls.crt", "tls.key", "ca.crt"]:
            (self.tls / key).write_bytes(base64.b64decode(secret[key]))
        deployment = self.objects["Deployment", NAMESPACE, "edgexds"]["spec"]["template"]
        self.container = deployment["spec"]["containers"][0]
        self.labels = deployment["metadata"]["labels"]
        empty = directory / "manifests"
        empty.mkdir()
        webhook_args = [a.replace("/var/run/edgexds/tls", str(self.tls)) for a in self.container["args"][1:]
                        if a.startswith(("--xds-tls-", "--webhook-addr=", "--inject-", "--xds-addr=", "--admin-addr="))]
        self.webhook_pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "edgexds-webhook", "namespace": NAMESPACE, "labels": self.labels},
            "spec": {"containers": [{
                "name": "edgexds", "image": "edgexds",
                "command": ["edgexds", "serve", f"--manifests={empty}", *webhook_args],
                "ports": self.container["ports"], "readinessProbe": self.container["readinessProbe"],
            }]},
        }
        cluster.apply(self.webhook_pod)
        self.webhook_ip = cluster.wait_ready(NAMESPACE, "edgexds-webhook")["status"]["podIP"]
        until("the Service lists the webhook's pod", self._listed)
        # edgexds as the Deployment runs it, for the sidecars to sync with.
        args = [a.replace("/var/run/edgexds/tls", str(self.tls)) for a in self.container["args"][1:]
                if not a.startswith(("--xds-addr=", "--admin-addr=", "--log-format=", "--webhook-addr="))]
        kubeconfig = cluster.token_kubeconfig(directory, NAMESPACE, "edgexds")
        self.edgexds = Edgexds(kubeconfig, *args, f"--webhook-addr=127.0.0.1:{free_port()}")
        self.edgexds.until("ready", lambda: self.edgexds.get("/readyz")[0] == 200)

    def _listed(self) -> bool:
        slices = self.cluster.kubectl("get", "endpointslices", "-n", NAMESPACE, "-l",
                                      "kubernetes.io/service-name=edgexds", "-o", "json").stdout
        return any(self.webhook_ip in e["addresses"] and e["conditions"].get("ready")
                   for s in json.loads(slices)["items"] for e in s.get("endpoints") or [])

    def review(self, pod: dict) -> dict:
        """Calls the webhook as the API server does: HTTPS to its pod, verified by the CA under
        the Service's name."""
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "reinvocation", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE", "userInfo": {"username": "test"}, "object": pod, "dryRun": False}}).encode()
        context = ssl.create_default_context(cafile=str(self.tls / "ca.crt"))
        port = next(p["containerPort"] for p in self.container["ports"] if p["name"] == "https-webhook")
        with socket.create_connection((self.webhook_ip, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=SERVICE) as tls:
                tls.sendall(b"POST /inject HTTP/1.1\r\nHost: " + SERVICE.encode() + b"\r\nContent-Type: application/json\r\n"
                            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                reply = b""
                while chunk := tls.recv(65536):
                    reply += chunk
        head, _, payload = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), reply[:300]
        if b"transfer-encoding: chunked" in head.lower():
            payload = dechunk(payload)
        return json.loads(payload)["response"]

    def close(self):
        said = self.edgexds.stop()
        self.cluster.kubectl("delete", "pod", "edgexds-webhook", "-n", NAMESPACE, "--ignore-not-found", "--wait=false")
        uninstall(self.cluster, self.objects, namespace=NAMESPACE)
        return said


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        if not (length := int(size, 16)):
            break
        out, data = out + data[:length], data[length + 2:]
    return out


@pytest.fixture(scope="module")
def release(cluster, tmp_path_factory):
    cluster.apply(PARKED_NODE,
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ON, "labels": {"edgexds.io/inject": "enabled"}}},
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OFF}},
                  *({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": ns}} for ns in (ON, OFF)))
    started = Release(cluster, tmp_path_factory.mktemp("inject"))
    yield started
    print(started.close()[-3000:])
    cluster.kubectl("delete", "node", PARKED, "--ignore-not-found")


def app_pod(namespace: str, name: str, labels: dict | None = None, annotations: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}, "annotations": annotations or {}},
            "spec": {"nodeName": PARKED, "serviceAccountName": "app",
                     "containers": [{"name": "app", "image": "app", "env": [{"name": "https_proxy", "value": "http://mine:3128"}]}]}}


def injected(pod: dict) -> bool:
    spec = pod["spec"]
    sidecar = [c for c in spec.get("initContainers", []) if c["name"] == "edgexds-proxy"]
    marked = "edgexds.io/injected-template" in (pod["metadata"].get("annotations") or {})
    proxied = any(e["name"] == "HTTP_PROXY" for e in spec["containers"][0].get("env", []))
    assert len(sidecar) == int(marked) == int(proxied), f"all or nothing: {json.dumps(spec)[:400]}"
    return marked


def test_pods_are_injected_where_namespace_and_pod_labels_say_and_never_in_system_namespaces(release):
    cluster = release.cluster
    cases = [
        (ON, "plain", {}, True),
        (ON, "opted-out", {"edgexds.io/inject": "false"}, False),
        (OFF, "plain", {}, False),
        (OFF, "opted-in", {"edgexds.io/inject": "true"}, True),
        *((ns, "opted-in", {"edgexds.io/inject": "true"}, False) for ns in ("kube-system", "kube-public", "kube-node-lease", NAMESPACE)),
    ]
    # Even labelled for injection, the system namespaces are never sent to the webhook.
    cluster.kubectl("label", "namespace", "kube-public", "edgexds.io/inject=enabled", "--overwrite")
    try:
        for namespace, name, labels, expected in cases:
            cluster.apply(app_pod(namespace, f"case-{name}", labels))
            stored = cluster.get("pod", f"case-{name}", namespace)
            assert injected(stored) == expected, f"{namespace}/{name}"
            cluster.kubectl("delete", "pod", f"case-{name}", "-n", namespace, "--wait=false")
    finally:
        cluster.kubectl("label", "namespace", "kube-public", "edgexds.io/inject-")
    stored = cluster.get("pod", "case-plain", ON) or {}
    print("\nan injected pod spec:", json.dumps(stored.get("spec", {})))


def test_the_injected_spec_is_a_native_sidecar_with_its_bootstrap_and_the_apps_proxy_env(release):
    release.cluster.apply(app_pod(ON, "shape"))
    pod = release.cluster.get("pod", "shape", ON)
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always" and sidecar["startupProbe"]["httpGet"]["path"] == "/ready"
    image = next(a.split("=", 1)[1] for a in release.container["args"] if a.startswith("--inject-image="))
    assert sidecar["image"] == image
    bootstrap = json.loads(sidecar["args"][1])
    assert bootstrap["node"]["cluster"] == "shape"
    grpc_service = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]
    assert grpc_service["target_uri"] == f"{SERVICE}:18000"
    ca = grpc_service["channel_credentials"]["ssl_credentials"]["root_certs"]["inline_string"]
    assert ca.encode() == (release.tls / "ca.crt").read_bytes(), "the CA travels in the pod spec"
    token = next(v for v in pod["spec"]["volumes"] if v["name"] == "edgexds-proxy")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "edgexds"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["HTTP_PROXY"] == env["grpc_proxy"] == env["HTTPS_PROXY"] == "http://127.0.0.1:15001"
    assert env["https_proxy"] == "http://mine:3128", "what the pod sets is left alone"
    assert "kubernetes.default.svc" in env["NO_PROXY"] and "$(EDGEXDS_POD_IP)" in env["NO_PROXY"]


def test_a_reinvocation_leaves_an_injected_pod_unchanged(release):
    release.cluster.apply(app_pod(ON, "again"))
    pod = release.cluster.get("pod", "again", ON)
    assert injected(pod)
    answer = release.review(pod)
    assert answer["allowed"] and "patch" not in answer, answer
    fresh = release.review(app_pod(ON, "fresh"))
    assert fresh["allowed"] and fresh.get("patchType") == "JSONPatch", "the same call injects a pod without its sidecar"


@pytest.mark.parametrize("annotation,value,says", [
    ("edgexds.io/proxy-image", "envoy proxy", "is not an image reference"),
    ("edgexds.io/proxy-cpu", "lots", "is not a quantity"),
    ("edgexds.io/proxy-memory-limit", "64MB", "is not a quantity"),
    ("edgexds.io/proxy-args", "--concurrency 2", "is not a JSON array of strings"),
    ("edgexds.io/proxy-args", '["--config-yaml", "{}"]', "would replace the sidecar's generated bootstrap"),
    ("edgexds.io/proxy-env", "off", "it takes \"true\" or \"false\""),
])
def test_each_bad_annotation_refuses_the_pod_with_its_message(release, annotation, value, says):
    pod = app_pod(ON, "annotated", annotations={annotation: value})
    result = release.cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(pod), check=False)
    assert result.returncode != 0, "refused"
    assert annotation in result.stderr and says in result.stderr, result.stderr


def test_the_injected_sidecar_runs_syncs_as_its_pod_and_carries_an_apps_traffic(release, cluster, tmp_path):
    cluster.run_pod(OFF, "web-0", "web")  # the upstream, not injected: OFF is unlabelled
    cluster.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": OFF},
                   "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})

    cluster.apply(app_pod(ON, "client"))
    pod = cluster.get("pod", "client", ON)
    sidecar = pod["spec"]["initContainers"][0]
    # The kubelet's part: the downward API's values, `$(VAR)` expanded, the token in place.
    downward = {"EDGEXDS_POD_NAME": "client", "EDGEXDS_POD_NAMESPACE": ON, "EDGEXDS_NODE_NAME": PARKED,
                "EDGEXDS_POD_IP": "127.0.0.1", "KUBERNETES_SERVICE_HOST": "127.0.0.1"}

    def expand(text: str) -> str:
        for name, value in downward.items():
            text = text.replace(f"$({name})", value)
        return text

    token_dir = tmp_path / "token"
    token_dir.mkdir()
    (token_dir / "token").write_text(cluster.kubectl(
        "create", "token", "app", "-n", ON, "--audience=edgexds", "--duration=1h",
        "--bound-object-kind=Pod", "--bound-object-name=client").stdout.strip())
    mount = next(m["mountPath"] for m in sidecar["volumeMounts"] if m["name"] == "edgexds-proxy")
    assert sidecar["args"][0] == "--config-yaml"
    bootstrap = json.loads(expand(sidecar["args"][1]).replace(mount, str(token_dir)))
    grpc_service = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["google_grpc"]
    grpc_service["target_uri"] = release.edgexds.xds
    grpc_service["channel_args"] = {"args": {"grpc.ssl_target_name_override": {"string_value": SERVICE}}}
    # Ports of the pod's own network namespace, which the host's loopback stands in for here.
    ready_port = free_port()
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"].update(address="127.0.0.1", port_value=ready_port)
    envoy = Envoy(tmp_path, "sidecar", bootstrap, *[expand(a) for a in sidecar["args"][2:]])
    try:
        until("the startup probe's /ready answers", lambda: ready(ready_port))
        proxies = json.loads(release.edgexds.get("/debug/proxies", base=release.edgexds.debug)[1])
        ours = [p for p in proxies if p["node_id"] == f"client.{ON}"]
        assert ours and ours[0]["identity"].startswith(f"{ON}/app"), proxies
        assert ours[0]["sidecar_template"] and not ours[0]["outdated"]
        release.edgexds.until("the sidecar counted as a synced delta Envoy", lambda: release.edgexds.metric(
            'edgexds_xds_proxies{flavour="delta",client="envoy",state="SYNCED"}') >= 1)
        assert release.edgexds.metric("edgexds_inject_outdated_sidecars") == 0

        # The app: exactly the injected environment, expanded as the kubelet does.
        app_env = {e["name"]: expand(e["value"]) for e in pod["spec"]["containers"][0]["env"] if "value" in e}
        env = {"PATH": os.environ["PATH"], **app_env}
        until("the sidecar routes web", lambda: curl(f"http://web.{OFF}/", env) == "web-0")
        grpcio = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tests/py/proxied_grpc.py"), f"web.{OFF}:80"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert grpcio.stdout.strip() == "web-0", grpcio.stdout + grpcio.stderr

        # A pod injected from an older template shows as drift.
        bootstrap["node"]["id"] = f"old.{ON}"
        bootstrap["node"]["metadata"]["edgexds.io/template"] = "0" * 16
        bootstrap["node"]["metadata"]["pod_name"] = "client"
        bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = free_port()
        old = Envoy(tmp_path, "old-sidecar", bootstrap)
        try:
            release.edgexds.until("the old sidecar counted", lambda: release.edgexds.metric("edgexds_inject_outdated_sidecars") == 1)
            status = subprocess.run([str(TARGET / "edgexds"), "proxy-status", f"--debug-url={release.edgexds.debug}"],
                                    capture_output=True, text=True)
            print(status.stdout)
            assert f"restart their workloads: old.{ON}" in status.stdout, status.stdout
            assert any(line.startswith(f"client.{ON}") and "current" in line for line in status.stdout.splitlines())
        finally:
            old.stop()
    finally:
        envoy.stop()


def ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def curl(url: str, env: dict) -> str:
    result = subprocess.run(["curl", "-sS", "--max-time", "5", url], env=env, capture_output=True, text=True)
    return result.stdout


def test_every_dashboard_panel_queries_metrics_this_edgexds_exports_through_a_templated_datasource(release):
    """edgexds as the chart runs it (Kubernetes source, TLS, token auth, injection): every
    series a panel names is one it exports."""
    dashboard = json.loads((ROOT / "charts" / "edgexds" / "files" / "dashboard.json").read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]][:1] == ["datasource"]
    _, text = release.edgexds.get("/metrics")
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] and t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:edgexds|process)_[a-z0-9_]+)", target["expr"]):
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert name in exported or base in exported, f"{panel['title']}: {name} is not exported"


def scaled_rules(directory: pathlib.Path) -> pathlib.Path:
    """The chart's alert rules with their windows and `for` durations in seconds instead of
    minutes, so a test sees them fire and resolve; the expressions are otherwise the same."""
    text = (ROOT / "charts" / "edgexds" / "files" / "edgexds.rules.yaml").read_text()
    text = re.sub(r"\[\d+m\]", "[15s]", text)
    text = re.sub(r"for: \d+m", "for: 0s", text)
    path = directory / "edgexds.rules.yaml"
    path.write_text(text)
    return path


def varint_field(number: int, payload: bytes) -> bytes:
    length, encoded = len(payload), b""
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return bytes([number << 3 | 2]) + encoded + payload


def test_a_real_prometheus_scrapes_edgexds_every_panel_has_data_under_load_and_the_nack_and_limit_alerts_fire_and_resolve(
        release, cluster, tmp_path):
    prometheus = Prometheus(tmp_path, [release.edgexds.admin[7:]], scaled_rules(tmp_path))
    try:
        dashboard = json.loads((ROOT / "charts" / "edgexds" / "files" / "dashboard.json").read_text())
        queries = [t["expr"].replace("$job", "edgexds") for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]

        def empty_panels():
            return [q for q in queries if not prometheus.query(q)]

        # And a second edgexds under the load tool's clients and churn, scraped beside it.
        # Its own process group: the server it starts goes with it, however the test ends.
        load = subprocess.Popen([str(TARGET / "edgexds-load"), "--server", str(TARGET / "edgexds"), "--clients", "20",
                                 "--services", "20", "--endpoints", "5", "--changes", "200", "--interval-ms", "200"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            loaded = next(line.split()[-1] for line in load.stderr if line.startswith("server admin:"))
            prometheus.add_target(loaded)
            until("the loaded edgexds is scraped with its clients",
                  lambda: prometheus.query(f'sum(edgexds_xds_proxies{{instance="{loaded}"}}) >= 20') or None)
            until("every dashboard query returns data while the load runs", lambda: not empty_panels() or None,
                  patience=2 * PATIENCE)
            assert load.poll() is None, "the load was still running"
        finally:
            os.killpg(load.pid, signal.SIGKILL)
            load.wait(timeout=30)
        assert prometheus.firing() == set(), "healthy, even under load, edgexds fires nothing"

        # A proxy that NACKs everything, with its own pod-bound token, and a client whose
        # requests hit the name-length limit over and over.
        token = tmp_path / "token"
        token.write_text(cluster.kubectl("create", "token", "app", "-n", ON, "--audience=edgexds", "--duration=1h").stdout.strip())
        nacking = subprocess.Popen([str(TARGET / "xds-nack-client"), release.edgexds.xds, str(release.tls / "ca.crt"), SERVICE,
                                    str(token), "nacking-proxy", ON], stdout=subprocess.PIPE, text=True)
        stop = threading.Event()

        def hit_the_name_limit():
            credentials = grpc.ssl_channel_credentials((release.tls / "ca.crt").read_bytes())
            channel = grpc.secure_channel(release.edgexds.xds, credentials, options=[("grpc.ssl_target_name_override", SERVICE)])
            request = (varint_field(1, varint_field(1, b"limit-prober"))
                       + varint_field(2, b"type.googleapis.com/envoy.config.cluster.v3.Cluster")
                       + varint_field(3, b"n" * 600))
            while not stop.is_set():
                outcome(channel, "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
                        True, token.read_text(), request)
                stop.wait(0.3)

        hitter = threading.Thread(target=hit_the_name_limit, daemon=True)
        hitter.start()
        try:
            assert nacking.stdout.readline().startswith("nacked"), "the client NACKed"
            until("both alerts fire", lambda: {"EdgexdsProxiesNacking", "EdgexdsLimitHitsSustained"} <= prometheus.firing() or None,
                  patience=2 * PATIENCE)
            print("\nfiring:", sorted(prometheus.firing()))
        finally:
            stop.set()
            nacking.terminate()
            hitter.join(timeout=10)
        until("both alerts resolve", lambda: not ({"EdgexdsProxiesNacking", "EdgexdsLimitHitsSustained"} & prometheus.firing()) or None,
              patience=2 * PATIENCE)
        assert not re.search(r"level=error", prometheus.log.read_text(), re.IGNORECASE), prometheus.log.read_text()[-2000:]
    finally:
        prometheus.stop()


def test_with_the_webhook_stopped_labelled_namespaces_refuse_pods_and_others_do_not(release):
    """Runs last in this module: it stops the webhook."""
    cluster = release.cluster
    cluster.kubectl("delete", "pod", "edgexds-webhook", "-n", NAMESPACE, "--wait=true", f"--timeout={PATIENCE}s")
    until("the Service lists no webhook", lambda: not release._listed())
    refused = cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(app_pod(ON, "unserved")), check=False)
    assert refused.returncode != 0
    print("\nthe API server says:", refused.stderr.strip())
    assert "failed calling webhook" in refused.stderr and "namespace.inject.edgexds.io" in refused.stderr, refused.stderr
    cluster.apply(app_pod(OFF, "unaffected"))
    assert not injected(cluster.get("pod", "unaffected", OFF))
