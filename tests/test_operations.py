"""Operations: a real Prometheus scrapes the façade and the local Triton; graceful shutdown."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from service.catalogue.ingest import ingest
from service.runtime import build_runtime
from service.settings import load_settings
from service.triton_local.launcher import free_port, listens_on
from tests.processes import start_service, stop

PROMETHEUS = shutil.which("prometheus")


def _fill(repository: Path, folder: Path, documents) -> None:
    async def run() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=repository, qdrant_path=folder))
        try:
            await ingest(runtime, documents, progress=False)
        finally:
            await runtime.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def triton_service(real_repository, local_triton, bangumi_documents, tmp_path_factory) -> Iterator[str]:
    """The façade as deployed (uvicorn process) on the Triton engine, over a small real index."""
    folder = tmp_path_factory.mktemp("ops-index")
    _fill(real_repository, folder, bangumi_documents[:50])
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(real_repository),
        "QDRANT_PATH": str(folder),
        "ENCODER_ENGINE": "triton",
        "TRITON_URL": local_triton.endpoints.grpc_url,
    }
    process = start_service(env, port, folder / "service.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def prometheus(triton_service, local_triton, tmp_path_factory) -> Iterator[str]:
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed: `make test` installs the Debian package")
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "anime-vector-service", "static_configs": [{"targets": [triton_service]}]},
            {
                "job_name": "triton",
                "static_configs": [{"targets": [f"127.0.0.1:{local_triton.endpoints.metrics_port}"]}],
            },
        ],
    }
    (folder / "prometheus.yml").write_bytes(msgspec.json.encode(config))  # JSON is valid YAML
    for attempt in range(3):  # a port taken by a process outside free_port's locks: try another
        port = free_port()
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(folder / "prometheus.log").open("wb"),
        )
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(process, f"{url}/-/ready", port, timeout_s=60):
            break
        process.terminate()
        process.wait(timeout=30)
        log = (folder / "prometheus.log").read_text()
        if "address already in use" not in log.lower() or attempt == 2:
            raise RuntimeError(log[-2000:])
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_ready(process: subprocess.Popen[bytes], url: str, port: int, timeout_s: float) -> bool:
    """Until `url` answers 200 from `process` itself (not another server on the port); False if the
    process exits, or another process listens there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return listens_on(process.pid, port)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _query(prometheus: str, promql: str) -> float | None:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _eventually(prometheus: str, promql: str, expected: float, timeout_s: float = 30.0) -> float | None:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = _query(prometheus, promql)
        if value == expected:
            return value
        time.sleep(0.5)
    return value


def test_prometheus_scrapes_the_request_count_we_produced(triton_service, prometheus):
    requests = 37
    with httpx.Client(base_url=f"http://{triton_service}", timeout=30) as client:
        for i in range(requests):
            assert (
                client.post("/api/v1/search", json={"query": f"giant robot {i}", "limit": 5}).status_code
                == 200
            )
        assert client.get("/api/v1/search/by-id/not-there").status_code == 404
    counted = 'sum(avs_http_requests_total{route="/api/v1/search",status="200"})'
    assert _eventually(prometheus, counted, requests) == requests
    assert _eventually(prometheus, 'sum(avs_http_requests_total{status="404"})', 1) == 1
    assert _eventually(prometheus, 'up{job="triton"}', 1) == 1
    # Every search went through Triton: its own counter saw at least as many inferences.
    triton = _query(prometheus, 'sum(nv_inference_count{model="text_embedder"})')
    assert triton is not None and triton >= requests
    encoder = _query(
        prometheus, 'sum(avs_encoder_duration_seconds_count{engine="triton",model="text_embedder"})'
    )
    assert encoder is not None and encoder >= requests
    # Each search queried the store once and missed the answer cache once (every query differs).
    store = _query(prometheus, "sum(avs_store_duration_seconds_count)")
    assert store is not None and store >= requests
    misses = _query(prometheus, 'sum(avs_cache_requests_total{cache="result",result="miss"})')
    assert misses is not None and misses >= requests
    # Once every answer has arrived the only request in flight is the scrape reading the gauge:
    # it goes down as well as up.
    assert _eventually(prometheus, "sum(avs_http_requests_in_flight)", 1) == 1
    # The latency histogram holds exactly these requests; its p95 is a real duration.
    histogram = 'avs_http_request_duration_seconds_bucket{route="/api/v1/search"}'
    assert _query(prometheus, f"sum({histogram.replace('_bucket', '_count')})") == requests
    p95 = _query(prometheus, f"histogram_quantile(0.95, sum by (le) ({histogram}))")
    assert p95 is not None and 0 < p95 < 10


def _wait_in_flight(base: str, at_least: int, timeout_s: float) -> float:
    """Poll the façade's in-flight gauge until it reaches `at_least`; returns the last value read."""
    deadline = time.monotonic() + timeout_s
    value = 0.0
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        value = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("avs_http_requests_in_flight ")
        )
        if value >= at_least:
            return value
        time.sleep(0.01)
    return value


def test_sigterm_lets_in_flight_requests_finish_and_keeps_acknowledged_writes(
    real_repository, bangumi_documents, tmp_path
):
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(real_repository),
        "QDRANT_PATH": str(tmp_path / "q"),
        "ADMIN_MAX_BATCH": "256",
        "LOG_LEVEL": "INFO",
    }
    process = start_service(env, port, tmp_path / "service.log")
    base = f"http://127.0.0.1:{port}"
    catalogue = [msgspec.to_builtins(d) for d in bangumi_documents[:80]]
    with httpx.Client(base_url=base, timeout=300) as client:
        # The upsert caught by the signal must still be running when it arrives (seconds of work)
        # and end within the service's graceful-shutdown timeout (30 s), on an idle machine or one
        # shared with other runs: its size is set from how long this machine takes now. The first
        # upsert warms the encoder up; the second is timed.
        for batch in (catalogue[:2], catalogue[2:6]):
            started = time.monotonic()
            assert client.post("/api/v1/admin/vectors/upsert", json={"documents": batch}).status_code == 200
        per_document_s = (time.monotonic() - started) / 4
    size = max(1, min(64, round(3.0 / per_document_s)))
    documents = catalogue[6 : 6 + size]
    answer: dict = {}

    def upsert() -> None:
        response = httpx.post(
            f"{base}/api/v1/admin/vectors/upsert", json={"documents": documents}, timeout=120
        )
        answer["status"], answer["body"] = response.status_code, response.json()
        answer["at"] = time.monotonic()

    writer = threading.Thread(target=upsert)
    writer.start()
    # The signal goes once the upsert is being served: the in-flight gauge counts it and the scrape
    # reading the gauge, so 2 (the documents take seconds to embed, a scrape milliseconds).
    in_flight = _wait_in_flight(base, at_least=2, timeout_s=60)
    assert in_flight >= 2, f"the upsert never showed in flight ({in_flight}); {answer}"
    signalled_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    writer.join(timeout=120)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells how it ended.
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert answer["status"] == 200 and answer["body"]["stored"] == len(documents)
    # The answer came after the signal: the shutdown waited for the request it found in flight.
    assert answer["at"] > signalled_at, "the upsert was answered before SIGTERM: nothing was in flight"
    log = (tmp_path / "service.log").read_text()
    assert '"event": "stopped"' in log  # the lifespan shutdown ran: engine and store closed

    async def count() -> int:
        runtime = await build_runtime(
            load_settings({}, model_repository=real_repository, qdrant_path=tmp_path / "q")
        )
        try:
            return await runtime.store.count()
        finally:
            await runtime.close()

    assert asyncio.run(count()) == 6 + len(documents)  # and the store reopens cleanly
