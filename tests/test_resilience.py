"""Dependency failures: a killed tritonserver, an unreachable Qdrant, one modality down.

The façade runs as deployed (a uvicorn process); tritonserver is killed with SIGKILL under load and
started again, and the façade must recover by itself.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.ingest import ingest
from service.manifest import TEXT_EMBEDDER
from service.runtime import build_runtime
from service.settings import load_settings
from service.triton_local.launcher import LocalTriton, free_port
from tests.builders import encode_image, synthetic_cover
from tests.processes import start_service, stop

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def index(minilm_repository: Path, bangumi_documents, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resilience-index")

    async def fill() -> None:
        runtime = await build_runtime(
            load_settings({}, model_repository=minilm_repository, qdrant_path=folder)
        )
        try:
            await ingest(runtime, bangumi_documents[:30], progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


@pytest.fixture
def text_only_triton(minilm_repository: Path, tmp_path) -> Iterator[LocalTriton]:
    """A tritonserver of our own (this test kills it) serving only text_embedder."""
    triton = LocalTriton(
        minilm_repository, workdir=tmp_path / "triton", models=[TEXT_EMBEDDER], ort_threads=1
    )
    triton.start()
    try:
        yield triton
    finally:
        triton.cleanup()


class Load(threading.Thread):
    """Back-to-back searches, each recorded as (start time, status, seconds, error code)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.records: list[tuple[float, int, float, str | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                started = time.monotonic()
                response = client.post("/api/v1/search", json={"query": f"giant robots {i % 7}", "limit": 5})
                code = response.json().get("error", {}).get("code") if response.status_code != 200 else None
                self.records.append((started, response.status_code, time.monotonic() - started, code))
                i += 1
                time.sleep(0.02)


def test_killed_triton_gives_fast_503s_and_recovery_needs_no_restart(
    minilm_repository, index, text_only_triton, tmp_path
):
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(minilm_repository),
        "QDRANT_PATH": str(index),
        "ENCODER_ENGINE": "triton",
        "TRITON_URL": text_only_triton.endpoints.grpc_url,
        "TRITON_TIMEOUT_S": "2",
        "BREAKER_RESET_S": "1",
        "CACHE_ENABLED": "false",
    }
    service = start_service(env, port, tmp_path / "service.log")
    base = f"http://127.0.0.1:{port}"
    load = Load(base)
    try:
        load.start()
        time.sleep(1.5)
        killed_at = time.monotonic()
        text_only_triton.kill()
        time.sleep(4)
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "degraded"
        assert health["components"]["store"]["status"] == "ok"
        assert health["components"][f"triton:{TEXT_EMBEDDER}"]["status"] == "down"

        restarted = LocalTriton(
            minilm_repository,
            workdir=tmp_path / "triton-again",
            models=[TEXT_EMBEDDER],
            http_port=text_only_triton.endpoints.http_port,
            grpc_port=text_only_triton.endpoints.grpc_port,
            metrics_port=text_only_triton.endpoints.metrics_port,
        )
        restarted.start()
        ready_at = time.monotonic()
        try:
            deadline = ready_at + 30
            while time.monotonic() < deadline and not any(
                start > ready_at and status == 200 for start, status, _, _ in load.records
            ):
                time.sleep(0.1)
            load.stop.set()
            load.join(timeout=30)
        finally:
            restarted.cleanup()
    finally:
        load.stop.set()
        stop(service)

    before = [r for r in load.records if r[0] + r[2] < killed_at]  # finished before the kill
    outage = [r for r in load.records if killed_at + 0.5 < r[0] < ready_at]
    after = [r for r in load.records if r[0] > ready_at]
    assert before and all(status == 200 for _, status, _, _ in before)
    assert len(outage) >= 10
    assert all(status == 503 and code == "dependency_unavailable" for _, status, _, code in outage)
    assert max(seconds for _, _, seconds, _ in outage) < 2.5  # timeouts, never hangs
    fast = sorted(seconds for _, _, seconds, _ in outage)
    assert fast[len(fast) // 2] < 0.1  # the open circuit answers at once
    recovered = next(start for start, status, _, _ in after if status == 200)
    recovery_s = recovered - ready_at
    print(f"\ntriton back: first successful search {recovery_s:.2f}s after it was ready again")
    assert recovery_s < 10
    assert all(status == 200 for start, status, _, _ in after if start > recovered)


def test_one_modality_down_answers_with_the_other(minilm_repository, index, text_only_triton, tmp_path):
    """Triton serves the text model only: multimodal search answers by text and says why."""
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(minilm_repository),
        "QDRANT_PATH": str(index),
        "ENCODER_ENGINE": "triton",
        "TRITON_URL": text_only_triton.endpoints.grpc_url,
    }
    service = start_service(env, port, tmp_path / "service.log")
    image = base64.b64encode(encode_image(synthetic_cover(1), "PNG")).decode()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            both = client.post("/api/v1/search/multimodal", json={"query": "robots", "image": image})
            assert both.status_code == 200, both.text
            info = both.json()["query_info"]
            assert info["weights"] == {"text": 1.0}
            assert any(note.startswith("image:") and "image_embedder" in note for note in info["degraded"])
            assert both.json()["results"]
            only_image = client.post("/api/v1/search/image", json={"image": image})
            assert only_image.status_code == 503
            assert only_image.json()["error"]["details"]["dependency"] == "triton"
    finally:
        stop(service)


async def test_an_unreachable_qdrant_answers_503_fast_and_health_says_down(minilm_repository):
    from litestar.testing import AsyncTestClient

    from service.app import create_app

    settings = load_settings(
        {},
        model_repository=minilm_repository,
        qdrant_url=f"http://127.0.0.1:{free_port()}",
        qdrant_timeout_s=2,
        breaker_reset_s=30,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        timings = []
        for _ in range(8):
            started = time.monotonic()
            response = await client.post("/api/v1/search", json={"query": "robots"})
            timings.append(time.monotonic() - started)
            assert response.status_code == 503
            assert response.json()["error"]["details"]["dependency"] == "qdrant"
        assert max(timings[6:]) < 0.1  # circuit open: no more connection attempts
        write = await client.post(
            "/api/v1/admin/vectors/upsert", json={"documents": [{"anime_id": "a", "title": "A"}]}
        )
        assert write.status_code == 503  # not acknowledged, so nothing is lost
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "down"
