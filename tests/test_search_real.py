"""Real semantics on real data: the packaged all-MiniLM-L6-v2 over the whole bangumi dataset.

The same search tests run on both engines (in-process ONNX Runtime and the real tritonserver),
and the two must rank identically.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.catalogue import embed_documents
from service.runtime import build_runtime
from tests.conftest import copy_index, real_settings

pytestmark = pytest.mark.minilm

# A user names a well-known title in their own words; the anime must come back in the top 5.
# (Each tuple: query, ids that count as "found": the series, or any season of it.)
ATTACK_ON_TITAN = {"bangumi-118335", "bangumi-285666", "bangumi-376739", "bangumi-415779", "bangumi-263750"}
PARAPHRASES = [
    ("Evangelion, the 1995 Gainax mecha series", {"bangumi-265"}),
    ("neon genesis evangelion TV anime", {"bangumi-265"}),
    ("the bebop cowboys, a space action series by Sunrise", {"bangumi-253"}),
    ("Totoro, the forest neighbour film from 1988", {"bangumi-302"}),
    ("the 2001 movie where a girl is spirited away", {"bangumi-311"}),
    ("brotherhood of the fullmetal alchemists", {"bangumi-1428"}),
    ("the death note notebook anime from 2006", {"bangumi-1773"}),
    ("one piece pirates TV series from 1999", {"bangumi-975"}),
    ("titans attack humanity", ATTACK_ON_TITAN),
    ("Makoto Shinkai's movie Your Name", {"bangumi-160209"}),
    ("the Kyoto Animation show K-ON about a high school band", {"bangumi-1424"}),
    ("Death Note, Madhouse psychological thriller", {"bangumi-1773"}),
]
RANKING_QUERIES = [q for q, _ in PARAPHRASES[:6]] + ["magical girls", "baseball team in high school"]


@pytest.fixture(scope="module", params=["onnx", "triton"])
async def client(request, minilm_repository: Path, real_index: Path, tmp_path_factory) -> AsyncIterator:
    overrides: dict = {}
    if request.param == "triton":
        triton = request.getfixturevalue("local_triton")
        overrides = {"encoder_engine": "triton", "triton_url": triton.endpoints.grpc_url}
    index = copy_index(real_index, tmp_path_factory.mktemp(f"index-{request.param}") / "q")
    async with AsyncTestClient(
        create_app(real_settings(minilm_repository, index, **overrides))
    ) as test_client:
        test_client.engine = request.param  # type: ignore[attr-defined]
        yield test_client


async def _search(client: AsyncTestClient, query: str, **extra) -> list[dict]:
    response = await client.post("/api/v1/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query_info"]["engine"] == client.engine  # type: ignore[attr-defined]
    return body["results"]


@pytest.mark.parametrize(("query", "expected"), PARAPHRASES, ids=[q for q, _ in PARAPHRASES])
async def test_a_title_named_in_other_words_is_found_in_the_top_5(client, query, expected):
    results = await _search(client, query, limit=5)
    found = [r["anime_id"] for r in results]
    assert expected & set(found), f"{query!r} -> {[r['title'] for r in results]}"


async def test_filters_hold_on_real_data(client):
    results = await _search(
        client, "giant robots", limit=20, filters={"genres": ["Sci-Fi"], "year_min": 1990, "year_max": 1999}
    )
    assert len(results) == 20
    assert all("Sci-Fi" in r["genres"] and 1990 <= r["year"] <= 1999 for r in results)
    movies = await _search(client, "studio ghibli", limit=10, filters={"type": "MOVIE"})
    assert movies and all(r["type"] == "MOVIE" for r in movies)


async def test_by_id_on_real_data(client):
    response = await client.get("/api/v1/search/by-id/bangumi-265")
    assert response.status_code == 200
    assert response.json()["document"]["title"] == "Neon Genesis Evangelion"


async def test_both_engines_rank_identically(minilm_repository, real_index, local_triton, tmp_path):
    rankings: dict[str, list[list[tuple[str, float]]]] = {}
    for engine in ("onnx", "triton"):
        overrides = (
            {"encoder_engine": "triton", "triton_url": local_triton.endpoints.grpc_url}
            if engine == "triton"
            else {}
        )
        index = copy_index(real_index, tmp_path / engine)
        async with AsyncTestClient(
            create_app(real_settings(minilm_repository, index, **overrides))
        ) as client:
            rankings[engine] = []
            for query in RANKING_QUERIES:
                response = await client.post("/api/v1/search", json={"query": query, "limit": 10})
                rankings[engine].append([(r["anime_id"], r["score"]) for r in response.json()["results"]])
    for onnx, triton in zip(rankings["onnx"], rankings["triton"], strict=True):
        assert [a for a, _ in onnx] == [a for a, _ in triton]
        np.testing.assert_allclose([s for _, s in onnx], [s for _, s in triton], atol=1e-5)


async def test_ingest_through_triton_writes_the_same_vectors(
    minilm_repository, real_index, local_triton, bangumi_documents, tmp_path
):
    sample = bangumi_documents[:40]
    vectors = {}
    for engine in ("onnx", "triton"):
        overrides = (
            {"encoder_engine": "triton", "triton_url": local_triton.endpoints.grpc_url}
            if engine == "triton"
            else {}
        )
        runtime = await build_runtime(real_settings(minilm_repository, tmp_path / engine, **overrides))
        try:
            points = await embed_documents(runtime, sample)
            vectors[engine] = np.array([p.vectors["text"] for p in points])
        finally:
            await runtime.close()
    np.testing.assert_allclose(vectors["onnx"], vectors["triton"], atol=1e-5)
