"""An async HTTP load generator: closed loop (N clients back to back) or open loop (a target rate).

Open loop measures latency from each request's *scheduled* start, so a slow server cannot hide its
queueing by slowing the client down (coordinated omission); closed loop is what a fixed pool of
clients experiences.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from service.platform.progress import counter

RequestMaker = Callable[[int], tuple[str, str, Any]]
# (request index, latency ms), in completion order: for callers that need more than the percentiles.
Samples = list[tuple[int, float]]
# Indices of the requests that failed (no answer, or not 200), in completion order: with `Samples`,
# what a caller needs to count errors over part of a run (benchmarks.soak's windows).
Failures = list[int]


@dataclass(frozen=True)
class Stats:
    mode: str
    concurrency: int | None
    target_rps: float | None
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_rps: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _stats(mode: str, latencies: list[float], errors: int, wall: float, **extra: Any) -> Stats:
    values = np.array(latencies) if latencies else np.array([float("nan")])
    return Stats(
        mode=mode,
        requests=len(latencies),
        errors=errors,
        p50_ms=float(np.percentile(values, 50)),
        p95_ms=float(np.percentile(values, 95)),
        p99_ms=float(np.percentile(values, 99)),
        mean_ms=float(values.mean()),
        throughput_rps=len(latencies) / wall if wall else 0.0,
        concurrency=extra.get("concurrency"),
        target_rps=extra.get("target_rps"),
    )


async def _send(
    client: httpx.AsyncClient, request: tuple[str, str, Any], reasons: Counter[str] | None = None
) -> bool:
    """Whether the request was answered 200; a failure's reason is counted in `reasons` (the status
    and the service's error code, or the exception), so a run says what went wrong, not only how often."""
    method, path, body = request
    try:
        response = await client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        if reasons is not None:
            reasons[f"{method} {path.split('?')[0]}: {type(exc).__name__}"] += 1
        return False
    if response.status_code != 200 and reasons is not None:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "-"
        reasons[f"{method} {path.split('?')[0]}: {response.status_code} {code}"] += 1
    return response.status_code == 200


async def closed_loop(
    base_url: str,
    make: RequestMaker,
    *,
    requests: int,
    concurrency: int,
    warmup: int = 10,
    label: str = "load",
    samples: Samples | None = None,
    failures: Failures | None = None,
    reasons: Counter[str] | None = None,
) -> Stats:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        for i in range(warmup):
            await _send(client, make(i))
        pending = iter(range(requests))
        with counter(label, requests, unit="req") as advance:

            async def worker() -> None:
                nonlocal errors
                for i in pending:
                    started = time.perf_counter()
                    ok = await _send(client, make(i), reasons)
                    latencies.append((time.perf_counter() - started) * 1000)
                    if samples is not None:
                        samples.append((i, latencies[-1]))
                    if not ok and failures is not None:
                        failures.append(i)
                    errors += not ok
                    advance(1)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.perf_counter() - started
    return _stats("closed", latencies, errors, wall, concurrency=concurrency)


async def open_loop(
    base_url: str,
    make: RequestMaker,
    *,
    rps: float,
    duration_s: float,
    warmup: int = 10,
    label: str = "load",
    samples: Samples | None = None,
    failures: Failures | None = None,
    reasons: Counter[str] | None = None,
) -> Stats:
    total = max(1, int(rps * duration_s))
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=512)
    ) as client:
        for i in range(warmup):
            await _send(client, make(i))
        with counter(label, total, unit="req") as advance:

            async def one(i: int, scheduled: float) -> None:
                nonlocal errors
                ok = await _send(client, make(i), reasons)
                latencies.append((time.perf_counter() - scheduled) * 1000)
                if samples is not None:
                    samples.append((i, latencies[-1]))
                if not ok and failures is not None:
                    failures.append(i)
                errors += not ok
                advance(1)

            started = time.perf_counter()
            tasks = []
            for i in range(total):
                scheduled = started + i / rps
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, scheduled)))
            await asyncio.gather(*tasks)
            wall = time.perf_counter() - started
    return _stats("open", latencies, errors, wall, target_rps=rps)
