"""What benchmarks.soak reports, computed from what it recorded (pure functions).

A soak is one open-loop run cut into windows after the fact: each request falls in the window of its
scheduled start (its latency counts from then, so queueing is never hidden), each answer in the window
it completed in (throughput), and the service's resident memory is read at each window's end. The
first windows are warm-up (caches, allocator, page cache filling): the verdicts look at the rest.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# The targets for a soak: no errors at all, and resident memory growing less than this after
# warm-up. p95 "stable" has no number: the spread and the trend are reported for a reader to judge.
RSS_GROWTH_TARGET_PCT = 10.0


@dataclass(frozen=True)
class Outcome:
    """One request of the run: when it was due (seconds from the start), its latency, its kind."""

    scheduled_s: float
    latency_ms: float
    ok: bool
    kind: str = ""

    @property
    def completed_s(self) -> float:
        return self.scheduled_s + self.latency_ms / 1000


@dataclass(frozen=True)
class Window:
    index: int
    start_s: float
    end_s: float
    requests: int
    errors: int
    p50_ms: float | None  # None: no request was due in the window
    p95_ms: float | None
    p99_ms: float | None
    throughput_rps: float
    rss_mib: float | None  # at the window's end: the last reading at or before it
    rss_max_mib: float | None


def _percentiles(latencies: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    if not latencies:
        return None, None, None  # JSON has no NaN
    p50, p95, p99 = np.percentile(np.asarray(latencies), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def windows(
    outcomes: Iterable[Outcome],
    *,
    duration_s: float,
    window_s: float,
    rss: Sequence[tuple[float, float]] = (),
) -> list[Window]:
    """The run [0, duration_s) in windows of `window_s` (the last one shorter when it does not divide).

    `rss`: (seconds from the start, MiB) readings in time order. Answers completing after the run
    (the tail of the last requests) count in the last window's throughput.
    """
    if window_s <= 0 or duration_s <= 0:
        raise ValueError("the duration and the window must be positive")
    count = max(1, int(np.ceil(duration_s / window_s - 1e-9)))
    bounds = [(k * window_s, min((k + 1) * window_s, duration_s)) for k in range(count)]
    latencies: dict[int, list[float]] = defaultdict(list)
    errors: dict[int, int] = defaultdict(int)
    completed: dict[int, int] = defaultdict(int)

    def slot(t: float) -> int:
        return min(max(int(t // window_s), 0), count - 1)

    for outcome in outcomes:
        k = slot(outcome.scheduled_s)
        latencies[k].append(outcome.latency_ms)
        errors[k] += not outcome.ok
        completed[slot(outcome.completed_s)] += 1
    result = []
    for k, (start, end) in enumerate(bounds):
        readings = [mib for t, mib in rss if t <= end]
        inside = [mib for t, mib in rss if start <= t <= end]
        p50, p95, p99 = _percentiles(latencies[k])
        result.append(
            Window(
                index=k,
                start_s=start,
                end_s=end,
                requests=len(latencies[k]),
                errors=errors[k],
                p50_ms=p50,
                p95_ms=p95,
                p99_ms=p99,
                throughput_rps=completed[k] / (end - start),
                rss_mib=readings[-1] if readings else None,
                rss_max_mib=max(inside) if inside else None,
            )
        )
    return result


def rss_growth_pct(series: Sequence[Window], warmup: int) -> float | None:
    """Growth of resident memory from the end of warm-up (the last warm-up window's end) to the end of
    the run, in percent; None without a warm-up window, a window after it, or readings."""
    if warmup < 1 or len(series) <= warmup:
        return None
    baseline, final = series[warmup - 1].rss_mib, series[-1].rss_mib
    if baseline is None or final is None or baseline <= 0:
        return None
    return (final - baseline) / baseline * 100


def p95_stability(series: Sequence[Window], warmup: int) -> dict[str, float | None]:
    """The per-window p95 after warm-up: its range, its spread ((max - min) / median) and its trend
    (least-squares slope against time, ms per minute: a leak or a growing queue shows as a slope)."""
    values = [(w, w.p95_ms) for w in series[warmup:] if w.p95_ms is not None]
    if not values:
        return {
            "min_ms": None,
            "median_ms": None,
            "max_ms": None,
            "spread_pct": None,
            "trend_ms_per_min": None,
        }
    p95 = [v for _, v in values]
    median = statistics.median(p95)
    trend = None
    if len(values) >= 2:
        minutes = [(w.start_s + w.end_s) / 2 / 60 for w, _ in values]
        trend = float(np.polyfit(minutes, p95, 1)[0])
    return {
        "min_ms": min(p95),
        "median_ms": median,
        "max_ms": max(p95),
        "spread_pct": (max(p95) - min(p95)) / median * 100 if median else None,
        "trend_ms_per_min": trend,
    }


def by_kind(outcomes: Iterable[Outcome], *, since_s: float = 0.0) -> list[dict[str, Any]]:
    """Requests, errors and percentiles per request kind, over the requests due from `since_s` on."""
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.scheduled_s >= since_s:
            groups[outcome.kind].append(outcome)
    rows = []
    for kind, group in sorted(groups.items(), key=lambda item: -len(item[1])):
        p50, p95, p99 = _percentiles([o.latency_ms for o in group])
        errors = sum(not o.ok for o in group)
        rows.append(
            {
                "kind": kind,
                "requests": len(group),
                "errors": errors,
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
            }
        )
    return rows


def soak_summary(outcomes: Sequence[Outcome], series: Sequence[Window], warmup: int) -> dict[str, Any]:
    """The verdicts: errors (all of them, warm-up included: an error is an error), p95 stability and
    memory growth after warm-up, and the percentiles of every request after warm-up."""
    since = series[warmup].start_s if len(series) > warmup else float("inf")
    measured = [o.latency_ms for o in outcomes if o.scheduled_s >= since]
    p50, p95, p99 = _percentiles(measured)
    errors = sum(not o.ok for o in outcomes)
    growth = rss_growth_pct(series, warmup)
    readings = [w.rss_max_mib for w in series if w.rss_max_mib is not None]
    return {
        "requests": len(outcomes),
        "errors": errors,
        "errors_after_warmup": sum(not o.ok for o in outcomes if o.scheduled_s >= since),
        "warmup_windows": warmup,
        "measured_requests": len(measured),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "p95_windows": p95_stability(series, warmup),
        "rss_baseline_mib": series[warmup - 1].rss_mib if 1 <= warmup < len(series) else None,
        "rss_final_mib": series[-1].rss_mib if series else None,
        "rss_peak_mib": max(readings) if readings else None,
        "rss_growth_pct": growth,
        "rss_growth_target_pct": RSS_GROWTH_TARGET_PCT,
        "meets_errors": errors == 0,
        "meets_rss": growth is not None and growth < RSS_GROWTH_TARGET_PCT,
    }


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """min / median / max of repeated measurements (restart times)."""
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(values), "min": min(values), "median": statistics.median(values), "max": max(values)}


def window_rows(series: Sequence[Window]) -> list[dict[str, Any]]:
    return [asdict(w) for w in series]
