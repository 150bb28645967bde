"""benchmarks.compare measures apples against apples: the naive stack answers what our service answers.

Same model (the packaged MiniLM: exported to ONNX for us, the folder itself for sentence-transformers),
same 128-token window, same index (a copy each): the top results and their scores must agree.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from benchmarks.compare import aggregate, ratios
from benchmarks.embedding_throughput import batches_of
from benchmarks.latency import TEXT_QUERIES
from benchmarks.naive_stack import copy_index
from benchmarks.naive_stack import create_app as create_naive_app
from service.app import create_app
from service.catalogue.ingest import ingest
from service.datasets.bangumi import load_bangumi
from service.runtime import build_runtime
from service.search.search_service import SearchService
from tests.conftest import DATASET_NOW, REAL_INDEX_MAX_TOKENS, dataset_cache, real_settings

ANIME = 200  # enough neighbours for a meaningful top 5, small enough to embed in a few seconds
QUERIES = [TEXT_QUERIES[0], TEXT_QUERIES[3], "alchemist brothers searching for the philosopher's stone"]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory, minilm_checkpoint: Path) -> tuple[Path, Path]:
    """(text-only repository with the exported MiniLM, a local index of the first ANIME anime)."""
    from export.text_export import export_text

    repository = tmp_path_factory.mktemp("compare-repo")
    export_text(str(minilm_checkpoint), repository, license_name="apache-2.0")
    index = tmp_path_factory.mktemp("compare-index") / "qdrant"
    documents = load_bangumi(dataset_cache(), limit=ANIME, now=DATASET_NOW)

    async def fill() -> None:
        # qdrant-client's local mode: the naive stack opens the folder with plain qdrant-client.
        runtime = await build_runtime(real_settings(repository, index, qdrant_embedded_engine="local"))
        try:
            await ingest(runtime, documents, batch_size=64)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return repository, index


@pytest.mark.minilm
async def test_the_naive_stack_ranks_its_list_like_our_encoder_and_store(
    small_index: tuple[Path, Path], minilm_checkpoint: Path, tmp_path: Path
) -> None:
    """sentence-transformers + qdrant-client against our ONNX graph + store on the same named vector:
    the same anime, the same scores, the same answer shape; only the stack differs."""
    repository, index = small_index
    ours_index = copy_index(index, tmp_path / "ours")
    naive_app = create_naive_app(
        minilm_checkpoint, copy_index(index, tmp_path / "naive"), max_tokens=REAL_INDEX_MAX_TOKENS
    )
    settings = real_settings(repository, ours_index, cache_enabled=False, qdrant_embedded_engine="local")
    transport = httpx.ASGITransport(app=naive_app)
    try:
        async with (
            AsyncTestClient(create_app(settings)) as ours,
            httpx.AsyncClient(transport=transport, base_url="http://naive") as naive,
        ):
            runtime = ours.app.state.runtime
            search = SearchService(runtime)
            for query in QUERIES:
                embedding = await search.embed_text(query)
                mine = await runtime.store.search("title", embedding.dense.tolist(), limit=5)
                body = {"query": query, "limit": 5}
                theirs = (await naive.post("/api/v1/search", json=body)).json()["results"]
                assert [r["anime_id"] for r in theirs] == [h.anime_id for h in mine], query
                assert [r["score"] for r in theirs] == pytest.approx([h.score for h in mine], abs=1e-3)
            shaped = (await ours.post("/api/v1/search", json={"query": QUERIES[0], "limit": 1})).json()
            assert set(theirs[0]) == set(shaped["results"][0])  # the same answer shape
    finally:
        naive_app.state.qdrant.close()


def test_ratios_pair_the_same_load() -> None:
    row = {"p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0, "mean_ms": 12.0, "errors": 0, "requests": 5}
    rounds = [
        [
            {**row, "target": "c", "concurrency": 8, "throughput_rps": 100.0},
            {**row, "target": "d", "concurrency": 8, "throughput_rps": 50.0, "p95_ms": 40.0},
        ]
    ]
    (pair,) = ratios(aggregate(rounds))
    assert (pair["pair"], pair["concurrency"]) == ("c/d", 8)
    assert pair["throughput_ratio"] == 2.0
    assert pair["p95_ratio"] == 0.5


def test_batches_cycle_through_the_pool() -> None:
    batches = batches_of(["a", "b", "c"], batch_size=2, total=5)
    assert batches == [["a", "b"], ["c", "a"], ["b", "c"]]
