"""A load run of the injection webhook, not a test: the chart installed into the real API
server, its webhook served by a pod on the test kubelet (as `tests/helm/test_inject.py` sets
it up), then N pods created one after another through the API in a namespace labelled for
injection and N in one that is not. Prints each side's creation latency (p50/p99, timed at
the client), the difference (what injection adds), and the webhook's own review time and the
API server's view of the call, from their metrics.

    sudo .venv/bin/python tests/py/inject_latency.py 1000
"""

import json
import pathlib
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "py"))
sys.path.insert(0, str(ROOT / "tests" / "helm"))

from realparts import Cluster  # noqa: E402
from test_inject import NAMESPACE, OFF, ON, PARKED_NODE, Release, app_pod  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    cluster = Cluster()
    try:
        cluster.apply(PARKED_NODE,
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ON, "labels": {"edgexds.io/inject": "enabled"}}},
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OFF}},
                      *({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": ns}} for ns in (ON, OFF)))
        release = Release(cluster, pathlib.Path(tempfile.mkdtemp()))
        config = json.loads(pathlib.Path(cluster.kubeconfig).read_text())
        user = config["users"][0]["user"]
        context = ssl.create_default_context(cafile=cluster.ca)
        context.load_cert_chain(user["client-certificate"], user["client-key"])

        def create(namespace: str, name: str) -> float:
            body = json.dumps(app_pod(namespace, name)).encode()
            request = urllib.request.Request(f"{cluster.url}/api/v1/namespaces/{namespace}/pods", data=body,
                                             headers={"Content-Type": "application/json"}, method="POST")
            started = time.perf_counter()
            with urllib.request.urlopen(request, context=context, timeout=30) as reply:
                reply.read()
            return time.perf_counter() - started

        timings = {ON: [], OFF: []}
        for i in range(count):  # interleaved, so both sides see the same machine
            for namespace in (ON, OFF):
                timings[namespace].append(create(namespace, f"load-{i}"))
        for namespace, label in ((ON, "injected"), (OFF, "not injected")):
            ms = [t * 1000 for t in timings[namespace]]
            print(f"{label:>13}: p50 {percentile(ms, 0.5):6.2f} ms  p99 {percentile(ms, 0.99):6.2f} ms  mean {statistics.mean(ms):6.2f} ms")
        added = [(a - b) * 1000 for a, b in zip(sorted(timings[ON]), sorted(timings[OFF]))]
        print(f"added by injection: p50 {percentile(added, 0.5):.2f} ms, p99 {percentile(added, 0.99):.2f} ms")
        _, text = release.edgexds.get("/metrics", base=f"http://{release.webhook_ip}:19000")
        webhook = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                   if line.startswith("edgexds_inject_review_duration_seconds_")}
        mean = webhook["edgexds_inject_review_duration_seconds_sum"] / webhook["edgexds_inject_review_duration_seconds_count"]
        print(f"webhook's own review time: mean {mean * 1000:.3f} ms over {webhook['edgexds_inject_review_duration_seconds_count']:.0f}")
        raw = cluster.kubectl("get", "--raw", "/metrics").stdout
        rows = [line for line in raw.splitlines() if line.startswith("apiserver_admission_webhook_admission_duration_seconds")
                and "inject.edgexds.io" in line]
        sums = [float(r.rsplit(" ", 1)[1]) for r in rows if "_sum" in r.split("{")[0]]
        counts = [float(r.rsplit(" ", 1)[1]) for r in rows if "_count" in r.split("{")[0]]
        print(f"the API server's call of the webhook: mean {sum(sums) / max(sum(counts), 1) * 1000:.2f} ms over {sum(counts):.0f}")
        buckets = [(r.split('le="')[1].split('"')[0], float(r.rsplit(" ", 1)[1])) for r in rows
                   if "_bucket" in r and 'name="namespace.inject.edgexds.io"' in r]
        print("  its buckets (le: count):", ", ".join(f"{le}: {n:.0f}" for le, n in buckets))
        for namespace in (ON, OFF):
            cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--wait=false")
        release.close()
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
