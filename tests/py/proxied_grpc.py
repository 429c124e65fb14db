"""One gRPC call through an HTTP proxy, as an app with the sidecar's proxy environment makes
it: grpcio's C-core reads `grpc_proxy` (then `https_proxy`, `http_proxy`, and `no_proxy`)
from its environment and reaches `target` through an HTTP CONNECT tunnel. Prints the pod
that answered /test.Greeter/Who, or the error, and exits non-zero on an error.

    grpc_proxy=http://127.0.0.1:15001 python proxied_grpc.py web.shop:80
"""

import sys

import grpc


def main() -> int:
    target = sys.argv[1]
    with grpc.insecure_channel(target) as channel:
        try:
            print(channel.unary_unary("/test.Greeter/Who")(b"", timeout=20).decode(), flush=True)
            return 0
        except grpc.RpcError as failure:
            print(f"{failure.code()}: {failure.details()}", flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(main())
