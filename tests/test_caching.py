"""Caching in the façade: repeated questions are answered from the cache, no write leaves a stale
answer behind (in process, and across replicas through a real Redis), and a dead Redis only costs speed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.catalogue.ingest import ingest
from service.runtime import build_runtime
from service.settings import load_settings
from service.triton_local.launcher import free_port

QUERY = {"query": "giant robots piloted by teenagers", "limit": 5}


@pytest.fixture
def index(real_repository: Path, bangumi_documents, tmp_path) -> Path:
    folder = tmp_path / "q"

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=real_repository, qdrant_path=folder))
        try:
            await ingest(runtime, bangumi_documents[:60], progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


def _metric(text: str, cache: str, result: str) -> float:
    match = re.search(rf'^avs_cache_requests_total{{cache="{cache}",result="{result}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def _search(client: AsyncTestClient, body: dict = QUERY) -> dict:
    response = await client.post("/api/v1/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
async def client(real_repository: Path, index: Path) -> AsyncIterator[AsyncTestClient]:
    settings = load_settings({}, model_repository=real_repository, qdrant_path=index)
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def test_a_repeated_question_is_answered_from_the_cache(client):
    first = await _search(client)
    second = await _search(client)
    assert first["query_info"]["cached"] is False and second["query_info"]["cached"] is True
    assert second["results"] == first["results"]
    other_limit = await _search(client, QUERY | {"limit": 7})  # another answer, the same embedding
    assert other_limit["query_info"]["cached"] is False
    metrics = (await client.get("/metrics")).text
    assert _metric(metrics, "result", "hit") == 1 and _metric(metrics, "result", "miss") == 2
    assert _metric(metrics, "embedding", "hit") == 1 and _metric(metrics, "embedding", "miss") == 1


async def test_no_write_leaves_a_stale_answer(client, bangumi_documents):
    await _search(client)
    assert (await _search(client))["query_info"]["cached"] is True
    newcomer = msgspec.to_builtins(bangumi_documents[200]) | {
        "title": "Giant Robots Piloted By Teenagers",
        "synopsis": "Teenagers pilot giant robots.",
    }
    upserted = await client.post("/api/v1/admin/vectors/upsert", json={"documents": [newcomer]})
    assert upserted.status_code == 200
    after_upsert = await _search(client)
    assert after_upsert["query_info"]["cached"] is False
    assert after_upsert["results"][0]["anime_id"] == newcomer["anime_id"]
    assert (await client.delete(f"/api/v1/admin/vectors/{newcomer['anime_id']}")).status_code == 200
    after_delete = await _search(client)
    assert after_delete["query_info"]["cached"] is False
    assert newcomer["anime_id"] not in [r["anime_id"] for r in after_delete["results"]]
    similar = await client.get(f"/api/v1/similarity/anime/{bangumi_documents[0].anime_id}")
    assert (await client.get(f"/api/v1/similarity/anime/{bangumi_documents[0].anime_id}")).json()[
        "query_info"
    ]["cached"] is True
    job = (await client.post("/api/v1/admin/reindex", json={})).json()
    for _ in range(400):  # the app runs on the test client's own loop: poll the job
        state = (await client.get(f"/api/v1/admin/reindex/{job['job_id']}")).json()["state"]
        if state != "running":
            break
        await asyncio.sleep(0.05)
    assert state == "succeeded"
    again = await client.get(f"/api/v1/similarity/anime/{bangumi_documents[0].anime_id}")
    assert again.json()["query_info"]["cached"] is False  # the alias swap invalidated it
    assert [r["anime_id"] for r in again.json()["results"]] == [
        r["anime_id"] for r in similar.json()["results"]
    ]


async def test_replicas_sharing_redis_never_serve_an_answer_older_than_a_write(
    real_repository, index, redis_url, bangumi_documents
):
    """Two façades on one Redis: a write through one invalidates the other's cached answers."""
    redis = {"redis_url": redis_url}
    writer_settings = load_settings({}, model_repository=real_repository, qdrant_path=index, **redis)
    async with AsyncTestClient(create_app(writer_settings)) as writer:
        await _search(writer)
        assert (await _search(writer))["query_info"]["cached"] is True
        newcomer = msgspec.to_builtins(bangumi_documents[201]) | {
            "title": "Giant Robots Piloted By Teenagers"
        }
        assert (
            await writer.post("/api/v1/admin/vectors/upsert", json={"documents": [newcomer]})
        ).status_code == 200
        first = await _search(writer)
        assert first["query_info"]["cached"] is False
    # A second replica (another process in production) with the same Redis: the write's generation bump
    # is shared, so it reuses the post-write answer, never the pre-write one.
    reader_settings = load_settings({}, model_repository=real_repository, qdrant_path=index, **redis)
    async with AsyncTestClient(create_app(reader_settings)) as reader:
        shared = await _search(reader)
        assert shared["query_info"]["cached"] is True
        assert shared["results"] == first["results"]
        assert shared["results"][0]["anime_id"] == newcomer["anime_id"]


async def test_an_unreachable_redis_costs_speed_not_answers(real_repository, index):
    settings = load_settings(
        {},
        model_repository=real_repository,
        qdrant_path=index,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    async with AsyncTestClient(create_app(settings)) as client:
        for _ in range(3):
            body = await _search(client)
            assert body["query_info"]["cached"] is False and body["results"]
