"""Soak and crash-restart of the service on its embedded store (qdrant-edge in-process), over real HTTP.

    python -m benchmarks.soak run --workspace var/relevance/e5-int8 --minutes 10 --crash-repeats 3 \\
        --json benchmarks/results/soak-cpu.json --plot benchmarks/results/soak-cpu.png
    python -m benchmarks.soak report benchmarks/results/soak-cpu.json

The workspace is one of benchmarks.relevance's (`model_repository/` and the embedded store `qdrant/`,
e.g. the whole catalogue embedded by multilingual-e5-small int8); its store is never opened in place:
each phase serves a sparse copy (service/store/folders.py) in a scratch folder. The catalogue comes
from the dataset cache (the same documents the store holds): the searches are the relevance harness's
text queries (benchmarks/mix.py says what the mix is and why), the writes re-upsert its documents.
Answer and embedding caches are off, so every request is computed. The load generator runs on the same
machine as the service: on a small machine it takes part of the capacity it measures.

Phase 1, capacity: the mix in closed loop at each of `--concurrency` clients for about
`--capacity-seconds` each; capacity is the best error-free throughput.
Phase 2, soak: the mix in open loop (coordinated-omission safe, benchmarks/load.py) at `--load` of that
capacity (or `--rps`) for `--minutes`, cut into `--window`-second windows: per window p50/p95/p99, errors,
throughput and the service's resident memory; the first `--warmup-windows` are warm-up. Verdicts: no
error at all, RSS growth after warm-up under 10%; p95's spread and trend after warm-up are reported.
Phase 3, crash restart (`--crash-repeats`): writers upsert new anime (the catalogue's documents under new
ids) until `--kill-after` are acknowledged, the service is SIGKILLed mid-write and started again on the
same folder: time to /health 200 and to the first successful search, split into interpreter start-up
and application start-up (the models, the store opened, its optimizers run: `optimize_on_open`) from the
service's log; then every acknowledged upsert is looked up. The same number of clean restarts (SIGTERM,
graceful) follows on the same folder, for comparison. tests/test_resilience.py asserts that nothing
acknowledged is lost; this measures how long coming back takes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from benchmarks.latency import MAX_ERROR_RATE
from benchmarks.load import Failures, Samples, Stats, closed_loop, open_loop
from benchmarks.memory import rss_mib
from benchmarks.mix import DEFAULT_WEIGHTS, Mix, parse_weights, query_pool
from benchmarks.relevance.workspace import MODELS_MAX_TOKENS
from benchmarks.reporting import write_results
from benchmarks.soak_stats import Outcome, by_kind, soak_summary, spread, window_rows, windows
from service.domain.documents import AnimeDocument
from service.store.folders import copy_folder
from service.triton_local.launcher import free_port
from tests.processes import start_service, stop

RSS_EVERY_S = 1.0
READY_POLL_S = 0.05
WRITE_DEADLINE_S = 600.0


def say(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServiceSpec:
    """How to start the service under test: its models, the store it copies, where it works."""

    model_repository: Path
    store: Path  # the workspace's store: only ever copied, never opened
    scratch: Path
    text_max_tokens: int = MODELS_MAX_TOKENS

    def copy_store(self, name: str) -> Path:
        destination = self.scratch / name
        shutil.rmtree(destination, ignore_errors=True)
        return copy_folder(self.store, destination)

    def env(self, folder: Path, *, log_level: str = "WARNING") -> dict[str, str]:
        return {
            "MODEL_REPOSITORY": str(self.model_repository),
            "QDRANT_PATH": str(folder),
            "TEXT_MAX_TOKENS": str(self.text_max_tokens),
            "CACHE_ENABLED": "false",
            "LOG_LEVEL": log_level,
        }


def stored_points(base: str) -> int:
    response = httpx.get(f"{base}/api/v1/admin/stats", timeout=60)
    response.raise_for_status()
    return int(response.json()["points"])


# -- phases 1 and 2: capacity and soak ---------------------------------------------------------------


def _row(stats: Stats) -> dict[str, Any]:
    return {**asdict(stats), "error_rate": stats.error_rate}


async def measure_capacity(base: str, mix: Mix, levels: Sequence[int], seconds: float) -> dict[str, Any]:
    """Closed loop at each level for about `seconds` (request counts sized from the best throughput so
    far); capacity is the best error-free throughput."""
    probe = await closed_loop(
        base, mix, requests=max(20, 4 * levels[0]), concurrency=levels[0], label="capacity probe"
    )
    estimate = probe.throughput_rps
    runs = []
    for clients in levels:
        requests = max(4 * clients, int(estimate * seconds))
        stats = await closed_loop(
            base, mix, requests=requests, concurrency=clients, warmup=0, label=f"capacity {clients} clients"
        )
        runs.append(_row(stats))
        say(f"capacity at {clients} clients: {stats.throughput_rps:.1f} req/s, p95 {stats.p95_ms:.0f} ms")
        if stats.error_rate < MAX_ERROR_RATE:
            estimate = max(estimate, stats.throughput_rps)
    clean = [r for r in runs if r["error_rate"] < MAX_ERROR_RATE]
    if not clean:
        raise RuntimeError(
            f"every capacity run had errors: {[(r['concurrency'], r['errors']) for r in runs]}"
        )
    best = max(clean, key=lambda r: r["throughput_rps"])
    return {"runs": runs, "capacity_rps": best["throughput_rps"], "at_concurrency": best["concurrency"]}


async def soak_load(
    base: str,
    pid: int,
    mix: Mix,
    *,
    rps: float,
    duration_s: float,
    window_s: float,
    rss_every_s: float = RSS_EVERY_S,
) -> tuple[list[Outcome], list[tuple[float, float]], Counter[str]]:
    """The open loop, with the service's RSS read every `rss_every_s` and a progress line per window;
    also what each failure was (status and error code, or the exception), counted."""
    samples: Samples = []
    failures: Failures = []
    reasons: Counter[str] = Counter()
    rss: list[tuple[float, float]] = []
    started = time.perf_counter()

    async def monitor() -> None:
        next_window = window_s
        while True:
            await asyncio.sleep(rss_every_s)
            now = time.perf_counter() - started
            mib = rss_mib(pid)
            if mib is not None:
                rss.append((now, mib))
            if now >= next_window:
                recent = [lat for i, lat in samples if next_window - window_s <= i / rps < next_window]
                p95 = float(np.percentile(recent, 95)) if recent else float("nan")
                say(
                    f"{next_window:.0f}/{duration_s:.0f} s: {len(samples)} answers, "
                    f"{len(failures)} errors, last window p95 {p95:.0f} ms, RSS {mib or 0:.0f} MiB"
                )
                next_window += window_s

    watching = asyncio.create_task(monitor())
    try:
        await open_loop(
            base,
            mix,
            rps=rps,
            duration_s=duration_s,
            warmup=0,
            label="soak",
            samples=samples,
            failures=failures,
            reasons=reasons,
        )
    finally:
        watching.cancel()
    if reasons:
        say("errors: " + "; ".join(f"{reason} x{n}" for reason, n in reasons.most_common()))
    failed = set(failures)
    outcomes = [Outcome(i / rps, latency, i not in failed, mix.kind(i)) for i, latency in samples]
    return sorted(outcomes, key=lambda o: o.scheduled_s), rss, reasons


def soak_phase(
    spec: ServiceSpec,
    mix: Mix,
    *,
    minutes: float,
    window_s: float,
    warmup_windows: int,
    rps: float | None = None,
    load: float = 0.7,
    levels: Sequence[int] = (2, 4, 8, 16),
    capacity_seconds: float = 20.0,
    rss_every_s: float = RSS_EVERY_S,
) -> dict[str, Any]:
    """Phases 1 and 2 on one service over a fresh copy of the store."""
    folder = spec.copy_store("soak-store")
    port = free_port()
    process = start_service(spec.env(folder), port, spec.scratch / "soak-service.log")
    base = f"http://127.0.0.1:{port}"
    try:
        points = stored_points(base)
        if points != len(mix.ids):
            say(f"warning: the store holds {points} anime, the catalogue {len(mix.ids)}: ids may be missing")
        capacity = None
        if rps is None:
            capacity = asyncio.run(measure_capacity(base, mix, levels, capacity_seconds))
            rps = load * capacity["capacity_rps"]
        duration_s = minutes * 60
        say(f"soak: {rps:.1f} req/s open loop for {minutes:g} min, windows of {window_s:g} s")
        outcomes, rss, reasons = asyncio.run(
            soak_load(
                base,
                process.pid,
                mix,
                rps=rps,
                duration_s=duration_s,
                window_s=window_s,
                rss_every_s=rss_every_s,
            )
        )
    finally:
        stop(process)
    series = windows(outcomes, duration_s=duration_s, window_s=window_s, rss=rss)
    warmup_s = series[warmup_windows].start_s if len(series) > warmup_windows else duration_s
    return {
        "store_points": points,
        "capacity": capacity,
        "load": load if capacity else None,
        "target_rps": rps,
        "minutes": minutes,
        "window_s": window_s,
        "windows": window_rows(series),
        "summary": soak_summary(outcomes, series, warmup_windows),
        "kinds": by_kind(outcomes, since_s=warmup_s),
        "error_reasons": dict(reasons.most_common()),
    }


# -- phase 3: crash restart ----------------------------------------------------------------------------


def startup_phases(log: str, launched_at: float) -> dict[str, float | None]:
    """From the service's JSON log (LOG_LEVEL=INFO): seconds from the launch (epoch `launched_at`) to
    uvicorn's first line (interpreter and imports), and of the application's start-up (models loaded,
    the store opened and optimized)."""
    stamps: dict[str, float] = {}
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "timestamp" not in record:
            continue
        event = str(record.get("event", ""))
        for key, prefix in (
            ("boot", "Started server process"),
            ("begin", "Waiting for application startup"),
            ("end", "Application startup complete"),
        ):
            if event.startswith(prefix) and key not in stamps:
                stamps[key] = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
    boot = stamps["boot"] - launched_at if "boot" in stamps else None
    app = stamps["end"] - stamps["begin"] if {"begin", "end"} <= stamps.keys() else None
    return {"interpreter_s": boot, "app_startup_s": app, **store_open(log)}


_OPENED = re.compile(r"qdrant-edge: opened collection \S+ in ([\d.]+) s \(optimize ([\d.]+) s\)")


def store_open(log: str) -> dict[str, float | None]:
    """The embedded store's share of start-up, from its own log lines: loading the shards (the WAL
    replayed, what a crash adds) and the optimizers run at open, summed over collections."""
    found = [tuple(map(float, m.groups())) for m in _OPENED.finditer(log)]
    if not found:
        return {"store_load_s": None, "store_optimize_s": None}
    return {"store_load_s": sum(f[0] for f in found), "store_optimize_s": sum(f[1] for f in found)}


@dataclass
class Start:
    process: subprocess.Popen[bytes]
    ready_s: float
    first_search_s: float
    interpreter_s: float | None
    app_startup_s: float | None
    store_load_s: float | None
    store_optimize_s: float | None


def launch(spec: ServiceSpec, folder: Path, port: int, log: Path, probe_query: str) -> Start:
    """Start the service and time it: to /health 200, then to the first search answered 200."""
    launched_at = time.time()
    began = time.monotonic()
    process = start_service(spec.env(folder, log_level="INFO"), port, log, poll_s=READY_POLL_S)
    ready = time.monotonic() - began
    deadline = began + 180
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        while client.post("/api/v1/search", json={"query": probe_query, "limit": 5}).status_code != 200:
            if time.monotonic() > deadline:
                stop(process)
                raise RuntimeError(f"no search answered within 180 s of starting: see {log}")
            time.sleep(READY_POLL_S)
    first = time.monotonic() - began
    phases = startup_phases(log.read_text(errors="replace"), launched_at)
    return Start(
        process,
        ready,
        first,
        phases["interpreter_s"],
        phases["app_startup_s"],
        phases["store_load_s"],
        phases["store_optimize_s"],
    )


class Writer(threading.Thread):
    """Upserts its documents in batches, back to back; records what was acknowledged (200, or 207 item
    by item) and what was in flight when the service went away."""

    def __init__(self, base: str, documents: list[dict[str, Any]], batch: int) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.documents = documents
        self.batch = batch
        self.acknowledged: list[str] = []
        self.in_flight: list[str] = []
        self.refused = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=120) as client:
            for offset in range(0, len(self.documents), self.batch):
                if self.stop.is_set():
                    return
                batch = self.documents[offset : offset + self.batch]
                self.in_flight = [d["anime_id"] for d in batch]
                try:
                    response = client.post("/api/v1/admin/vectors/upsert", json={"documents": batch})
                except httpx.HTTPError:
                    return  # the service died with this batch in flight: not acknowledged
                if response.status_code in (200, 207):
                    items = response.json()["items"]
                    self.acknowledged += [i["anime_id"] for i in items if i["status"] == "stored"]
                else:
                    self.refused += 1
                self.in_flight = []


def missing(base: str, anime_ids: Sequence[str]) -> list[str]:
    """The ids the service does not return by id."""
    with httpx.Client(base_url=base, timeout=60) as client:
        return [a for a in anime_ids if client.get(f"/api/v1/search/by-id/{a}").status_code != 200]


def _start_row(start: Start) -> dict[str, Any]:
    return {
        "ready_s": start.ready_s,
        "first_search_s": start.first_search_s,
        "interpreter_s": start.interpreter_s,
        "app_startup_s": start.app_startup_s,
        "store_load_s": start.store_load_s,
        "store_optimize_s": start.store_optimize_s,
    }


def crash_phase(
    spec: ServiceSpec,
    documents: Sequence[AnimeDocument],
    *,
    repeats: int,
    kill_after: int = 48,
    batch: int = 4,
    writers: int = 2,
    probe_query: str = "giant robots",
    clean_restarts: int | None = None,
) -> dict[str, Any]:
    """`repeats` SIGKILLs under upserts, each followed by a timed restart and a check of every
    acknowledged write; then `clean_restarts` (default: as many) timed clean restarts, all on one copy
    of the store."""
    folder = spec.copy_store("crash-store")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = spec.scratch / "crash-logs"
    logs.mkdir(parents=True, exist_ok=True)
    start = launch(spec, folder, port, logs / "first.log", probe_query)
    first = _start_row(start)
    say(f"first start on the copy: ready in {start.ready_s:.2f} s")
    # More documents than the kill waits for, so the writers are still busy when it comes.
    pool = [
        msgspec.to_builtins(d) for d in documents[: max(3 * kill_after, kill_after + 2 * batch * writers)]
    ]
    crashes, cleans = [], []
    try:
        for repeat in range(repeats):
            before = stored_points(base)
            renamed = [d | {"anime_id": f"{d['anime_id']}.crash{repeat}"} for d in pool]
            threads = [Writer(base, renamed[k::writers], batch) for k in range(writers)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + WRITE_DEADLINE_S
            while sum(len(t.acknowledged) for t in threads) < kill_after and time.monotonic() < deadline:
                if not any(t.is_alive() for t in threads):
                    break
                time.sleep(0.01)
            in_flight = sum(len(t.in_flight) for t in threads)
            start.process.kill()
            start.process.wait(timeout=30)
            for thread in threads:
                thread.stop.set()
                thread.join(timeout=60)
            acknowledged = [a for t in threads for a in t.acknowledged]
            if len(acknowledged) < kill_after:
                raise RuntimeError(f"only {len(acknowledged)} upserts acknowledged before the kill")
            start = launch(spec, folder, port, logs / f"crash-{repeat}.log", probe_query)
            lost = missing(base, acknowledged)
            after = stored_points(base)
            row = {
                "repeat": repeat,
                "acknowledged": len(acknowledged),
                "in_flight_at_kill": in_flight,
                "refused": sum(t.refused for t in threads),
                "lost": len(lost),
                "lost_ids": lost[:20],
                "points_before": before,
                "points_after": after,
                **_start_row(start),
            }
            crashes.append(row)
            say(
                f"crash {repeat + 1}/{repeats}: {len(acknowledged)} acknowledged, {in_flight} in flight, "
                f"{len(lost)} lost; ready in {start.ready_s:.2f} s, first search {start.first_search_s:.2f} s"
            )
        for repeat in range(repeats if clean_restarts is None else clean_restarts):
            stop(start.process)
            start = launch(spec, folder, port, logs / f"clean-{repeat}.log", probe_query)
            cleans.append({"repeat": repeat, **_start_row(start)})
            say(f"clean restart {repeat + 1}: ready in {start.ready_s:.2f} s")
        points = stored_points(base)
    finally:
        stop(start.process)
    return {
        "kill_after": kill_after,
        "batch": batch,
        "writers": writers,
        "points": points,
        "first_start": first,
        "crashes": crashes,
        "cleans": cleans,
        "summary": restart_summary(crashes, cleans),
    }


def restart_summary(crashes: Sequence[dict[str, Any]], cleans: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = ("ready_s", "first_search_s", "interpreter_s", "app_startup_s", "store_load_s", "store_optimize_s")

    def of(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {k: spread([r[k] for r in rows if r[k] is not None]) for k in keys}

    return {
        "after_sigkill": of(crashes),
        "after_sigterm": of(cleans),
        "acknowledged": sum(r["acknowledged"] for r in crashes),
        "lost": sum(r["lost"] for r in crashes),
    }


# -- the report -----------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    mix = results.get("mix", {})
    if mix:
        weights = ", ".join(f"{k} {v:.0%}" for k, v in mix["weights"].items() if v)
        lines += [f"Mix: {weights}; {mix['queries']} text queries ({mix['languages']}).", ""]
    soak = results.get("soak")
    if soak:
        lines += _soak_markdown(soak)
    crash = results.get("crash")
    if crash:
        lines += _crash_markdown(crash)
    return "\n".join(lines).rstrip()


def _reasons(soak: dict[str, Any]) -> str:
    reasons = soak.get("error_reasons") or {}
    return (" (" + "; ".join(f"{r} ×{n}" for r, n in reasons.items()) + ")") if reasons else ""


def _soak_markdown(soak: dict[str, Any]) -> list[str]:
    lines = []
    capacity = soak.get("capacity")
    if capacity:
        lines += ["| capacity run | req/s | p50 ms | p95 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
        for r in capacity["runs"]:
            lines.append(
                f"| {r['concurrency']} clients, closed loop | {r['throughput_rps']:.1f} | "
                f"{_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | {_ms(r['p99_ms'])} | {r['errors']} |"
            )
        lines += [
            "",
            f"Capacity {capacity['capacity_rps']:.1f} req/s (at {capacity['at_concurrency']} clients); "
            f"soak at {soak['load']:.0%} of it.",
            "",
        ]
    s = soak["summary"]
    p95 = s["p95_windows"]
    growth = s["rss_growth_pct"]
    memory = (
        "— (too few windows)"
        if growth is None
        else f"{growth:+.1f}% ({s['rss_baseline_mib']:.0f} → {s['rss_final_mib']:.0f} MiB, "
        f"peak {s['rss_peak_mib']:.0f})"
    )
    spread_pct = "—" if p95["spread_pct"] is None else f"{p95['spread_pct']:.0f}%"
    trend = "—" if p95["trend_ms_per_min"] is None else f"{p95['trend_ms_per_min']:+.1f} ms/min"
    lines += [
        f"Soak: {soak['target_rps']:.1f} req/s open loop for {soak['minutes']:g} min, windows of "
        f"{soak['window_s']:g} s, the first {s['warmup_windows']} warm-up.",
        "",
        "| | measured | target | verdict |",
        "|---|---|---|---|",
        f"| errors | {s['errors']} of {s['requests']}{_reasons(soak)} | 0 | {_verdict(s['meets_errors'])} |",
        f"| RSS growth after warm-up | {memory} | < {s['rss_growth_target_pct']:g}% "
        f"| {_verdict(s['meets_rss'])} |",
        f"| p95 per window after warm-up | {_ms(p95['min_ms'])}–{_ms(p95['max_ms'])} ms (median "
        f"{_ms(p95['median_ms'])}, spread {spread_pct}, trend {trend}) | stable | see the windows |",
        f"| all requests after warm-up | p50 {_ms(s['p50_ms'])} / p95 {_ms(s['p95_ms'])} / p99 "
        f"{_ms(s['p99_ms'])} ms | | |",
        "",
        "| window | minutes | requests | errors | p50 ms | p95 ms | p99 ms | answers/s | RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in soak["windows"]:
        warm = " (warm-up)" if w["index"] < s["warmup_windows"] else ""
        lines.append(
            f"| {w['index'] + 1}{warm} | {w['start_s'] / 60:.1f}–{w['end_s'] / 60:.1f} | {w['requests']} | "
            f"{w['errors']} | {_ms(w['p50_ms'])} | {_ms(w['p95_ms'])} | {_ms(w['p99_ms'])} | "
            f"{w['throughput_rps']:.1f} | {_ms(w['rss_mib'])} |"
        )
    lines += [
        "",
        "| kind (after warm-up) | requests | errors | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for k in soak["kinds"]:
        lines.append(
            f"| {k['kind']} | {k['requests']} | {k['errors']} | {_ms(k['p50_ms'])} | {_ms(k['p95_ms'])} | "
            f"{_ms(k['p99_ms'])} |"
        )
    return [*lines, ""]


def _crash_markdown(crash: dict[str, Any]) -> list[str]:
    summary = crash["summary"]
    lines = [
        f"Crash restart: writers upsert new anime ({crash['writers']} × batches of {crash['batch']}); "
        f"SIGKILL once {crash['kill_after']} are acknowledged; restart on the same folder "
        f"({crash['points']} anime at the end). Acknowledged {summary['acknowledged']}, "
        f"lost {summary['lost']}.",
        "",
        "| restart | n | to /health 200, s (min / median / max) | to first search, s "
        "| interpreter + imports, s | app start-up (models, store open + optimize), s "
        "| of which store load (WAL replay), s | of which optimize at open, s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, key in (("after SIGKILL", "after_sigkill"), ("after SIGTERM (clean)", "after_sigterm")):
        row = summary[key]

        def cell(name: str, row: dict[str, Any] = row) -> str:
            v = row[name]
            return "—" if not v["n"] else f"{v['min']:.2f} / {v['median']:.2f} / {v['max']:.2f}"

        lines.append(
            f"| {label} | {row['ready_s']['n']} | {cell('ready_s')} | {cell('first_search_s')} | "
            f"{cell('interpreter_s')} | {cell('app_startup_s')} | {cell('store_load_s')} | "
            f"{cell('store_optimize_s')} |"
        )
    lines += [
        "",
        "| kill | acknowledged | in flight at the kill | lost | anime before → after | ready s "
        "| first search s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in crash["crashes"]:
        lines.append(
            f"| {r['repeat'] + 1} | {r['acknowledged']} | {r['in_flight_at_kill']} | {r['lost']} | "
            f"{r['points_before']} → {r['points_after']} | {_s(r['ready_s'])} | {_s(r['first_search_s'])} |"
        )
    return [*lines, ""]


def plot(results: dict[str, Any], path: Path) -> None:
    """p50/p95/p99 and the service's RSS per window against time, warm-up shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    soak = results.get("soak")
    if not soak:
        raise ValueError("no soak phase to plot (--minutes 0)")
    series = soak["windows"]
    warmup = soak["summary"]["warmup_windows"]
    middle = [(w["start_s"] + w["end_s"]) / 120 for w in series]
    ends = [w["end_s"] / 60 for w in series]

    def values(key: str) -> list[float]:
        return [float("nan") if w[key] is None else w[key] for w in series]

    fig, (latency, memory) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for key, style in (("p50_ms", ":"), ("p95_ms", "-"), ("p99_ms", "--")):
        latency.plot(middle, values(key), style, marker="o", label=key.removesuffix("_ms"))
    memory.plot(ends, values("rss_mib"), marker="o", color="tab:red", label="RSS at the window's end")
    baseline = soak["summary"]["rss_baseline_mib"]
    if baseline:
        # The target's line, and a scale from which 10% reads as 10%, not as the whole height.
        target = soak["summary"]["rss_growth_target_pct"]
        limit = baseline * (1 + target / 100)
        memory.axhline(limit, linestyle="--", color="grey", label=f"target: +{target:g}% after warm-up")
        memory.set_ylim(baseline * 0.8, max(limit, *(v for v in values("rss_mib") if v == v)) * 1.05)
    for ax in (latency, memory):
        if 0 < warmup <= len(series):
            ax.axvspan(0, series[warmup - 1]["end_s"] / 60, color="grey", alpha=0.15, label="warm-up")
        ax.legend(fontsize=8)
    latency.set_ylabel("latency per window (ms)")
    latency.set_title(f"Soak: {soak['target_rps']:.1f} req/s open loop, mixed endpoints")
    memory.set_ylabel("service RSS (MiB)")
    memory.set_xlabel("minutes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the command -------------------------------------------------------------------------------------------


def _languages(texts: Sequence[str]) -> str:
    from benchmarks.relevance.judgements import has_han, has_kana

    counts = Counter("ja" if has_kana(t) else "zh" if has_han(t) else "latin" for t in texts)
    return ", ".join(f"{k} {v}" for k, v in counts.most_common())


def run(args: argparse.Namespace) -> dict[str, Any]:
    from service.datasets.bangumi import load_bangumi, load_chinese_titles

    repository, store = args.workspace / "model_repository", args.workspace / "qdrant"
    for needed in (repository, store):
        if not needed.is_dir():
            raise SystemExit(
                f"{needed} is missing: build the workspace with `python -m benchmarks.relevance`"
            )
    documents = load_bangumi(args.dataset_cache)
    queries = query_pool(
        documents,
        chinese_titles=load_chinese_titles(args.dataset_cache),
        per_set=args.queries_per_set,
        seed=args.seed,
    )
    mix = Mix(documents, queries, args.mix, seed=args.seed)
    results: dict[str, Any] = {
        "workspace": str(args.workspace),
        "documents": len(documents),
        "mix": {
            "weights": mix.weights,
            "queries": len(queries),
            "query_sets": dict(Counter(q.query_set for q in queries)),
            "languages": _languages([q.text for q in queries]),
        },
    }
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="soak-"))
    scratch.mkdir(parents=True, exist_ok=True)
    spec = ServiceSpec(repository, store, scratch)
    try:
        if args.minutes > 0:
            results["soak"] = soak_phase(
                spec,
                mix,
                minutes=args.minutes,
                window_s=args.window,
                warmup_windows=args.warmup_windows,
                rps=args.rps,
                load=args.load,
                levels=args.concurrency,
                capacity_seconds=args.capacity_seconds,
            )
        if args.crash_repeats > 0:
            results["crash"] = crash_phase(
                spec, documents, repeats=args.crash_repeats, kill_after=args.kill_after, batch=args.batch
            )
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return results


def _weights(text: str) -> dict[str, float]:
    try:
        return parse_weights(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("run", help="capacity, soak and crash restarts")
    measure.add_argument("--workspace", type=Path, default=Path("var/relevance/e5-int8"))
    measure.add_argument("--dataset-cache", type=Path, default=Path("var/datasets"))
    measure.add_argument(
        "--scratch", type=Path, default=None, help="keep copies and logs here (default: a temp dir)"
    )
    measure.add_argument("--minutes", type=float, default=10.0, help="soak length; 0 skips capacity and soak")
    measure.add_argument("--window", type=float, default=30.0, help="seconds per window")
    measure.add_argument("--warmup-windows", type=int, default=2)
    measure.add_argument("--load", type=float, default=0.7, help="share of the measured capacity")
    measure.add_argument(
        "--rps", type=float, default=None, help="soak at this rate; skips the capacity phase"
    )
    measure.add_argument("--concurrency", nargs="+", type=int, default=[2, 4, 8, 16], help="capacity clients")
    measure.add_argument("--capacity-seconds", type=float, default=20.0, help="about this long per level")
    measure.add_argument("--crash-repeats", type=int, default=3, help="0 skips the crash restarts")
    measure.add_argument("--kill-after", type=int, default=48, help="acknowledged upserts before SIGKILL")
    measure.add_argument("--batch", type=int, default=4, help="documents per upsert in the crash phase")
    measure.add_argument("--queries-per-set", type=int, default=200)
    measure.add_argument(
        "--mix",
        type=_weights,
        default=dict(DEFAULT_WEIGHTS),
        help="weights by kind, e.g. search=0.5,upsert=0.02 (the rest keep the defaults)",
    )
    measure.add_argument("--seed", type=int, default=0)
    measure.add_argument("--json", type=Path, default=None, help="also write the results here")
    measure.add_argument("--plot", type=Path, default=None, help="PNG of p95 and RSS per window")
    show = commands.add_parser("report", help="print the Markdown of a results file")
    show.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    if args.command == "report":
        print(markdown(json.loads(args.results.read_text())))
        return 0
    if args.warmup_windows < 1:
        parser.error("--warmup-windows must be at least 1: RSS growth is measured from the end of warm-up")
    results = run(args)
    print(markdown(results))
    if args.json:
        write_results(args.json, "benchmarks.soak", argv, results)
    if args.plot and "soak" in results:
        plot(results, args.plot)
    failed = results.get("crash", {}).get("summary", {}).get("lost", 0)
    errors = results.get("soak", {}).get("summary", {}).get("errors", 0)
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
