"""Proxyless gRPC traffic for the Rust cluster tests: grpcio's own xDS resolver (bootstrapped
by GRPC_XDS_BOOTSTRAP) calls /test.Greeter/Who on `target` at `rate` calls a second until its
stdin closes. It prints "ready" once the channel is, then one JSON line per call as it completes:
when it was sent and answered (wall clock, seconds), and the pod that answered or the error.

    GRPC_XDS_BOOTSTRAP=bootstrap.json python xds_load.py xds:///web.shop:80 50
"""

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

METHOD = "/test.Greeter/Who"


def main() -> None:
    target, rate = sys.argv[1], float(sys.argv[2])
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=120)
    who = channel.unary_unary(METHOD)
    print("ready", flush=True)

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    lock = threading.Lock()

    def call() -> None:
        sent = time.time()
        try:
            pod, error = who(b"", timeout=5).decode(), None
        except grpc.RpcError as failure:
            pod, error = None, f"{failure.code()}: {failure.details()}"
        with lock:
            print(json.dumps({"sent": sent, "done": time.time(), "pod": pod, "error": error}), flush=True)

    # A steady schedule: a slow call never delays the next one.
    with ThreadPoolExecutor(max_workers=64) as pool:
        next_at = time.monotonic()
        while not stop.is_set():
            pool.submit(call)
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    channel.close()


if __name__ == "__main__":
    main()
