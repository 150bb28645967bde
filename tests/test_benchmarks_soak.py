"""benchmarks.soak: its statistics on known samples, its request mix, and a very short soak and one
crash restart against the real service (tiny random models, a small store) reporting what happened."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest

from benchmarks.memory import rss_mib
from benchmarks.mix import DEFAULT_WEIGHTS, Mix, parse_weights, query_pool
from benchmarks.soak import ServiceSpec, crash_phase, markdown, plot, soak_phase, startup_phases
from benchmarks.soak_stats import (
    Outcome,
    Window,
    by_kind,
    p95_stability,
    rss_growth_pct,
    soak_summary,
    spread,
    windows,
)
from service.catalogue.ingest import ingest
from service.domain.documents import AnimeDocument
from service.runtime import build_runtime
from service.schemas import SearchRequest, SimilarityBatchRequest, UpsertRequest
from service.settings import load_settings


def test_resident_memory_is_read_for_a_live_process_and_none_once_it_is_gone() -> None:
    """The soak's RSS series and the scale benchmark's memory columns come from this reading."""
    before = rss_mib()
    held = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
    after = rss_mib()
    assert before is not None and after is not None and after - before > 48
    script = "import time; print('up', flush=True); time.sleep(30)"
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "up\n"  # the interpreter is loaded
            assert (rss_mib(child.pid) or 0.0) > 1
        finally:
            child.kill()
    assert rss_mib(child.pid) is None
    del held


# -- windows and verdicts --------------------------------------------------------------------------------


def test_requests_count_in_the_window_they_were_due_and_answers_in_the_one_they_completed():
    # Window 0: ten requests of 10..100 ms, one failed; the last one, due at 1.9 s, takes 500 ms and so
    # is answered in window 1. Window 1: nothing due. Window 2 (the shorter last one): one request.
    outcomes = [Outcome(0.1 * k, 10.0 * (k + 1), ok=k != 3) for k in range(9)]
    outcomes += [Outcome(1.9, 500.0, ok=True), Outcome(4.5, 20.0, ok=True)]
    rss = [(0.5, 100.0), (2.0, 110.0), (3.0, 130.0), (4.0, 120.0), (4.9, 125.0)]
    series = windows(outcomes, duration_s=5, window_s=2, rss=rss)

    assert [(w.start_s, w.end_s) for w in series] == [(0, 2), (2, 4), (4, 5)]
    assert [w.requests for w in series] == [10, 0, 1]
    assert [w.errors for w in series] == [1, 0, 0]
    first = [10.0 * (k + 1) for k in range(9)] + [500.0]
    assert series[0].p95_ms == pytest.approx(float(np.percentile(first, 95)))
    assert series[0].p50_ms == pytest.approx(float(np.percentile(first, 50)))
    assert series[1].p95_ms is None
    # Throughput by completion: 9 answers in window 0, the slow one in window 1, one in the last 1 s.
    assert [w.throughput_rps for w in series] == [9 / 2, 1 / 2, 1 / 1]
    # RSS at each window's end (last reading at or before it) and the highest reading inside it.
    assert [w.rss_mib for w in series] == [110.0, 120.0, 125.0]
    assert [w.rss_max_mib for w in series] == [110.0, 130.0, 125.0]


def _window(index: int, p95: float | None, rss: float | None, seconds: float = 30) -> Window:
    return Window(
        index=index,
        start_s=index * seconds,
        end_s=(index + 1) * seconds,
        requests=0 if p95 is None else 100,
        errors=0,
        p50_ms=p95,
        p95_ms=p95,
        p99_ms=p95,
        throughput_rps=1.0,
        rss_mib=rss,
        rss_max_mib=rss,
    )


def test_rss_growth_is_measured_from_the_end_of_warm_up_to_the_end_of_the_run():
    series = [_window(0, 50, 800), _window(1, 50, 1000), _window(2, 50, 1030), _window(3, 50, 1050)]
    assert rss_growth_pct(series, warmup=2) == pytest.approx(5.0)
    assert rss_growth_pct(series, warmup=1) == pytest.approx(31.25)
    # No baseline (no warm-up window), nothing after warm-up, or no readings: no figure, not 0%.
    assert rss_growth_pct(series, warmup=0) is None
    assert rss_growth_pct(series, warmup=4) is None
    assert rss_growth_pct([_window(0, 50, None), _window(1, 50, 900)], warmup=1) is None


def test_p95_stability_reports_range_spread_and_trend_after_warm_up():
    # p95 rising 10 ms every 30 s window after a wild warm-up window: 20 ms per minute.
    series = [_window(0, 900, 1000)] + [_window(k, 40 + 10 * k, 1000) for k in range(1, 6)]
    stability = p95_stability(series, warmup=1)
    assert (stability["min_ms"], stability["median_ms"], stability["max_ms"]) == (50, 70, 90)
    assert stability["spread_pct"] == pytest.approx(40 / 70 * 100)
    assert stability["trend_ms_per_min"] == pytest.approx(20.0)
    flat = p95_stability([_window(k, 60, 1000) for k in range(4)], warmup=1)
    assert flat["spread_pct"] == 0 and flat["trend_ms_per_min"] == pytest.approx(0.0)
    # Windows where nothing was due have no p95 and are left out.
    assert p95_stability([_window(0, 60, 1), _window(1, None, 1)], warmup=1)["median_ms"] is None


def test_soak_summary_counts_every_error_and_judges_memory_after_warm_up():
    outcomes = [Outcome(1.0, 30.0, ok=False, kind="search"), Outcome(40.0, 50.0, ok=True, kind="by-id")]
    outcomes += [Outcome(35.0 + k, 20.0 + k, ok=True, kind="search") for k in range(20)]
    series = windows(outcomes, duration_s=60, window_s=30, rss=[(29.0, 1000.0), (59.0, 1120.0)])
    summary = soak_summary(outcomes, series, warmup=1)
    assert (summary["errors"], summary["errors_after_warmup"], summary["meets_errors"]) == (1, 0, False)
    assert summary["measured_requests"] == 21
    assert summary["rss_growth_pct"] == pytest.approx(12.0)
    assert not summary["meets_rss"]
    assert summary["rss_peak_mib"] == 1120.0
    kinds = {row["kind"]: row for row in by_kind(outcomes, since_s=30)}
    assert (kinds["search"]["requests"], kinds["search"]["errors"], kinds["by-id"]["requests"]) == (20, 0, 1)
    assert kinds["search"]["p50_ms"] == pytest.approx(float(np.percentile([20 + k for k in range(20)], 50)))


def test_spread_of_repeated_restarts():
    assert spread([3.0, 1.0, 2.0]) == {"n": 3, "min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([])["median"] is None


def test_startup_phases_from_the_service_log():
    log = "\n".join(
        json.dumps({"event": event, "timestamp": stamp})
        for event, stamp in (
            ("Started server process [1]", "2026-12-02T05:36:31.500000Z"),
            ("Waiting for application startup.", "2026-12-02T05:36:31.600000Z"),
            ("qdrant-edge: opened collection anime_1 in 0.25 s (optimize 1.00 s)", "2026-12-02T05:36:32Z"),
            ("qdrant-edge: opened collection anime_2 in 0.05 s (optimize 0.00 s)", "2026-12-02T05:36:32Z"),
            ("Application startup complete.", "2026-12-02T05:36:33.100000Z"),
        )
    )
    launched = datetime(2026, 12, 2, 5, 36, 30, tzinfo=UTC).timestamp()
    phases = startup_phases("not json\n" + log, launched)
    assert phases["interpreter_s"] == pytest.approx(1.5)
    assert phases["app_startup_s"] == pytest.approx(1.5)
    assert phases["store_load_s"] == pytest.approx(0.30) and phases["store_optimize_s"] == pytest.approx(1.0)
    assert startup_phases("", launched) == {
        "interpreter_s": None,
        "app_startup_s": None,
        "store_load_s": None,
        "store_optimize_s": None,
    }


# -- the mix -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def documents(bangumi_documents: list[AnimeDocument]) -> list[AnimeDocument]:
    return bangumi_documents[:40]


@pytest.fixture(scope="module")
def mix(documents: list[AnimeDocument]) -> Mix:
    return Mix(documents, query_pool(documents, per_set=10))


def test_the_mix_is_repeatable_weighted_and_every_body_is_valid(mix: Mix, documents):
    assert [mix(i) for i in range(50)] == [mix(i) for i in range(50)]
    kinds = Counter(mix.kind(i) for i in range(4000))
    for kind, weight in DEFAULT_WEIGHTS.items():
        assert kinds[kind] / 4000 == pytest.approx(weight, abs=0.02), kind
    by_id = {d.anime_id: d for d in documents}
    for i in range(400):
        method, path, body = mix(i)
        kind = mix.kind(i)
        if kind.startswith("search"):
            request = msgspec.convert(body, SearchRequest)
            if kind == "search":
                assert request.filters is None
        elif kind == "similarity-batch":
            assert len(set(msgspec.convert(body, SimilarityBatchRequest).anime_ids)) == 10
        elif kind == "upsert":
            (document,) = msgspec.convert(body, UpsertRequest).documents
            assert msgspec.convert(document, AnimeDocument) == by_id[document["anime_id"]]
        else:
            assert method == "GET" and path.rsplit("/", 1)[1] in by_id


def _satisfies(doc: AnimeDocument, filters: dict) -> bool:
    return (
        set(filters.get("genres", doc.genres)) <= set(doc.genres)
        and filters.get("type", doc.type) == doc.type
        and filters.get("year_min", 0) <= (doc.year or 0) <= filters.get("year_max", 9999)
    )


def test_filtered_searches_narrow_to_facets_of_the_anime_the_query_is_about(mix: Mix):
    about: dict[str, list[str]] = {}
    for query in mix.queries:  # one text can come from several anime (a shared title, a description)
        about.setdefault(query.text, []).append(query.anime_id)
    filtered = [mix(i)[2] for i in range(600) if mix.kind(i) == "search-filtered"]
    assert sum("filters" in body for body in filtered) > 0.9 * len(filtered) > 0
    for body in filtered:
        filters = body.get("filters", {})
        assert any(_satisfies(mix.documents[a], filters) for a in about[body["query"]]), body


def test_mix_weights_from_the_command_line():
    weights = parse_weights("search=0.5, upsert=0")
    assert (
        weights["search"] == 0.5 and weights["upsert"] == 0 and weights["by-id"] == DEFAULT_WEIGHTS["by-id"]
    )
    for bad, reason in (
        ("serch=1", "unknown request kind"),
        ("search=-1", "negative"),
        ("search=x", "number"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_weights(bad)
    with pytest.raises(ValueError, match="every weight is zero"):
        parse_weights(",".join(f"{kind}=0" for kind in DEFAULT_WEIGHTS))


# -- against the real service --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec(tiny_repository: Path, documents, tmp_path_factory: pytest.TempPathFactory) -> ServiceSpec:
    store = tmp_path_factory.mktemp("soak-store") / "qdrant"

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=tiny_repository, qdrant_path=store))
        try:
            await ingest(runtime, documents, progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return ServiceSpec(tiny_repository, store, tmp_path_factory.mktemp("soak-scratch"))


def test_a_short_soak_measures_capacity_then_windows_without_errors(spec: ServiceSpec, mix: Mix, tmp_path):
    results = soak_phase(
        spec,
        mix,
        minutes=2 / 60,
        window_s=1,
        warmup_windows=1,
        levels=(2,),
        capacity_seconds=1,
        rss_every_s=0.2,
    )
    capacity = results["capacity"]["capacity_rps"]
    assert capacity > 0 and results["target_rps"] == pytest.approx(0.7 * capacity)
    assert results["store_points"] == len(mix.ids)
    summary = results["summary"]
    assert summary["errors"] == 0, results["kinds"]
    assert summary["requests"] == int(results["target_rps"] * 2)
    assert len(results["windows"]) == 2
    assert all(w["rss_mib"] and w["rss_mib"] > 0 for w in results["windows"])
    assert summary["rss_growth_pct"] is not None
    assert sum(row["requests"] for row in results["kinds"]) == summary["measured_requests"]
    assert "| errors | 0 of" in markdown({"soak": results})
    plot({"soak": results}, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 0


def test_a_crash_restart_keeps_every_acknowledged_upsert_and_is_timed(spec: ServiceSpec, documents):
    # No clean restart here: each start costs seconds of interpreter start-up on a loaded machine.
    results = crash_phase(spec, documents, repeats=1, kill_after=6, batch=2, clean_restarts=0)
    (crash,) = results["crashes"]
    assert crash["acknowledged"] >= 6
    assert crash["lost"] == 0, crash["lost_ids"]
    assert crash["points_after"] >= crash["points_before"] + crash["acknowledged"]
    assert results["cleans"] == []
    for start in (crash, results["first_start"]):
        assert 0 < start["ready_s"] <= start["first_search_s"]
        assert start["interpreter_s"] is not None and start["app_startup_s"] is not None
        assert start["store_load_s"] is not None  # the store says what opening it cost
    assert results["summary"]["lost"] == 0
    assert "| after SIGKILL | 1 |" in markdown({"crash": results})
