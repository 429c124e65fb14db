"""Authentication on the xDS port, tried with grpcio — gRPC's own client, independent of
ours — against the edgexds binary: every service on the port (delta ADS, CDS and EDS, the
state-of-the-world ADS, CSDS, HDS) refuses an unauthenticated caller with UNAUTHENTICATED,
gRPC health stays open, and ServiceAccount tokens are verified by a real kube-apiserver's
TokenReview, cached, and kept while the API server is unreachable.

Requests are sent as raw bytes: refusal comes before any message is read, and an empty
message is a valid encoding of every request type.
"""

import asyncio
import json
import pathlib
import socket
import subprocess
import threading

import grpc
import pytest
from realparts import TARGET, Edgexds, outcome

SERVICE = """apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  ports:
  - { name: http, port: 80, targetPort: http }
"""

STREAMS = {
    "delta ADS": "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
    "state-of-the-world ADS": "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    "delta CDS": "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters",
    "delta EDS": "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints",
    "CSDS stream": "/envoy.service.status.v3.ClientStatusDiscoveryService/StreamClientStatus",
    "HDS": "/envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck",
}
UNARY = {
    "CSDS fetch": "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus",
    "HDS fetch": "/envoy.service.health.v3.HealthDiscoveryService/FetchHealthCheck",
}
HEALTH = "/grpc.health.v1.Health/Check"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("pki")
    subprocess.run([TARGET / "test-pki", directory], check=True)
    return directory


@pytest.fixture
def manifests(tmp_path) -> pathlib.Path:
    (tmp_path / "web.yaml").write_text(SERVICE)
    return tmp_path


def channel(server: Edgexds, pki: pathlib.Path, client: str | None = None, ca: str = "ca.crt") -> grpc.Channel:
    key = (pki / f"{client}.key").read_bytes() if client else None
    cert = (pki / f"{client}.crt").read_bytes() if client else None
    credentials = grpc.ssl_channel_credentials((pki / ca).read_bytes(), key, cert)
    return grpc.secure_channel(server.xds, credentials, options=[("grpc.ssl_target_name_override", "localhost")])


def every_service(chan: grpc.Channel, token: str | None = None) -> dict[str, tuple[grpc.StatusCode, str]]:
    results = {name: outcome(chan, path, True, token) for name, path in STREAMS.items()}
    results |= {name: outcome(chan, path, False, token) for name, path in UNARY.items()}
    return results


def started(server: Edgexds) -> Edgexds:
    server.until("ready", lambda: server.get("/readyz")[0] == 200)
    return server


def tls_args(pki: pathlib.Path) -> list[str]:
    return [f"--xds-tls-cert={pki / 'xds.crt'}", f"--xds-tls-key={pki / 'xds.key'}"]


def test_with_mtls_every_service_but_health_refuses_a_caller_without_a_spiffe_certificate(pki, manifests):
    server = started(Edgexds(None, f"--manifests={manifests}", "--active-health-checks=hds", *tls_args(pki),
                             f"--xds-client-ca={pki / 'ca.crt'}", "--xds-auth=mtls"))
    try:
        for client in [None, "anonymous"]:
            for name, (code, details) in every_service(channel(server, pki, client)).items():
                assert code == grpc.StatusCode.UNAUTHENTICATED, f"{client} on {name}: {code} {details}"
                assert "SPIFFE ID" in details, details
        assert outcome(channel(server, pki), HEALTH, False)[0] == grpc.StatusCode.OK, "health stays open"
        code, _ = outcome(channel(server, pki, "stranger"), STREAMS["delta ADS"], True)
        assert code == grpc.StatusCode.UNAVAILABLE, "a certificate from another CA fails the handshake"
        for name, (code, details) in every_service(channel(server, pki, "sidecar")).items():
            assert code != grpc.StatusCode.UNAUTHENTICATED, f"sidecar on {name}: {details}"
        assert server.metric('edgexds_auth_requests_total{method="mtls",result="accepted"}') >= len(STREAMS) + len(UNARY)
    finally:
        server.stop()


class Proxy:
    """A TCP proxy in front of the API server, which a test can cut: an unreachable API server."""

    def __init__(self, target: str):
        host, port = target.removeprefix("https://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result()
        self.connections = set()

    async def _serve(self):
        return await asyncio.start_server(self._relay, sock=self.listener)

    async def _relay(self, reader, writer):
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.connections |= {writer, upstream_writer}

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self):
        async def close():
            self.server.close()
            for writer in self.connections:
                writer.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result()


def test_tokens_are_verified_by_token_review_cached_and_kept_while_the_api_server_is_away(cluster, pki, manifests, tmp_path):
    cluster.ensure_namespace("edge")
    for account in ["sidecar", "gone"] + [f"proxy-{i}" for i in range(20)]:
        cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": "edge"}})

    def token(account: str, audience: str = "edgexds") -> str:
        return cluster.kubectl("create", "token", account, "-n", "edge", f"--audience={audience}").stdout.strip()

    # edgexds reaches the API server through a proxy the test can cut.
    proxy = Proxy(cluster.url)
    admin = json.loads(pathlib.Path(cluster.kubeconfig).read_text())
    admin["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    admin["clusters"][0]["cluster"]["tls-server-name"] = "127.0.0.1"
    kubeconfig = tmp_path / "edgexds.kubeconfig"
    kubeconfig.write_text(json.dumps(admin))
    server = started(Edgexds(str(kubeconfig), f"--manifests={manifests}", "--active-health-checks=hds",
                             *tls_args(pki), "--xds-auth=token",
                             # 20 proxies' first calls come from this one address.
                             "--max-token-reviews-per-peer=100"))
    try:
        plain = channel(server, pki)
        for name, (code, details) in every_service(plain).items():
            assert code == grpc.StatusCode.UNAUTHENTICATED, f"{name}: {code} {details}"
            assert "ServiceAccount token" in details, details
        for name, (code, details) in every_service(plain, token("sidecar")).items():
            assert code != grpc.StatusCode.UNAUTHENTICATED, f"{name}: {details}"
        code, details = outcome(plain, STREAMS["delta ADS"], True, token("sidecar", audience="other"))
        # Refused before any TokenReview: the audience is read from the token itself.
        assert code == grpc.StatusCode.UNAUTHENTICATED and "the token is not for audience edgexds" in details, details
        gone = token("gone")
        cluster.kubectl("delete", "serviceaccount", "gone", "-n", "edge")
        code, details = outcome(plain, STREAMS["delta ADS"], True, gone)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "rejected by the Kubernetes API" in details, details
        code, _ = outcome(plain, STREAMS["delta ADS"], True, "not.a.token")
        assert code == grpc.StatusCode.UNAUTHENTICATED

        # The cost: 1,000 streams from 20 proxies, each proxy reconnecting with its one token.
        reviews = server.metric('edgexds_auth_token_reviews_total{result="accepted"}')
        hits = server.metric('edgexds_auth_token_reviews_total{result="cached"}')
        tokens = [token(f"proxy-{i}") for i in range(20)]
        for proxy_token in tokens * 50:
            code, details = outcome(plain, UNARY["CSDS fetch"], False, proxy_token)
            assert code != grpc.StatusCode.UNAUTHENTICATED, details
        new_reviews = server.metric('edgexds_auth_token_reviews_total{result="accepted"}') - reviews
        cached = server.metric('edgexds_auth_token_reviews_total{result="cached"}') - hits
        print(f"\n1,000 authenticated calls from 20 tokens: {new_reviews:.0f} TokenReviews, {cached:.0f} answered from the cache")
        assert new_reviews == 20

        # The API server away: verified tokens keep working, unknown ones are refused and counted.
        proxy.cut()
        code, details = outcome(plain, STREAMS["delta ADS"], True, tokens[0])
        assert code != grpc.StatusCode.UNAUTHENTICATED, details
        code, details = outcome(plain, STREAMS["delta ADS"], True, token("sidecar"))
        assert code == grpc.StatusCode.UNAVAILABLE and "unreachable" in details, f"{code} {details}"
        assert server.metric('edgexds_auth_token_reviews_total{result="unreachable"}') >= 1
    finally:
        server.stop()



def test_with_mtls_and_token_either_credential_gets_in_and_neither_is_refused(cluster, pki, manifests):
    cluster.ensure_namespace("either")
    cluster.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sidecar", "namespace": "either"}})
    token = cluster.kubectl("create", "token", "sidecar", "-n", "either", "--audience=edgexds").stdout.strip()
    server = started(Edgexds(cluster.kubeconfig, f"--manifests={manifests}", "--active-health-checks=hds", *tls_args(pki),
                             f"--xds-client-ca={pki / 'ca.crt'}", "--xds-auth=mtls,token"))
    try:
        for name, (code, details) in every_service(channel(server, pki)).items():
            assert code == grpc.StatusCode.UNAUTHENTICATED, f"{name}: {code} {details}"
            assert "a client certificate with a SPIFFE ID, or a ServiceAccount token" in details, details
        for client, bearer in [("sidecar", None), (None, token)]:
            for name, (code, details) in every_service(channel(server, pki, client), bearer).items():
                assert code != grpc.StatusCode.UNAUTHENTICATED, f"{client or 'token'} on {name}: {details}"
    finally:
        server.stop()
