"""Proxyless gRPC: grpcio's own xDS resolver (gRPC C-core, a client nobody here wrote),
bootstrapped with GRPC_XDS_BOOTSTRAP, against the edgexds binary on a manifests directory,
calling real gRPC servers. It speaks state-of-the-world ADS and asks for Listener,
RouteConfiguration, Cluster and ClusterLoadAssignment by name (gRFC A27, A28).

The xDS client is process-wide in gRPC and reads its bootstrap once, so this module runs one
edgexds on a fixed port for all its tests and restarts it on that port.
"""

import json
import os
import pathlib
import time
from concurrent import futures

import grpc
import pytest
from realparts import PATIENCE, Edgexds, free_port, until

DEBOUNCE_MS = 100
SERVICE = "greeter"
METHOD = "/test.Greeter/Who"


def manifests(port: int, endpoints: list[tuple[str, bool]]) -> str:
    """A Service of appProtocol grpc, and a slice of (address, ready) endpoints on `port`."""
    listed = "\n".join(f'- {{ addresses: ["{ip}"], conditions: {{ ready: {str(ready).lower()} }} }}'
                       for ip, ready in endpoints)
    return f"""apiVersion: v1
kind: Service
metadata: {{ name: {SERVICE}, namespace: shop }}
spec:
  ports: [{{ name: grpc, port: {port}, targetPort: grpc, appProtocol: grpc }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: {SERVICE}-1, namespace: shop, labels: {{ kubernetes.io/service-name: {SERVICE} }} }}
addressType: IPv4
ports: [{{ name: grpc, port: {port}, protocol: TCP }}]
endpoints:
{listed}
"""


def write(directory: pathlib.Path, text: str):
    """Atomically, as an operator's tooling would."""
    scratch = directory / ".greeter.yaml.tmp"
    scratch.write_text(text)
    scratch.rename(directory / "greeter.yaml")


class Servers:
    """One gRPC server per address, all on one port, each answering with its address."""

    def __init__(self, addresses: list[str]):
        self.port = free_port()
        self.servers = []
        for address in addresses:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
            handler = grpc.unary_unary_rpc_method_handler(lambda request, context, a=address: a.encode())
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Greeter", {"Who": handler}),))
            assert server.add_insecure_port(f"{address}:{self.port}") == self.port, f"{address}:{self.port} is taken"
            server.start()
            self.servers.append(server)

    def stop(self):
        for server in self.servers:
            server.stop(None)


class ControlPlane:
    """edgexds on one fixed xDS port, restartable."""

    def __init__(self, directory: pathlib.Path):
        self.directory, self.port = directory, free_port()
        self.start()

    def start(self):
        # The bootstrap names one address: every start binds the same one.
        self.edgexds = Edgexds(None, f"--manifests={self.directory}", f"--debounce={DEBOUNCE_MS}ms",
                               xds=f"127.0.0.1:{self.port}")
        self.edgexds.until("ready", lambda: self.edgexds.get("/readyz")[0] == 200)

    def stop(self) -> str:
        return self.edgexds.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory = tmp_path_factory.mktemp("manifests")
    servers = Servers(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    write(directory, manifests(servers.port, [("127.0.0.1", True), ("127.0.0.2", True), ("127.0.0.3", False)]))
    control_plane = ControlPlane(directory)
    bootstrap = tmp_path_factory.mktemp("grpc") / "bootstrap.json"
    bootstrap.write_text(json.dumps({
        "xds_servers": [{"server_uri": f"127.0.0.1:{control_plane.port}", "channel_creds": [{"type": "insecure"}],
                         "server_features": ["xds_v3"]}],
        "node": {"id": "proxyless-1", "cluster": "shop", "locality": {"zone": "zone-a"}},
    }))
    os.environ["GRPC_XDS_BOOTSTRAP"] = str(bootstrap)
    yield directory, servers, control_plane
    control_plane.stop()
    servers.stop()


def picks(channel: grpc.Channel, calls: int = 30) -> dict[str, int]:
    """Which servers answered `calls` calls, and how often."""
    seen: dict[str, int] = {}
    for _ in range(calls):
        who = channel.unary_unary(METHOD)(b"", timeout=5).decode()
        seen[who] = seen.get(who, 0) + 1
    return seen


def test_both_target_forms_become_ready_and_calls_reach_every_ready_endpoint_and_never_a_not_ready_one(setup):
    directory, servers, _ = setup
    for target in [f"xds:///{SERVICE}.shop:{servers.port}", f"xds:///{SERVICE}.shop.svc.cluster.local:{servers.port}"]:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=PATIENCE)
            seen = until(f"{target}: calls reach both ready servers",
                         lambda: (s := picks(channel)) and set(s) == {"127.0.0.1", "127.0.0.2"} and s)
            print(f"\n{target}: {seen}")
            assert "127.0.0.3" not in seen, "the NOT-ready endpoint gets no calls"


def test_removing_an_endpoint_stops_calls_to_it_within_debounce_plus_one_second(setup):
    directory, servers, _ = setup
    with grpc.insecure_channel(f"xds:///{SERVICE}.shop:{servers.port}") as channel:
        until("both servers picked", lambda: set(picks(channel)) == {"127.0.0.1", "127.0.0.2"})
        edited = time.monotonic()
        write(directory, manifests(servers.port, [("127.0.0.1", True), ("127.0.0.3", False)]))
        # Each call is a pick: the first call after the change that no longer reaches .2.
        until("calls stop reaching the removed endpoint",
              lambda: all(picks(channel, 1) == {"127.0.0.1": 1} for _ in range(10)))
        elapsed = time.monotonic() - edited
        print(f"\nEndpointSlice edit -> grpcio stops picking the removed endpoint: {elapsed * 1000:.0f} ms")
        assert elapsed <= DEBOUNCE_MS / 1000 + 1, f"{elapsed:.2f} s"
        write(directory, manifests(servers.port, [("127.0.0.1", True), ("127.0.0.2", True), ("127.0.0.3", False)]))
        until("the endpoint is back", lambda: set(picks(channel)) == {"127.0.0.1", "127.0.0.2"})


def test_a_control_plane_restart_does_not_break_the_channel(setup):
    directory, servers, control_plane = setup
    with grpc.insecure_channel(f"xds:///{SERVICE}.shop:{servers.port}") as channel:
        until("both servers picked", lambda: set(picks(channel)) == {"127.0.0.1", "127.0.0.2"})
        control_plane.stop()
        assert set(picks(channel)) == {"127.0.0.1", "127.0.0.2"}, "calls go on while edgexds is away"
        control_plane.start()
        # The client reconnects and follows edits again.
        write(directory, manifests(servers.port, [("127.0.0.2", True)]))
        until("the restarted control plane's edit reaches the client", lambda: set(picks(channel)) == {"127.0.0.2"})
        proxies = json.loads(control_plane.edgexds.get("/debug/proxies", base=control_plane.edgexds.debug)[1])
        client = [p for p in proxies if p["node_id"] == "proxyless-1"]
        print("\n/debug/proxies:", json.dumps(client)[:800])
        assert client and client[0]["flavour"] == "sotw"
        assert client[0]["client"] == f"gRPC Python {grpc.__version__}", client[0]["client"]
        assert set(client[0]["types"]) == {"lds", "rds", "cds", "eds"}
        assert client[0]["state"] == "SYNCED"
