"""How fast the façade fails and heals when a dependency goes away: the timing figures that
tests/test_resilience.py deliberately does not assert (it asserts the behaviour: 503s, circuit state,
attempt counts), because on a shared machine they measure the machine as much as the service.

    python -m benchmarks.resilience --model-repository var/model_repository
    python -m benchmarks.resilience --scenarios store-stall --json benchmarks/results/resilience.json

Scenarios (each on its own service process or thread, over a small index of real anime):
  triton-kill   tritonserver SIGKILLed under back-to-back searches, then started again on its ports:
                latency of the 503s while it is gone, its boot time, time to the first success after.
  triton-hang   tritonserver frozen with SIGSTOP (sockets open, nothing answers), then SIGCONT:
                the slowest 503 (the Triton timeout) and the median one (the open circuit), recovery.
  store-stall   a Qdrant endpoint that accepts and never answers (silent) or trickles a byte at a
                time (trickle): each search's seconds, the first ones ending at QDRANT_TIMEOUT_S.
Needs the `triton-local` extra (nvidia-pytriton) for the Triton scenarios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.domain.manifest import TEXT_EMBEDDER
from service.triton_local.launcher import LocalTriton, free_port
from tests.processes import Answer, Load, ServiceThread, StallingServer, start_service, stop

SCENARIOS = ("triton-kill", "triton-hang", "store-stall")
CIRCUIT = f"triton:{TEXT_EMBEDDER}:1"


def say(scenario: str, message: str) -> None:
    print(f"[{scenario}] {message}", file=sys.stderr, flush=True)


def build_index(repository: Path, folder: Path, documents: int) -> Path:
    from service.catalogue.ingest import ingest
    from service.datasets.bangumi import load_bangumi
    from service.runtime import build_runtime
    from service.settings import load_settings

    catalogue = load_bangumi(Path(os.environ.get("AVS_DATASET_CACHE", "var/datasets")))[:documents]

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=repository, qdrant_path=folder))
        try:
            await ingest(runtime, catalogue, progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


def outage_figures(answers: list[Answer], down_at: float, back_at: float) -> dict[str, Any]:
    during = [a for a in answers if down_at < a.start and a.start + a.seconds < back_at]
    seconds = sorted(a.seconds for a in during) or [float("nan")]
    return {
        "searches": len(during),
        "refused_by_circuit": sum(a.circuit is not None for a in during),
        "median_503_ms": round(statistics.median(seconds) * 1000, 1),
        "slowest_503_s": round(seconds[-1], 3),
    }


def first_success_after(load: Load, since: float, timeout_s: float = 60) -> float:
    """Seconds from `since` until the first search sent after it was answered 200."""
    found = load.wait_for(lambda a: a.start > since and a.status == 200, timeout_s)
    return round(found.start + found.seconds - since, 3)


def triton_scenario(
    name: str, repository: Path, index: Path, workdir: Path, outage_s: float
) -> dict[str, Any]:
    say(name, "starting tritonserver (text model only) and the service")
    triton = LocalTriton(repository, workdir=workdir / "triton", models=[TEXT_EMBEDDER], ort_threads=1)
    triton.start()
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(repository),
        "QDRANT_PATH": str(index),
        "ENCODER_ENGINE": "triton",
        "TRITON_URL": triton.endpoints.grpc_url,
        "TRITON_TIMEOUT_S": "1" if name == "triton-hang" else "2",
        "BREAKER_THRESHOLD": "3",
        "BREAKER_RESET_S": "1",
        "CACHE_ENABLED": "false",
    }
    service = start_service(env, port, workdir / f"{name}.log")
    load = Load(f"http://127.0.0.1:{port}")
    figures: dict[str, Any] = {}
    restarted: LocalTriton | None = None
    try:
        load.start()
        load.wait_for(lambda a: a.status == 200, timeout_s=120)
        down_at = time.monotonic()
        assert triton.process is not None
        server = triton.process.pid
        if name == "triton-kill":
            say(name, "SIGKILL tritonserver")
            triton.kill()
        else:
            say(name, "SIGSTOP tritonserver")
            os.kill(server, signal.SIGSTOP)
        opened = load.wait_for(lambda a: a.start > down_at and a.circuit == CIRCUIT, timeout_s=60)
        figures["circuit_open_after_s"] = round(opened.start - down_at, 3)
        say(name, f"circuit open after {figures['circuit_open_after_s']}s; outage held {outage_s:g}s")
        time.sleep(outage_s)
        back_at = time.monotonic()
        if name == "triton-kill":
            restarted = LocalTriton(
                repository,
                workdir=workdir / "triton-again",
                models=[TEXT_EMBEDDER],
                http_port=triton.endpoints.http_port,
                grpc_port=triton.endpoints.grpc_port,
                metrics_port=triton.endpoints.metrics_port,
            )
            restarted.start()
            figures["triton_boot_s"] = round(time.monotonic() - back_at, 3)
            back_at = time.monotonic()
            say(name, f"tritonserver back after {figures['triton_boot_s']}s boot")
        else:
            os.kill(server, signal.SIGCONT)
            say(name, "SIGCONT tritonserver")
        figures["first_success_after_return_s"] = first_success_after(load, back_at)
        figures |= outage_figures(load.records, down_at, back_at)
        say(name, json.dumps(figures))
    finally:
        load.stop.set()
        load.join(timeout=30)
        stop(service)
        if triton.process is not None:
            os.kill(triton.process.pid, signal.SIGCONT)
        triton.cleanup()
        if restarted is not None:
            restarted.cleanup()
    return figures


def store_stall(repository: Path, mode: str, searches: int = 6) -> dict[str, Any]:
    from service.settings import load_settings

    name = f"store-stall:{mode}"
    timeout_s = 1.0
    with StallingServer(mode) as stalling:  # type: ignore[arg-type]
        settings = load_settings(
            {},
            model_repository=repository,
            qdrant_url=stalling.url,
            qdrant_timeout_s=timeout_s,
            breaker_threshold=3,
            breaker_reset_s=30,
            cache_enabled=False,
            log_level="WARNING",
        )
        service = ServiceThread(settings).start()
        timings = []
        try:
            with httpx.Client(base_url=service.base, timeout=60) as client:
                for i in range(searches):
                    started = time.monotonic()
                    client.post("/api/v1/search", json={"query": "robots"})
                    timings.append(round(time.monotonic() - started, 3))
                    say(name, f"search {i + 1}/{searches}: {timings[-1]:.3f}s")
        finally:
            stalling.close()
            service.stop()
    return {"qdrant_timeout_s": timeout_s, "search_seconds": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.resilience",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-repository", type=Path, default=Path("var/model_repository"))
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--documents", type=int, default=30, help="anime in the index (default 30)")
    parser.add_argument("--outage-s", type=float, default=3.0, help="how long each outage lasts")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-resilience-"))
    results: dict[str, Any] = {}
    runs: dict[str, Callable[[], dict[str, Any]]] = {}
    if {"triton-kill", "triton-hang"} & set(args.scenarios):
        say("setup", f"indexing {args.documents} anime")
        index = build_index(args.model_repository, workdir / "index", args.documents)
        for name in ("triton-kill", "triton-hang"):
            if name in args.scenarios:
                runs[name] = lambda name=name: triton_scenario(
                    name, args.model_repository, index, workdir, args.outage_s
                )
    if "store-stall" in args.scenarios:
        for mode in ("silent", "trickle"):
            runs[f"store-stall:{mode}"] = lambda mode=mode: store_stall(args.model_repository, mode)
    for name, run in runs.items():
        say(name, "running")
        results[name] = run()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
