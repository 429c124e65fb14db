"""One gRPC call through an HTTP proxy, as an app with the sidecar's proxy environment makes
it: grpcio's C-core reads `grpc_proxy` (then `https_proxy`, `http_proxy`, and `no_proxy`)
from its environment and reaches `target` through an HTTP CONNECT tunnel. Prints the pod
that answered /test.Greeter/Who (or the method given second), or the error, and exits
non-zero on an error. With GRPC_XDS_BOOTSTRAP and an `xds:///` target it is a proxyless call.

    grpc_proxy=http://127.0.0.1:15001 python proxied_grpc.py web.shop:80 [/test.Greeter/Where]
"""

import sys

import grpc


def main() -> int:
    target = sys.argv[1]
    method = sys.argv[2] if len(sys.argv) > 2 else "/test.Greeter/Who"
    with grpc.insecure_channel(target) as channel:
        try:
            print(channel.unary_unary(method)(b"", timeout=20).decode(), flush=True)
            return 0
        except grpc.RpcError as failure:
            print(f"{failure.code()}: {failure.details()}", flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(main())
