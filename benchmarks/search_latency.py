"""Latency of POST /api/v1/search over real HTTP, for each encoder engine, side by side in one run.

Each engine gets its own service process (uvicorn, as deployed) over the same model repository and
the same Qdrant index; the local CPU tritonserver is started for the Triton run. Requests are sent
closed-loop by `--concurrency` clients after a warm-up; the table shows p50/p95/p99 per engine and
the ratio to the first engine.

    python -m benchmarks.search_latency --model-repository var/model_repository --qdrant-path var/qdrant
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from service.progress import counter
from service.triton_local.launcher import LocalTriton, free_port

QUERIES = [
    "giant robots and teenage pilots",
    "space bounty hunters",
    "high school girls in a band",
    "Studio Ghibli movie",
    "alchemist brothers",
    "pirates searching for treasure",
    "ninja boy",
    "virtual reality game",
    "magical girls",
    "baseball team in high school",
    "detective solves murders",
    "vampires at night",
]


def _start_service(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            env={
                **os.environ,
                **env,
                "SERVICE_PORT": str(port),
                "SERVICE_HOST": "127.0.0.1",
                "LOG_LEVEL": "WARNING",
            },
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.terminate()
    raise RuntimeError("service did not become healthy in 120s")


async def _measure(port: int, requests: int, warmup: int, concurrency: int, limit: int) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/search"
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(warmup):
            await client.post(url, json={"query": QUERIES[i % len(QUERIES)], "limit": limit})
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)

        with counter("requests", requests, unit="req") as advance:

            async def worker() -> None:
                nonlocal errors
                while not queue.empty():
                    i = queue.get_nowait()
                    started = time.perf_counter()
                    response = await client.post(
                        url, json={"query": QUERIES[i % len(QUERIES)], "limit": limit}
                    )
                    latencies.append((time.perf_counter() - started) * 1000)
                    errors += response.status_code != 200
                    advance(1)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.perf_counter() - started
    values = np.array(latencies)
    return {
        "requests": requests,
        "errors": errors,
        "concurrency": concurrency,
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "throughput_rps": requests / wall,
    }


def run(args: argparse.Namespace) -> dict[str, dict]:
    results: dict[str, dict] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    base_env = {
        "MODEL_REPOSITORY": str(args.model_repository),
        "QDRANT_PATH": str(args.qdrant_path),
        "TEXT_MAX_TOKENS": str(args.text_max_tokens),
    }
    try:
        for engine in args.engines:
            with ExitStack() as stack:
                env = dict(base_env, ENCODER_ENGINE=engine)
                if engine == "triton":
                    triton = stack.enter_context(
                        LocalTriton(
                            args.model_repository, workdir=workdir / "triton", ort_threads=args.ort_threads
                        )
                    )
                    env["TRITON_URL"] = triton.endpoints.grpc_url
                port = free_port()
                process = _start_service(env, port, workdir / f"service-{engine}.log")
                stack.callback(process.wait)
                stack.callback(process.terminate)
                print(f"[{engine}] measuring {args.requests} requests", file=sys.stderr)
                results[engine] = asyncio.run(
                    _measure(port, args.requests, args.warmup, args.concurrency, args.limit)
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def markdown(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))
    lines = [
        "| engine | requests | concurrency | p50 ms | p95 ms | p99 ms | req/s | p95 vs first | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, r in results.items():
        ratio = r["p95_ms"] / first["p95_ms"]
        lines.append(
            f"| {engine} | {r['requests']} | {r['concurrency']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['throughput_rps']:.1f} | {ratio:.2f}x | {r['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_latency", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=Path("var/model_repository"))
    parser.add_argument("--qdrant-path", type=Path, default=Path("var/qdrant"))
    parser.add_argument("--engines", nargs="+", default=["onnx", "triton"], choices=["onnx", "triton"])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--text-max-tokens", type=int, default=128)
    parser.add_argument("--ort-threads", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args)
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
        args.json.write_text(json.dumps({"environment": payload, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
