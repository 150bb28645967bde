"""What the caches buy on a repeated-query workload: the same service with caching off and on, side by side.

    python -m benchmarks.cache_gain --workspace var/bench    # after `python -m benchmarks.latency setup`

Workload: a pool of distinct requests per endpoint (text queries, screenshots, text+screenshot),
each repeated `--repeat` times in a shuffled order (what popular queries look like). Reports mean and
p50/p95 latency per endpoint with caching off and on, and the gain (1 - on/off) on the mean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.latency import TEXT_MAX_TOKENS, TEXT_QUERIES
from service.platform.progress import counter
from service.triton_local.launcher import free_port
from tests.processes import start_service, stop


def _workload(queries: dict, repeat: int, seed: int = 0) -> dict[str, list[tuple[str, dict]]]:
    images = queries["images"][:10]
    texts = TEXT_QUERIES[:10]
    pools = {
        "search": [("/api/v1/search", {"query": t, "limit": 10}) for t in texts],
        "image": [("/api/v1/search/image", {"image": i, "limit": 10}) for i in images],
        "multimodal": [
            ("/api/v1/search/multimodal", {"query": t, "image": i, "limit": 10})
            for t, i in zip(texts, images, strict=False)
        ],
    }
    rng = random.Random(seed)
    out = {}
    for name, pool in pools.items():
        sequence = pool * repeat
        rng.shuffle(sequence)
        out[name] = sequence
    return out


async def _run(port: int, workload: dict[str, list[tuple[str, dict]]]) -> dict[str, dict]:
    results = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for endpoint, requests in workload.items():
            latencies = []
            with counter(endpoint, len(requests), unit="req") as advance:
                for path, body in requests:
                    started = time.perf_counter()
                    response = await client.post(path, json=body)
                    latencies.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                    advance(1)
            values = np.array(latencies)
            results[endpoint] = {
                "requests": len(values),
                "mean_ms": float(values.mean()),
                "p50_ms": float(np.percentile(values, 50)),
                "p95_ms": float(np.percentile(values, 95)),
            }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cache_gain", description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("var/bench"))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    queries = json.loads((args.workspace / "queries.json").read_text())
    workload = _workload(queries, args.repeat)
    scratch = args.workspace / "cache-run"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    measured: dict[str, dict[str, dict]] = {}
    for mode, enabled in (("off", "false"), ("on", "true")):
        env = {
            "MODEL_REPOSITORY": str(args.workspace / "model_repository"),
            "QDRANT_PATH": str(args.workspace / "qdrant"),
            "TEXT_MAX_TOKENS": TEXT_MAX_TOKENS,
            "CACHE_ENABLED": enabled,
        }
        port = free_port()
        process = start_service(env, port, scratch / f"service-cache-{mode}.log")
        try:
            measured[mode] = asyncio.run(_run(port, workload))
        finally:
            stop(process)
    lines = [
        "| endpoint | requests | cache off mean ms | cache on mean ms | p95 off | p95 on | gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for endpoint in workload:
        off, on = measured["off"][endpoint], measured["on"][endpoint]
        gain = 1 - on["mean_ms"] / off["mean_ms"]
        measured.setdefault("gain", {})[endpoint] = {"mean": gain}
        lines.append(
            f"| {endpoint} | {off['requests']} | {off['mean_ms']:.1f} | {on['mean_ms']:.1f} | "
            f"{off['p95_ms']:.1f} | {on['p95_ms']:.1f} | {gain:.0%} |"
        )
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"repeat": args.repeat, "results": measured}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
