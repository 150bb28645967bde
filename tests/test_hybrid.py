"""BGE-m3-style hybrid text search: the sparse head's lexical weights stored as `text_sparse` and
fused with the dense vector by RRF inside Qdrant (a user choice, hybrid by default)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.fusion import Candidate, RankedList, fuse
from service.ingest import ingest
from service.runtime import build_runtime
from service.settings import load_settings
from service.text_compose import compose_text

QUERIES = ["giant robot", "校园 恋爱", "a summer festival with friends"]


@pytest.fixture(scope="module")
def hybrid_index(tiny_repository: Path, bangumi_documents, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hybrid-index")

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=tiny_repository, qdrant_path=folder))
        try:
            await ingest(runtime, bangumi_documents[:60], progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


@pytest.fixture(scope="module")
async def client(tiny_repository: Path, hybrid_index: Path) -> AsyncIterator[AsyncTestClient]:
    settings = load_settings({}, model_repository=tiny_repository, qdrant_path=hybrid_index)
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def test_sparse_vectors_hold_the_documents_own_tokens(client, bangumi_documents):
    runtime = client.app.state.runtime
    docs = bangumi_documents[:5]
    records = await runtime.store.get_many([d.anime_id for d in docs])
    for doc in docs:
        sparse = records[doc.anime_id].vectors["text_sparse"]
        batch = runtime.text.tokenizer.encode([compose_text(doc)])
        tokens = (
            set(batch.input_ids[0][: batch.lengths[0]].tolist()) - runtime.text.tokenizer.special_token_ids
        )
        assert sparse.indices and set(sparse.indices) <= tokens
        assert all(v > 0 for v in sparse.values)


async def test_hybrid_is_the_default_and_dense_is_a_choice(client):
    hybrid = (await client.post("/api/v1/search", json={"query": "giant robot"})).json()
    assert hybrid["query_info"]["mode"] == "hybrid"
    assert hybrid["query_info"]["vectors"] == ["text", "text_sparse"]
    dense = (await client.post("/api/v1/search", json={"query": "giant robot", "text_mode": "dense"})).json()
    assert dense["query_info"]["mode"] == "dense" and dense["query_info"]["vectors"] == ["text"]


@pytest.mark.parametrize("query", QUERIES)
async def test_qdrant_side_fusion_ranks_like_our_pure_rrf(client, query):
    """The engine fuses (Query API, k=60); the same lists fused by service/fusion.py rank alike."""
    runtime = client.app.state.runtime
    embeddings = await runtime.text.encode([query])
    dense = await runtime.store.search("text", embeddings.dense[0].tolist(), limit=100)
    sparse = await runtime.store.search("text_sparse", embeddings.sparse[0], limit=100)
    ours = fuse(
        [
            RankedList("text", "text", [Candidate(h.anime_id, h.score) for h in dense]),
            RankedList("text_sparse", "text_sparse", [Candidate(h.anime_id, h.score) for h in sparse]),
        ],
        {"text": 1.0, "text_sparse": 1.0},
        "rrf",
        limit=10,
    )
    response = (await client.post("/api/v1/search", json={"query": query, "limit": 10})).json()
    engine_scores = [r["score"] for r in response["results"]]
    # Qdrant sums 1/(k + rank) over lists; ours is the mean over the two parts: a factor of 2.
    assert engine_scores == pytest.approx([2 * f.score for f in ours], rel=1e-5)
    assert [r["anime_id"] for r in response["results"]][:3] == [f.key for f in ours][:3]


async def test_a_text_model_without_sparse_head_answers_dense_even_when_asked_for_hybrid(
    minilm_repository, tmp_path
):
    settings = load_settings({}, model_repository=minilm_repository, qdrant_path=tmp_path / "q")
    async with AsyncTestClient(create_app(settings)) as client:
        body = (await client.post("/api/v1/search", json={"query": "x", "text_mode": "hybrid"})).json()
        assert body["query_info"]["mode"] == "dense"
