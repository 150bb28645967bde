"""Pictures end to end: image search, multimodal fusion, similarity, hostile images, both engines.

Real anime documents get synthetic covers (the tiny CLIP is random, so pictures are generated); a
few anime have no picture at all, to check that absent vectors stay absent.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from PIL import Image

from service.app import create_app
from service.catalogue.ingest import ingest
from service.domain.documents import AnimeDocument
from service.runtime import build_runtime
from service.settings import load_settings
from tests.api_calls import ids, post
from tests.builders import encode_image, near_duplicate, synthetic_cover
from tests.conftest import copy_index

WITH_PICTURES = 36
WITHOUT_PICTURES = 4
# What a text model stores per anime (synopsis only where the anime has one), and the picture vectors.
TEXT_VECTORS = {"title", "facts", "synopsis", "text_lexical"}
IMAGE = {"picture", "thumbnail"}


def b64(image: Image.Image, fmt: str = "PNG", **options) -> str:
    return base64.b64encode(encode_image(image, fmt, **options)).decode()


@pytest.fixture(scope="module")
def picture_docs(bangumi_documents) -> list[AnimeDocument]:
    docs = []
    # Live-action entries are left out of searches by default: anime only, so every cover can be found.
    anime = [d for d in bangumi_documents if d.type != "LIVE_ACTION"]
    for i, doc in enumerate(anime[: WITH_PICTURES + WITHOUT_PICTURES]):
        if i < WITH_PICTURES:
            cover = synthetic_cover(i)
            doc = msgspec.structs.replace(
                doc,
                picture_data=b64(cover),
                thumbnail_data="data:image/jpeg;base64," + b64(cover.resize((80, 113)), "JPEG", quality=85),
            )
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def picture_index(real_repository: Path, picture_docs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("picture-index")

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=real_repository, qdrant_path=folder))
        try:
            report = await ingest(runtime, picture_docs, progress=False)
            assert report.image_problems == []
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


def _settings(repository: Path, index: Path, engine: str, triton=None):
    overrides: dict = {}
    if engine == "triton":
        overrides = {"encoder_engine": "triton", "triton_url": triton.endpoints.grpc_url}
    return load_settings({}, model_repository=repository, qdrant_path=index, **overrides)


@pytest.fixture(scope="module", params=["onnx", "triton"])
async def client(request, real_repository, picture_index, tmp_path_factory) -> AsyncIterator[AsyncTestClient]:
    triton = request.getfixturevalue("local_triton") if request.param == "triton" else None
    index = copy_index(picture_index, tmp_path_factory.mktemp(f"pictures-{request.param}") / "q")
    async with AsyncTestClient(create_app(_settings(real_repository, index, request.param, triton))) as c:
        yield c


# -- image search -----------------------------------------------------------------------------


async def test_a_screenshot_like_copy_finds_its_source_anime_first(client, picture_docs):
    for i in range(0, WITH_PICTURES, 3):
        screenshot = b64(near_duplicate(synthetic_cover(i)), "JPEG", quality=90)
        body = await post(client, "/api/v1/search/image", {"image": screenshot, "limit": 5})
        assert ids(body)[0] == picture_docs[i].anime_id, f"cover {i}"
        assert body["query_info"]["vectors"] == ["picture", "thumbnail"]


async def test_anime_without_pictures_have_no_picture_vectors_and_never_match_a_picture(client, picture_docs):
    bare = {d.anime_id for d in picture_docs[WITH_PICTURES:]}
    for anime_id in bare:
        record = (await client.get(f"/api/v1/search/by-id/{anime_id}")).json()
        assert {"title", "text_lexical"} <= set(record["vectors"]) <= TEXT_VECTORS
    body = await post(client, "/api/v1/search/image", {"image": b64(synthetic_cover(99)), "limit": 100})
    assert len(body["results"]) == WITH_PICTURES
    assert not bare & set(ids(body))
    with_picture = (await client.get(f"/api/v1/search/by-id/{picture_docs[0].anime_id}")).json()
    assert {"picture", "thumbnail", "title"} <= set(with_picture["vectors"]) <= TEXT_VECTORS | IMAGE
    assert "picture_data" not in with_picture["document"]


async def test_image_filters_apply(client, picture_docs):
    wanted = picture_docs[0].type
    body = await post(
        client,
        "/api/v1/search/image",
        {"image": b64(synthetic_cover(0)), "limit": 50, "filters": {"type": wanted}},
    )
    assert body["results"] and all(r["type"] == wanted for r in body["results"])


# -- multimodal -------------------------------------------------------------------------------


async def test_weights_one_and_zero_give_the_single_modal_answers(client, picture_docs):
    image = b64(near_duplicate(synthetic_cover(4)), "JPEG")
    query = picture_docs[10].title
    for ranking in ("weighted", "rrf", "dbsf"):
        text_only = await post(
            client, "/api/v1/search/multimodal", {"query": query, "ranking": ranking, "limit": 20}
        )
        image_only = await post(
            client, "/api/v1/search/multimodal", {"image": image, "ranking": ranking, "limit": 20}
        )
        both = {"query": query, "image": image, "ranking": ranking, "limit": 20}
        text_side = await post(
            client, "/api/v1/search/multimodal", both | {"text_weight": 1, "image_weight": 0}
        )
        image_side = await post(
            client, "/api/v1/search/multimodal", both | {"text_weight": 0, "image_weight": 1}
        )
        assert ids(text_side) == ids(text_only), ranking
        assert ids(image_side) == ids(image_only), ranking
        assert text_only["query_info"]["weights"] == {"text": 1.0}
        # The text part also asks the pictures, through the CLIP text tower.
        assert text_only["query_info"]["vectors"] == [
            "title",
            "facts",
            "synopsis",
            "text_lexical",
            "clip_text->picture",
            "clip_text->thumbnail",
        ]
    assert ids(image_only)[0] == picture_docs[4].anime_id


async def test_moving_the_weights_moves_the_ranking_monotonically(client, picture_docs):
    body = {
        "query": picture_docs[20].title,
        "image": b64(near_duplicate(synthetic_cover(7)), "JPEG"),
        "limit": 100,
    }
    sweep = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
    rankings = []
    for weight in sweep:
        answer = await post(
            client, "/api/v1/search/multimodal", body | {"text_weight": weight, "image_weight": 1 - weight}
        )
        rankings.append({r["anime_id"]: position for position, r in enumerate(answer["results"])})
    common = set.intersection(*(set(r) for r in rankings))
    assert len(common) >= WITH_PICTURES
    for a, b in itertools.combinations(sorted(common), 2):
        order = [r[a] < r[b] for r in rankings]
        flips = sum(1 for x, y in itertools.pairwise(order) if x != y)
        assert flips <= 1, f"{a} vs {b} flips {flips} times along {sweep}"
    # The image's own anime can only lose ground as the weight moves to text.
    source = picture_docs[7].anime_id
    positions = [r.get(source, 10**6) for r in rankings]
    assert positions == sorted(positions)
    assert positions[0] == 0


async def test_multimodal_requests_are_validated(client):
    await post(client, "/api/v1/search/multimodal", {"limit": 5}, status=422)
    await post(
        client, "/api/v1/search/multimodal", {"query": "x", "text_weight": 0, "image_weight": 0}, status=422
    )
    await post(client, "/api/v1/search/multimodal", {"query": "x", "text_weight": 1.5}, status=422)
    await post(client, "/api/v1/search/multimodal", {"query": "x", "ranking": "borda"}, status=422)


# -- similarity -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["anime", "visual", "vector"])
async def test_similarity_never_returns_the_anime_itself_and_explains_matches(client, picture_docs, kind):
    for doc in picture_docs[:WITH_PICTURES:5]:
        response = await client.get(f"/api/v1/similarity/{kind}/{doc.anime_id}", params={"limit": 10})
        assert response.status_code == 200, response.text
        body = response.json()
        assert doc.anime_id not in ids(body)
        assert len(body["results"]) == 10
        record = (await client.get(f"/api/v1/search/by-id/{doc.anime_id}")).json()
        expected = {
            "anime": TEXT_VECTORS & set(record["vectors"]),
            "visual": IMAGE,
            "vector": (TEXT_VECTORS | IMAGE) & set(record["vectors"]),
        }
        assert set(body["query_info"]["vectors"]) == expected[kind]
        for result in body["results"]:
            matched = {m["vector"] for m in result["explanation"]["vectors"]}
            assert matched and matched <= expected[kind]
            shared = set(result["explanation"]["shared_genres"])
            assert shared <= set(doc.genres) and shared <= set(result["genres"])


async def test_similarity_by_several_vectors_is_a_rank_fusion_that_explains_each(client, picture_docs):
    """Content similarity asks every text vector of the anime (names, facts, synopses, words) and fuses
    them by rank; each result still shows every vector's own similarity and rank."""
    body = (await client.get(f"/api/v1/similarity/anime/{picture_docs[3].anime_id}")).json()
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    for result in body["results"]:
        matches = result["explanation"]["vectors"]
        # RRF with k=60: each list adds at most 1/60, so the score says in how many lists and how high.
        assert 0 < result["score"] <= len(matches) / 60 + 1e-9
        assert {m["vector"] for m in matches} <= TEXT_VECTORS and all(m["rank"] >= 1 for m in matches)


async def test_similarity_errors(client, picture_docs):
    unknown = await client.get("/api/v1/similarity/anime/no-such-anime")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    bare = picture_docs[-1].anime_id
    missing = await client.get(f"/api/v1/similarity/visual/{bare}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "vector_not_found"
    assert (await client.get(f"/api/v1/similarity/vector/{bare}")).status_code == 200  # falls back to text
    assert (await client.get(f"/api/v1/similarity/sideways/{bare}")).status_code in (400, 422)
    assert (await client.get(f"/api/v1/similarity/anime/{bare}", params={"limit": 0})).status_code in (
        400,
        422,
    )
    bad_years = {"year_min": 2000, "year_max": 1990}
    assert (await client.get(f"/api/v1/similarity/anime/{bare}", params=bad_years)).status_code == 422


async def test_similarity_query_filters(client, picture_docs):
    doc = picture_docs[0]
    response = await client.get(
        f"/api/v1/similarity/vector/{doc.anime_id}", params={"type": [doc.type], "limit": 50}
    )
    assert response.status_code == 200
    assert all(r["type"] == doc.type for r in response.json()["results"])


async def test_batch_answers_each_id_once_in_order_with_one_store_query(client, picture_docs):
    runtime = client.app.state.runtime
    qdrant = runtime.store.backend.client
    calls = {"batch": 0, "single": 0}
    batch_query, single_query = qdrant.query_batch_points, qdrant.query_points

    async def count_batch(*args, **kwargs):
        calls["batch"] += 1
        return await batch_query(*args, **kwargs)

    async def count_single(*args, **kwargs):
        calls["single"] += 1
        return await single_query(*args, **kwargs)

    qdrant.query_batch_points, qdrant.query_points = count_batch, count_single
    try:
        wanted = [
            picture_docs[1].anime_id,
            "no-such-anime",
            picture_docs[2].anime_id,
            picture_docs[-1].anime_id,
        ]
        body = await post(
            client, "/api/v1/similarity/batch", {"anime_ids": wanted, "kind": "visual", "limit": 5}
        )
    finally:
        qdrant.query_batch_points, qdrant.query_points = batch_query, single_query
    assert [item["anime_id"] for item in body["results"]] == wanted
    assert [item["status_code"] for item in body["results"]] == [200, 404, 200, 404]
    assert body["results"][1]["error"]["code"] == "not_found"
    assert body["results"][3]["error"]["code"] == "vector_not_found"
    for item in (body["results"][0], body["results"][2]):
        assert len(item["results"]) == 5 and item["anime_id"] not in ids(item)
    assert calls == {"batch": 1, "single": 0}
    too_many = {"anime_ids": [f"id-{i}" for i in range(51)]}
    await post(client, "/api/v1/similarity/batch", too_many, status=422)


# -- hostile pictures -------------------------------------------------------------------------


def _bomb_png(side: int = 30000) -> bytes:
    """A valid 1-bit PNG of side x side pixels: a few KB on disk, gigabytes if decoded as RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _hostile() -> list[tuple[str, str, int, str]]:
    jpeg = encode_image(synthetic_cover(1), "JPEG")
    strip = encode_image(Image.new("RGB", (1, 100000), "white"), "PNG")
    gif = encode_image(synthetic_cover(2).convert("P"), "GIF")
    eleven_mb = base64.b64encode(b"\xff" * (11 * 1024 * 1024)).decode()
    return [
        ("truncated jpeg", base64.b64encode(jpeg[: len(jpeg) // 2]).decode(), 422, "corrupt_image"),
        ("1x100000", base64.b64encode(strip).decode(), 422, "bad_image_dimensions"),
        ("decompression bomb", base64.b64encode(_bomb_png()).decode(), 422, "bad_image_dimensions"),
        ("text file", base64.b64encode(b"just some notes\n" * 20).decode(), 415, "unsupported_image_format"),
        ("gif", base64.b64encode(gif).decode(), 415, "unsupported_image_format"),
        ("11 MB", eleven_mb, 413, "image_too_large"),
        ("invalid base64", "this is %%% not base64 ***", 422, "invalid_base64"),
    ]


@pytest.mark.parametrize(("name", "data", "status", "code"), _hostile(), ids=[h[0] for h in _hostile()])
async def test_hostile_pictures_get_a_clear_4xx_and_the_service_stays_healthy(
    client, name, data, status, code
):
    for path, body in (
        ("/api/v1/search/image", {"image": data}),
        ("/api/v1/search/multimodal", {"image": data, "query": "robots"}),
    ):
        response = await client.post(path, json=body)
        assert response.status_code == status, (name, path, response.text[:300])
        assert response.json()["error"]["code"] == code
    assert (await client.get("/health")).status_code == 200


async def test_a_body_over_the_server_limit_is_refused_with_413(client):
    response = await client.post(
        "/api/v1/search/image",
        content=b'{"image": "' + b"A" * (17 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


# -- engines ----------------------------------------------------------------------------------


async def test_both_engines_rank_pictures_and_multimodal_identically(
    real_repository, picture_index, local_triton, picture_docs, tmp_path
):
    requests = [
        ("/api/v1/search/image", {"image": b64(near_duplicate(synthetic_cover(5)), "JPEG"), "limit": 10}),
        (
            "/api/v1/search/multimodal",
            {"query": picture_docs[3].title, "image": b64(synthetic_cover(8)), "limit": 10},
        ),
    ]
    answers: dict[str, list[list[str]]] = {}
    for engine in ("onnx", "triton"):
        index = copy_index(picture_index, tmp_path / engine)
        async with AsyncTestClient(create_app(_settings(real_repository, index, engine, local_triton))) as c:
            answers[engine] = [ids(await post(c, path, body)) for path, body in requests]
    assert answers["onnx"] == answers["triton"]


def test_pictures_in_files_are_found_by_the_ingest_cli(
    real_repository, bangumi_documents, tmp_path, monkeypatch
):
    """`python -m service.catalogue.ingest file docs.json --images DIR` embeds <id>.picture.* from DIR."""
    from service.catalogue.ingest import main as ingest_main

    docs = bangumi_documents[:3]
    (tmp_path / "docs.json").write_bytes(msgspec.json.encode(docs))
    images = tmp_path / "images"
    images.mkdir()
    synthetic_cover(0).save(images / f"{docs[0].anime_id}.picture.png")
    synthetic_cover(1).save(images / f"{docs[1].anime_id}.thumbnail.jpg", quality=80)
    (images / f"{docs[2].anime_id}.picture.jpg").write_bytes(b"not a jpeg")
    monkeypatch.setenv("MODEL_REPOSITORY", str(real_repository))
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "q"))
    assert ingest_main(["file", str(tmp_path / "docs.json"), "--images", str(images)]) == 0

    async def vectors() -> dict[str, list[str]]:
        runtime = await build_runtime(
            load_settings({}, model_repository=real_repository, qdrant_path=tmp_path / "q")
        )
        try:
            found = await runtime.store.get_many([d.anime_id for d in docs])
        finally:
            await runtime.close()
        return {k: sorted(v.vectors) for k, v in found.items()}

    stored = asyncio.run(vectors())
    pictures = {a: [v for v in vectors if v in IMAGE] for a, vectors in stored.items()}
    assert pictures[docs[0].anime_id] == ["picture"]
    assert pictures[docs[1].anime_id] == ["thumbnail"]
    assert pictures[docs[2].anime_id] == []  # the broken file was reported, not stored as garbage
    assert all("title" in vectors for vectors in stored.values())
