"""`python -m service.triton_local`: serve the model repository with a local CPU tritonserver."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from service.triton_local.launcher import LocalTriton, TritonLaunchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.triton_local", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--workdir", type=Path, default=Path("var/triton"))
    parser.add_argument("--ort-threads", type=int, default=0, help="intra-op threads per model instance")
    parser.add_argument(
        "--model", action="append", dest="models", help="serve only these models (repeatable)"
    )
    args = parser.parse_args(argv)
    triton = LocalTriton(
        args.model_repository,
        workdir=args.workdir,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        models=args.models,
        ort_threads=args.ort_threads,
    )
    try:
        triton.start()
    except TritonLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"tritonserver ready: models {', '.join(triton.loaded)}; grpc {triton.endpoints.grpc_url}, "
        f"http {triton.endpoints.http_url}, metrics {triton.endpoints.metrics_url}; log {triton.log_file}",
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if triton.process is None or triton.process.poll() is not None:
            print(f"error: tritonserver exited:\n{triton.log_tail()}", file=sys.stderr)
            return 1
    triton.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
