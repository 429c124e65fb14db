"""Runs the workspace's Rust test binaries side by side, as `cargo test --workspace` would run
them one after another: builds them (`cargo test --no-run`), then runs `--jobs` at a time, the
slowest first, each from its package's directory. Each binary's output is printed whole when
it ends, with its wall time; the exit status is non-zero if any failed.

Test binaries are independent: each starts what it needs (its own cluster, Envoys, edgexds
processes) on free ports and network slots of its own.

    python3 tests/py/run_test_binaries.py --jobs 2 [-- cargo test args...]
"""

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

# Slowest first, so that the last to start are short: names as cargo gives them (the file stem).
SLOW_FIRST = ["cluster_rollout", "kubernetes", "stuck_clients", "kubernetes_outage", "cluster_churn",
              "envoy_hds", "limits", "xds_tokens", "envoy_scale", "abuse"]


def build(cargo_args: list[str]) -> list[dict]:
    """Builds every test binary; each one's path, package directory and name."""
    command = ["cargo", "test", "--workspace", "--locked", "--no-run", "--message-format=json", *cargo_args]
    built = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if built.returncode != 0:
        sys.exit(f"building the tests failed: {' '.join(command)}")
    binaries = []
    for line in built.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact" or not message.get("executable"):
            continue
        if not message["profile"]["test"]:
            continue
        binaries.append({"path": message["executable"], "dir": str(pathlib.Path(message["manifest_path"]).parent),
                         "name": message["target"]["name"], "kind": message["target"]["kind"][0]})
    return binaries


def order(binary: dict) -> int:
    return SLOW_FIRST.index(binary["name"]) if binary["name"] in SLOW_FIRST else len(SLOW_FIRST)


def main() -> None:
    args = sys.argv[1:]
    jobs = 2
    if args[:1] == ["--jobs"]:
        jobs, args = int(args[1]), args[2:]
    cargo_args = args[1:] if args[:1] == ["--"] else args
    binaries = sorted(build(cargo_args), key=order)
    print(f"==> {len(binaries)} test binaries, {jobs} at a time", flush=True)
    lock, failed = threading.Lock(), []
    started = time.monotonic()

    def run(binary: dict) -> None:
        begun = time.monotonic()
        # --show-output: what passing tests print (their measurements) is part of the log.
        result = subprocess.run([binary["path"], "--show-output"], cwd=binary["dir"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        took = time.monotonic() - begun
        with lock:
            status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
            print(f"---- {binary['kind']} {binary['name']}: {status} in {took:.1f} s", flush=True)
            lines = result.stdout.splitlines()
            summary = [l for l in lines if l.startswith("test result:")]
            if result.returncode != 0:
                failed.append(binary["name"])
                print(result.stdout, flush=True)
            else:
                # What a passing binary's tests printed (their measurements), and its summary.
                for line in lines:
                    if line.strip() and not line.startswith(("test ", "running ", "successes:", "---- ")):
                        print(f"     {line}")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(run, binaries))
    print(f"==> Rust test binaries: {len(binaries) - len(failed)} passed, {len(failed)} failed, "
          f"{time.monotonic() - started:.0f} s", flush=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    os.environ.setdefault("RUST_BACKTRACE", "1")
    main()
