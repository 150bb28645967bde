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
import msgspec
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
                try:
                    response = client.post(
                        "/api/v1/search", json={"query": f"giant robots {i % 7}", "limit": 5}
                    )
                except httpx.TransportError as exc:  # the façade itself is gone (the store test kills it)
                    self.records.append((started, 0, time.monotonic() - started, type(exc).__name__))
                    time.sleep(0.05)
                    continue
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


def test_embedded_store_killed_under_write_load_keeps_every_acknowledged_upsert(
    minilm_repository, bangumi_documents, tmp_path
):
    """The local store lives inside the façade process: stopping the store means killing that process.

    SIGKILL (no shutdown hook runs) while writers and searchers are busy, start it again on the same
    folder: every upsert that was answered 200 is there, and searches succeed again.
    """
    folder = tmp_path / "store"
    env = {"MODEL_REPOSITORY": str(minilm_repository), "QDRANT_PATH": str(folder)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_service(env, port, tmp_path / "service-1.log")
    documents = [msgspec.to_builtins(d) for d in bangumi_documents[:400]]
    acknowledged: list[str] = []
    stop_writing = threading.Event()

    def write(offset: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for start in range(offset, len(documents), 8):  # two writers, interleaved batches of 4
                if stop_writing.is_set():
                    return
                batch = documents[start : start + 4]
                try:
                    response = client.post("/api/v1/admin/vectors/upsert", json={"documents": batch})
                except httpx.HTTPError:
                    return  # the process died with this request in flight: not acknowledged
                if response.status_code == 200:
                    acknowledged.extend(d["anime_id"] for d in batch)

    writers = [threading.Thread(target=write, args=(offset,)) for offset in (0, 4)]
    searches = Load(base)
    for thread in [*writers, searches]:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=10)
    stop_writing.set()
    searches.stop.set()
    for thread in [*writers, searches]:
        thread.join(timeout=30)
    assert len(acknowledged) >= 60, "the writers were too slow to test anything"
    assert len(acknowledged) < len(documents), "the kill came after every write: nothing was in flight"
    assert any(status == 200 for _, status, _, _ in searches.records)

    restarted = start_service(env, port, tmp_path / "service-2.log")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            missing = [
                anime_id
                for anime_id in acknowledged
                if client.get(f"/api/v1/search/by-id/{anime_id}").status_code != 200
            ]
            assert missing == [], f"{len(missing)} acknowledged upserts lost: {missing[:5]}"
            search = client.post("/api/v1/search", json={"query": acknowledged[0], "limit": 5})
            assert search.status_code == 200 and search.json()["results"]
            assert client.get("/health").json()["status"] == "ok"
    finally:
        stop(restarted)
