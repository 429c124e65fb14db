"""A gRPC server and a proxyless client for the quickstart (pip install grpcio).

    python3 examples/greeter.py serve                     # on 127.0.0.1:50051
    GRPC_XDS_BOOTSTRAP=examples/grpc-bootstrap.json \
      python3 examples/greeter.py call xds:///greeter.shop:50051

The client has no sidecar: gRPC's own xDS resolver asks edgexds for the listener, route,
cluster and endpoints of greeter.shop:50051 and picks an endpoint itself. Requests and
replies are raw bytes, so no generated code is needed.
"""

import sys
from concurrent import futures

import grpc


def serve(address: str = "127.0.0.1:50051"):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    hello = grpc.unary_unary_rpc_method_handler(lambda request, context: b"hello from " + address.encode())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Greeter", {"Hello": hello}),))
    server.add_insecure_port(address)
    server.start()
    print(f"serving demo.Greeter on {address}", flush=True)
    server.wait_for_termination()


def call(target: str):
    with grpc.insecure_channel(target) as channel:
        print(channel.unary_unary("/demo.Greeter/Hello")(b"", timeout=10).decode())


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(*sys.argv[2:3])
    else:
        call(sys.argv[2] if len(sys.argv) > 2 else "xds:///greeter.shop:50051")
