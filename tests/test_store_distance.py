"""Every QDRANT_DISTANCE ranks and thresholds alike: the store hands out similarities (higher is better).

Qdrant scores euclid by a distance (lower is better); the store maps it to 1 / (1 + d). Small stores
of a dozen anime with generated covers are built under each metric with the tiny models.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from PIL import Image
from qdrant_client import models

from export.clip_export import export_clip
from service.app import create_app
from service.catalogue.ingest import ingest
from service.domain.documents import AnimeDocument
from service.domain.manifest import CLIP_TEXT_EMBEDDER
from service.runtime import build_runtime
from service.search.fused_search import fused_hits
from service.settings import load_settings
from service.store.types import VectorQuery
from tests.api_calls import ids, post, wait_for_reindex
from tests.builders import encode_image, near_duplicate, synthetic_cover
from tests.thresholds import assert_threshold_applies_per_list

METRICS = ["cosine", "dot", "euclid"]
# The store's behaviour must not depend on which Qdrant runs it: the embedded default (qdrant-edge) and
# qdrant-client's local mode, the stand-in for a server's API, answer the same assertions.
ENGINES = ["edge", "local"]
TITLES = [
    "Crimson Harbor Lighthouse",
    "Silent Orbit Gardener",
    "Paper Lantern Detective",
    "Iron Meadow Ballad",
    "Frozen Clockwork Circus",
    "Velvet Thunder Academy",
    "Hollow Moon Bakery",
    "Sapphire Desert Courier",
    "Whispering Pine Samurai",
    "Neon Tide Orchestra",
    "Amber Cloud Railway",
    "Glass Forest Alchemist",
]


def b64(image: Image.Image, fmt: str = "PNG", **options) -> str:
    return base64.b64encode(encode_image(image, fmt, **options)).decode()


def _docs() -> list[AnimeDocument]:
    # Title only: the embedded text is then exactly "<title>.", so that query finds its anime first
    # by text too, whatever the (random) tiny text model makes of it.
    return [
        AnimeDocument(
            anime_id=f"dist-{i}",
            title=title,
            picture_data=b64(synthetic_cover(i)),
            thumbnail_data=b64(synthetic_cover(i).resize((80, 113)), "JPEG", quality=85),
        )
        for i, title in enumerate(TITLES)
    ]


@pytest.fixture(scope="module")
def picture_repository(tiny_repository: Path, clip_checkpoint: Path, tmp_path_factory) -> Path:
    """The tiny text model (dense + sparse) and the tiny CLIP's image tower.

    Without the CLIP text tower multimodal text asks only the text vectors, where the query's own
    anime is first for sure; the random tower's cross-modal lists would make that a matter of luck.
    """
    repository = tmp_path_factory.mktemp("distance-repo") / "models"
    shutil.copytree(tiny_repository, repository)
    export_clip(str(clip_checkpoint), repository)
    shutil.rmtree(repository / CLIP_TEXT_EMBEDDER)
    return repository


def _settings(repository: Path, index: Path, metric: str, engine: str = "edge", **overrides: object):
    # Dense text in multimodal for the same reason as above: the tiny sparse head ranks arbitrarily.
    return load_settings(
        {},
        model_repository=repository,
        qdrant_path=index,
        qdrant_distance=metric,
        qdrant_embedded_engine=engine,
        text_search_mode="dense",
        **overrides,
    )


async def _fill(repository: Path, folder: Path, metric: str, engine: str = "edge") -> None:
    runtime = await build_runtime(_settings(repository, folder, metric, engine))
    try:
        report = await ingest(runtime, _docs(), progress=False)
        assert report.image_problems == []
    finally:
        await runtime.close()


@pytest.fixture(
    scope="module",
    params=[(metric, engine) for engine in ENGINES for metric in METRICS],
    ids=lambda p: "-".join(p),
)
async def client(request, picture_repository, tmp_path_factory) -> AsyncIterator[AsyncTestClient]:
    metric, engine = request.param
    folder = tmp_path_factory.mktemp(f"distance-{metric}-{engine}") / "q"
    await asyncio.to_thread(asyncio.run, _fill(picture_repository, folder, metric, engine))
    async with AsyncTestClient(create_app(_settings(picture_repository, folder, metric, engine))) as c:
        yield c


def scores(body: dict) -> list[float]:
    return [r["score"] for r in body["results"]]


def metric_of(client: AsyncTestClient) -> str:
    return client.app.state.runtime.settings.qdrant_distance


# -- rankings -----------------------------------------------------------------------------------


async def test_a_near_duplicate_picture_finds_its_source_first(client):
    for i in range(0, len(TITLES), 2):
        screenshot = b64(near_duplicate(synthetic_cover(i)), "JPEG", quality=90)
        body = await post(client, "/api/v1/search/image", {"image": screenshot, "limit": 5})
        assert ids(body)[0] == f"dist-{i}", (metric_of(client), i)
        assert scores(body) == sorted(scores(body), reverse=True)


async def test_single_vector_scores_are_similarities_with_the_nearest_best(client):
    runtime = client.app.state.runtime
    source = (await runtime.store.get_many(["dist-3"]))["dist-3"]
    hits = await runtime.store.search("picture", source.vectors["picture"], limit=len(TITLES))
    assert hits[0].anime_id == "dist-3"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)  # the vector itself: 1.0 under every metric
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    if metric_of(client) == "euclid":
        assert all(0.0 < h.score <= 1.0 + 1e-6 for h in hits)
    similar = (await client.get("/api/v1/similarity/visual/dist-3", params={"limit": 5})).json()
    matched = [r["explanation"]["vectors"] for r in similar["results"]]
    assert all(m["score"] <= 1.0 + 1e-6 for match in matched for m in match)
    assert scores(similar) == sorted(scores(similar), reverse=True)


@pytest.mark.parametrize("ranking", ["weighted", "rrf", "dbsf"])
async def test_multimodal_rankings_put_the_source_first(client, ranking):
    for i in (1, 6, 10):
        body = await post(
            client,
            "/api/v1/search/multimodal",
            {
                "query": TITLES[i] + ".",
                "image": b64(near_duplicate(synthetic_cover(i)), "JPEG"),
                "ranking": ranking,
                "limit": 8,
            },
        )
        assert ids(body)[0] == f"dist-{i}", (metric_of(client), ranking, i)
        assert scores(body) == sorted(scores(body), reverse=True)


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
async def test_fusion_inside_the_store_puts_the_nearest_first(client, fusion):
    """Qdrant's DBSF reads raw scores as higher-is-better, i.e. farthest first on euclid distances."""
    store = client.app.state.runtime.store
    records = await store.get_many(["dist-0", "dist-7"])
    for anime_id, record in records.items():
        queries = [VectorQuery(name, record.vectors[name], 8) for name in ("picture", "thumbnail")]
        hits = await fused_hits(store, queries, fusion, limit=8)
        assert hits[0].anime_id == anime_id, (metric_of(client), fusion)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_sparse_scores_stay_dot_products(client):
    store = client.app.state.runtime.store
    vector = (await store.get_many(["dist-2"]))["dist-2"].vectors["text_sparse"]
    hits = await store.search("text_sparse", vector, limit=3)
    own = next(h for h in hits if h.anime_id == "dist-2")
    assert own.score == pytest.approx(sum(v * v for v in vector.values), rel=1e-4)


# -- score_threshold ----------------------------------------------------------------------------


def _kept_exactly(full: dict, limited: dict, threshold: float) -> None:
    expected = [r["anime_id"] for r in full["results"] if r["score"] >= threshold]
    assert ids(limited) == expected
    assert all(s >= threshold for s in scores(limited))
    assert scores(limited) == sorted(scores(limited), reverse=True)


async def test_score_threshold_keeps_exactly_the_results_scoring_at_least_it(client):
    image = b64(near_duplicate(synthetic_cover(5)), "JPEG")
    # Text search fuses several lists (names, facts, synopses): its threshold is per list, before fusion.
    search = client.app.state.search
    query = TITLES[4] + "."
    lists = await search.text_queries(query, await search.embed_text(query), None, "dense")
    found = await client.app.state.runtime.store.search_many(lists, payload=False)
    similarities = sorted({h.score for hits in found for h in hits}, reverse=True)
    middle = len(similarities) // 2
    threshold = (similarities[middle - 1] + similarities[middle]) / 2
    reaching = {h.anime_id for hits in found for h in hits if h.score >= threshold}
    cut = await post(
        client,
        "/api/v1/search",
        {"query": query, "text_mode": "dense", "limit": 50, "score_threshold": threshold},
    )
    assert cut["results"] and {r["anime_id"] for r in cut["results"]} == reaching
    requests = [
        ("/api/v1/search/multimodal", {"query": TITLES[4] + ".", "image": image, "ranking": "dbsf"}),
    ]
    for path, body in requests:
        full = await post(client, path, body | {"limit": 50})
        assert len(full["results"]) >= 6
        # Halfway across the widest gap among the top results: two requests embed and fuse alike, but
        # not to the last bit on this CPU, so a threshold on a near-tie would test float noise. The
        # inclusive bound (a score equal to the threshold is kept) is checked on the store below.
        top = scores(full)[1:7]
        gap = max(range(len(top) - 1), key=lambda i: top[i] - top[i + 1])
        threshold = (top[gap] + top[gap + 1]) / 2
        limited = await post(client, path, body | {"limit": 50, "score_threshold": threshold})
        _kept_exactly(full, limited, threshold)
    # Image search fuses picture and thumbnail inside Qdrant: the threshold is on each list's
    # similarity, before fusion (a fused RRF score is no scale to set a threshold on).
    vector = (await client.app.state.search.embed_image(image)).tolist()
    await assert_threshold_applies_per_list(client, {"image": image}, vector)
    # The store's own thresholds, per vector (similarity asks this way, one query per vector).
    store = client.app.state.runtime.store
    vector = (await store.get_many(["dist-4"]))["dist-4"].vectors["picture"]
    everything = await store.search("picture", vector, limit=50)
    for threshold in (everything[2].score, everything[-1].score, 1.0, 1.5):
        kept = await store.search("picture", vector, limit=50, score_threshold=threshold)
        assert [h.anime_id for h in kept] == [h.anime_id for h in everything if h.score >= threshold]


# -- a metric that does not fit -----------------------------------------------------------------


async def test_a_euclid_store_opened_as_cosine_is_refused_until_a_reindex_rebuilds_it(
    picture_repository, tmp_path
):
    folder = tmp_path / "q"
    await asyncio.to_thread(asyncio.run, _fill(picture_repository, folder, "euclid"))
    async with AsyncTestClient(create_app(_settings(picture_repository, folder, "cosine"))) as client:
        refused = await client.post("/api/v1/search", json={"query": "harbor"})
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "model_store_mismatch"
        assert "Euclid" in error["message"] and "QDRANT_DISTANCE is cosine" in error["message"]
        assert "reindex {}" in error["message"]  # a copy is enough: the vectors themselves fit
        info = (await client.get("/api/v1/admin/collection/info")).json()
        assert info["fits_deployed_models"] is False
        assert any("distance" in p for p in info["problems"])

        job = (await client.post("/api/v1/admin/reindex", json={})).json()
        job = await wait_for_reindex(client, job["job_id"])
        assert job["state"] == "succeeded", job
        assert job["copied"] == len(TITLES) and job["dropped_vectors"] == {}
        info = (await client.get("/api/v1/admin/collection/info")).json()
        assert info["fits_deployed_models"] is True
        assert {v["distance"] for v in info["vectors"].values()} == {"Cosine"}
        screenshot = b64(near_duplicate(synthetic_cover(8)), "JPEG")
        body = await post(client, "/api/v1/search/image", {"image": screenshot, "limit": 5})
        assert ids(body)[0] == "dist-8"
        single = await client.get("/api/v1/similarity/visual/dist-8", params={"limit": 3})
        assert single.status_code == 200 and len(single.json()["results"]) == 3


# -- index settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_index_settings_reach_the_collection_and_outlive_a_restart_and_a_plain_reindex(
    tiny_repository, tmp_path, engine
):
    folder = tmp_path / "q"
    tuned = {
        "qdrant_hnsw_m": 32,
        "qdrant_hnsw_ef_construct": 200,
        "qdrant_search_ef": 64,
        "qdrant_quantization": "scalar",
        "qdrant_on_disk_payload": True,
    }
    runtime = await build_runtime(
        load_settings(
            {}, model_repository=tiny_repository, qdrant_path=folder, qdrant_embedded_engine=engine, **tuned
        )
    )
    created: list[dict] = []
    real_create = runtime.store.backend.client.create_collection

    async def spy(*args, **kwargs):
        created.append(kwargs)
        return await real_create(*args, **kwargs)

    runtime.store.backend.client.create_collection = spy
    try:
        await runtime.store.ensure_ready()
        info = await runtime.store.collection_info()
    finally:
        await runtime.close()
    (sent,) = created
    assert sent["hnsw_config"] == models.HnswConfigDiff(m=32, ef_construct=200)
    assert isinstance(sent["quantization_config"], models.ScalarQuantization)
    assert sent["on_disk_payload"] is True
    assert info["configured_from"] == "collection"
    assert info["configured"]["hnsw_m"] == 32
    assert info["configured"]["quantization"] == "scalar" and info["configured"]["search_ef"] == 64
    # What Qdrant itself reports: a server keeps these, local mode forgets them (fixed m=16, none).
    if not runtime.store.is_local:
        assert info["hnsw"]["m"] == 32 and info["quantization"] is not None

    # Restarted with the environment's defaults: the live collection keeps what it was built with.
    settings = load_settings(
        {},
        model_repository=tiny_repository,
        qdrant_path=folder,
        qdrant_embedded_engine=engine,
        reindex_batch_size=8,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.post("/api/v1/search", json={"query": "anything"})).status_code == 200
        store = client.app.state.runtime.store
        assert store.params.hnsw_m == 32 and store.params.quantization == "scalar"
        configured = (await client.get("/api/v1/admin/collection/info")).json()["configured"]
        assert configured["hnsw_m"] == 32 and configured["quantization"] == "scalar"
        # ef is sent with each query: it follows the environment (now the default), not the record.
        assert configured["search_ef"] is None and store.params.search_ef is None

        plain = (await client.post("/api/v1/admin/reindex", json={})).json()
        plain = await wait_for_reindex(client, plain["job_id"])
        assert plain["state"] == "succeeded", plain
        assert plain["params"]["hnsw_m"] == 32 and plain["params"]["quantization"] == "scalar"
        configured = (await client.get("/api/v1/admin/collection/info")).json()["configured"]
        assert configured["hnsw_m"] == 32 and configured["hnsw_ef_construct"] == 200

        changed = (await client.post("/api/v1/admin/reindex", json={"index": {"hnsw_m": 24}})).json()
        changed = await wait_for_reindex(client, changed["job_id"])
        assert changed["state"] == "succeeded", changed
        configured = (await client.get("/api/v1/admin/collection/info")).json()["configured"]
        assert configured["hnsw_m"] == 24 and configured["quantization"] == "scalar"
        assert store.params.hnsw_m == 24


@pytest.mark.parametrize(("up_to", "exact"), [(20_000, True), (0, False)])
async def test_a_catalogue_sized_collection_is_scanned_exactly_and_a_larger_one_walks_the_graph(
    tiny_repository, tmp_path, up_to, exact
):
    """HNSW misses real neighbours at catalogue sizes (see IndexParams.exact_search_up_to); past the
    threshold the graph, with the operator's ef, takes over."""
    settings = load_settings(
        {},
        model_repository=tiny_repository,
        qdrant_path=tmp_path / "q",
        qdrant_exact_search_up_to=up_to,
        qdrant_search_ef=64,
    )
    runtime = await build_runtime(settings)
    sent: list[models.QueryRequest] = []
    real_batch = runtime.store.backend.client.query_batch_points

    async def spy(*args, **kwargs):
        sent.extend(kwargs["requests"])
        return await real_batch(*args, **kwargs)

    runtime.store.backend.client.query_batch_points = spy
    try:
        vector = (await runtime.text.encode(["giant robots"], kind="query")).dense[0].tolist()
        lexical = runtime.lexical.query("giant robots")
        await runtime.store.search_many(
            [VectorQuery("title", vector, 10), VectorQuery("text_lexical", lexical, 10)]
        )
    finally:
        await runtime.close()
    dense, sparse = sent
    assert dense.params.exact is exact
    assert dense.params.hnsw_ef == (None if exact else 64)
    assert sparse.params is None  # a sparse list is an inverted-index lookup either way


async def test_candidate_lists_name_their_anime_without_reading_payloads(client):
    """Candidate lists come back without payloads (reading them is most of a list's cost on
    qdrant-edge) and still say which anime each hit is, with the scores a payload read gives."""
    store = client.app.state.runtime.store
    record = (await store.get_many(["dist-3"]))["dist-3"]
    queries = [
        VectorQuery(name, record.vectors[name], 8) for name in ("picture", "title") if name in record.vectors
    ]
    sent: list[models.QueryRequest] = []
    real_batch = store.backend.client.query_batch_points

    async def spy(*args, **kwargs):
        sent.extend(kwargs["requests"])
        return await real_batch(*args, **kwargs)

    store.backend.client.query_batch_points = spy
    try:
        bare = await store.search_many(queries, payload=False)
        full = await store.search_many(queries, payload=True)
    finally:
        store.backend.client.query_batch_points = real_batch
    assert [r.with_payload for r in sent] == [False] * len(queries) + [True] * len(queries)
    assert [[h.anime_id for h in hits] for hits in bare] == [[h.anime_id for h in hits] for hits in full]
    # Same scores; a multivector's MaxSim sum may differ in its last bit between two calls (the engine's
    # summation order), which a CI run saw once.
    assert [[h.score for h in hits] for hits in bare] == [
        pytest.approx([h.score for h in hits], rel=1e-12, abs=1e-12) for hits in full
    ]
    assert all(h.anime_id.startswith("dist-") for hits in bare for h in hits)


def test_point_names_keep_every_pair_of_one_call_at_the_bound():
    """Past its bound the map forgets what it learnt before, never a pair of the call that passed it:
    a search names its hits right after learning them, and a forgotten one would drop a hit."""
    from service.store.point_names import PointNames

    names = PointNames(max_names=3)
    names.learn([("p1", "a1"), ("p2", "a2")])
    names.learn([("p3", "a3"), ("p4", "a4")])
    assert [names.name(p) for p in ("p1", "p2", "p3", "p4")] == [None, None, "a3", "a4"]
    assert names.unknown(["p4", "p1", "p1"]) == ["p1"]
