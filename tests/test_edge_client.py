"""EdgeQdrantClient (qdrant-edge in-process) answers like qdrant-client's local mode.

Every scenario runs the same calls on both clients over the same small deterministic collection
(dense, multi and sparse-IDF vectors, anime-like payloads) and compares the answers. Local mode is
Qdrant's reference for the server API here; the edge client must be a drop-in for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import AsyncQdrantClient, models

from service.store.edge_client import EdgeQdrantClient, EdgeRequestError, EdgeStorageError, StoreLocked
from service.store.edge_convert import Unsupported
from service.store.folders import copy_folder

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "anime_1"
POINTS = 48
DIMS = {"text": 8, "picture": 6}
TOKENS_DIM = 4
GENRES = ["Action", "Drama", "Comedy", "Romance", "Sci-Fi", "Mystery"]
TYPES = ["TV", "Movie", "OVA"]
VOCABULARY = 40
# Both engines score in float32; a prefetch can differ from a plain query in the last bits.
TOLERANCE = 1e-5


def _pid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"anime-{i}"))


def _points(seed: int = 7) -> list[models.PointStruct]:
    rng = random.Random(seed)
    points = []
    for i in range(POINTS):
        vector: dict[str, Any] = {name: [rng.gauss(0, 1) for _ in range(d)] for name, d in DIMS.items()}
        if i % 5 == 4:
            del vector["picture"]  # some anime have no picture, so lists have different members
        vector["tokens"] = [[rng.gauss(0, 1) for _ in range(TOKENS_DIM)] for _ in range(1 + i % 3)]
        terms = sorted(rng.sample(range(VOCABULARY), 3 + i % 4))
        vector["text_sparse"] = models.SparseVector(
            indices=terms, values=[rng.uniform(0.1, 1) for _ in terms]
        )
        payload = {
            "anime_id": f"anime-{i}",
            "year": 1990 + i % 30,
            "type": TYPES[i % 3],
            "genres": sorted(set(rng.sample(GENRES, 1 + i % 3))),
            "score": round(rng.uniform(5, 9.5), 2),
            "model_version": "v1" if i % 4 else "v0",
        }
        points.append(models.PointStruct(id=_pid(i), vector=vector, payload=payload))
    return points


async def _create(client: Any, name: str = COLLECTION, metadata: dict[str, Any] | None = None) -> None:
    await client.create_collection(
        name,
        vectors_config={
            **{n: models.VectorParams(size=d, distance=models.Distance.COSINE) for n, d in DIMS.items()},
            "tokens": models.VectorParams(
                size=TOKENS_DIM,
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            ),
        },
        sparse_vectors_config={"text_sparse": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        hnsw_config=models.HnswConfigDiff(m=32, ef_construct=200),
        on_disk_payload=False,
        metadata=metadata or {"avs_index_params": {"hnsw_m": 32}},
    )


Pair = tuple[EdgeQdrantClient, AsyncQdrantClient]


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    """Both clients with the same collection and points."""
    edge = EdgeQdrantClient(tmp_path / "edge")
    local = AsyncQdrantClient(path=str(tmp_path / "local"))
    for client in (edge, local):
        await _create(client)
        await client.upsert(COLLECTION, points=_points(), wait=True)
    yield edge, local
    await edge.close()
    await local.close()


async def both(pair: Pair, call: Callable[[Any], Awaitable[Any]]) -> tuple[Any, Any]:
    edge, local = pair
    return await call(edge), await call(local)


def assert_same_points(ours: Sequence[Any], theirs: Sequence[Any]) -> None:
    """Same ids in the same order and the same scores; points whose scores tie may come in any order."""
    assert [p.score for p in ours] == pytest.approx([p.score for p in theirs], rel=TOLERANCE, abs=TOLERANCE)
    groups_ours: list[set[Any]] = []
    groups_theirs: list[set[Any]] = []
    previous = 0.0
    for a, b in zip(ours, theirs, strict=True):
        if groups_ours and abs(a.score - previous) <= TOLERANCE:
            groups_ours[-1].add(a.id)
            groups_theirs[-1].add(b.id)
        else:
            groups_ours.append({a.id})
            groups_theirs.append({b.id})
        previous = a.score
    assert groups_ours == groups_theirs


def assert_same_vectors(ours: Any, theirs: Any) -> None:
    assert (ours is None) == (theirs is None)
    if ours is None:
        return
    assert ours.keys() == theirs.keys()
    for name, vector in ours.items():
        other = theirs[name]
        if isinstance(vector, models.SparseVector):
            pairs = sorted(zip(vector.indices, vector.values, strict=True))
            expected = sorted(zip(other.indices, other.values, strict=True))
            assert [i for i, _ in pairs] == [i for i, _ in expected]
            assert [v for _, v in pairs] == pytest.approx([v for _, v in expected], rel=TOLERANCE)
        elif vector and isinstance(vector[0], list):
            assert len(vector) == len(other)
            for row, other_row in zip(vector, other, strict=True):
                assert row == pytest.approx(other_row, rel=TOLERANCE, abs=TOLERANCE)
        else:
            assert vector == pytest.approx(other, rel=TOLERANCE, abs=TOLERANCE)


def assert_same_records(ours: Sequence[models.Record], theirs: Sequence[models.Record]) -> None:
    assert [r.id for r in ours] == [r.id for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.payload == b.payload
        assert_same_vectors(a.vector, b.vector)


def _query_vector(seed: int, name: str) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0, 1) for _ in range(DIMS[name])]


SPARSE_QUERY = models.SparseVector(indices=[1, 5, 9, 17, 33], values=[1.0, 0.8, 0.5, 0.3, 1.2])
TOKENS_QUERY = [[0.3, -1.0, 0.5, 0.2], [1.1, 0.1, -0.4, 0.9]]


# -- collection lifecycle --------------------------------------------------------------------------


async def test_collection_info_reports_the_config_and_the_shard(pair: Pair):
    ours, theirs = await both(pair, lambda c: c.get_collection(COLLECTION))
    assert ours.config.params.vectors == theirs.config.params.vectors
    assert ours.config.params.sparse_vectors == theirs.config.params.sparse_vectors
    assert ours.config.metadata == theirs.config.metadata == {"avs_index_params": {"hnsw_m": 32}}
    assert ours.points_count == theirs.points_count == POINTS
    assert ours.config.params.on_disk_payload is False
    # What Qdrant's engine keeps (local mode forgets: fixed m=16).
    assert (ours.config.hnsw_config.m, ours.config.hnsw_config.ef_construct) == (32, 200)
    assert ours.segments_count >= 1 and ours.status == models.CollectionStatus.GREEN
    assert (ours.config.params.shard_number, ours.config.params.replication_factor) == (1, 1)


async def test_quantization_is_created_and_reported(tmp_path: Path):
    client = EdgeQdrantClient(tmp_path / "edge")
    quantization = models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
    )
    try:
        await client.create_collection(
            "q",
            vectors_config={"text": models.VectorParams(size=4, distance=models.Distance.COSINE)},
            quantization_config=quantization,
        )
        await client.upsert("q", [models.PointStruct(id=1, vector={"text": [1.0, 0.0, 0.0, 0.0]})])
        info = await client.get_collection("q")
        assert info.config.quantization_config == quantization
        params = models.SearchParams(
            hnsw_ef=64, quantization=models.QuantizationSearchParams(rescore=True, oversampling=2.0)
        )
        hits = await client.query_points("q", query=[1.0, 0.0, 0.0, 0.0], using="text", search_params=params)
        assert [p.id for p in hits.points] == [1]
    finally:
        await client.close()


async def test_existing_names_and_missing_collections_fail_like_local_mode(pair: Pair):
    for client in pair:
        with pytest.raises(ValueError, match="already exists"):
            await _create(client)
        with pytest.raises(ValueError, match="not found"):
            await client.count("nope")
        assert await client.collection_exists(COLLECTION) and not await client.collection_exists("nope")


async def test_payload_indexes_are_kept_by_the_shard(pair: Pair, tmp_path: Path):
    edge, _ = pair
    await edge.create_payload_index(COLLECTION, "genres", field_schema=models.PayloadSchemaType.KEYWORD)
    await edge.create_payload_index(COLLECTION, "year", field_schema=models.PayloadSchemaType.INTEGER)
    schema = (await edge.get_collection(COLLECTION)).payload_schema
    assert schema["genres"].data_type == models.PayloadSchemaType.KEYWORD
    assert schema["year"].data_type == models.PayloadSchemaType.INTEGER and schema["year"].points == POINTS


async def test_metadata_update_merges_like_local_mode(pair: Pair):
    async def update(client: Any) -> Any:
        await client.update_collection(COLLECTION, metadata={"added": [1, 2], "avs_index_params": None})
        return (await client.get_collection(COLLECTION)).config.metadata

    ours, theirs = await both(pair, update)
    assert ours == theirs == {"added": [1, 2]}


async def test_aliases_swap_atomically_and_follow_a_dropped_collection(pair: Pair):
    async def scenario(client: Any) -> list[Any]:
        await _create(client, "anime_2", metadata={"second": True})
        await client.upsert("anime_2", points=_points(seed=11)[:5])
        create = models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=COLLECTION, alias_name="anime")
        )
        await client.update_collection_aliases(change_aliases_operations=[create])
        before = (await client.get_aliases()).aliases
        count_before = (await client.count("anime")).count
        swap = [
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="anime")),
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name="anime_2", alias_name="anime")
            ),
        ]
        await client.update_collection_aliases(change_aliases_operations=swap)
        after = (await client.get_aliases()).aliases
        count_after = (await client.count("anime")).count
        info = (await client.get_collection("anime")).config.metadata
        bad = models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="no", alias_name="x")
        )
        with pytest.raises(ValueError, match="not found"):
            await client.update_collection_aliases([bad])
        dropped = await client.delete_collection("anime_2")
        return [before, count_before, after, count_after, info, dropped, (await client.get_aliases()).aliases]

    ours, theirs = await both(pair, scenario)
    assert ours == theirs
    assert ours[1] == POINTS and ours[3] == 5 and ours[-1] == []


async def test_aliases_survive_a_reopen(tmp_path: Path):
    client = EdgeQdrantClient(tmp_path)
    await _create(client)
    operation = models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=COLLECTION, alias_name="anime")
    )
    await client.update_collection_aliases([operation])
    await client.close()
    reopened = EdgeQdrantClient(tmp_path)
    try:
        assert [(a.alias_name, a.collection_name) for a in (await reopened.get_aliases()).aliases] == [
            ("anime", COLLECTION)
        ]
        assert await reopened.collection_exists("anime")
    finally:
        await reopened.close()


# -- points ----------------------------------------------------------------------------------------


async def test_retrieve_returns_the_same_records_in_the_order_asked(pair: Pair):
    ids = [_pid(3), _pid(0), str(uuid.uuid4()), _pid(4), _pid(3)]
    ours, theirs = await both(pair, lambda c: c.retrieve(COLLECTION, ids=ids, with_vectors=True))
    assert_same_records(ours, theirs)
    assert len(ours) == 4 and "picture" not in ours[2].vector  # anime-4 has no picture
    ours, theirs = await both(
        pair, lambda c: c.retrieve(COLLECTION, ids=ids, with_payload=["anime_id"], with_vectors=["tokens"])
    )
    assert_same_records(ours, theirs)
    assert ours[0].payload == {"anime_id": "anime-3"}


async def test_scroll_pages_through_every_point_in_the_same_order(pair: Pair):
    async def pages(client: Any) -> list[tuple[list[models.Record], Any]]:
        out, offset = [], None
        while True:
            records, offset = await client.scroll(
                COLLECTION, limit=7, offset=offset, with_payload=True, with_vectors=True
            )
            out.append((records, offset))
            if offset is None:
                return out

    ours, theirs = await both(pair, pages)
    assert [offset for _, offset in ours] == [offset for _, offset in theirs]
    assert_same_records([r for page, _ in ours for r in page], [r for page, _ in theirs for r in page])
    assert sum(len(page) for page, _ in ours) == POINTS


FILTERS = {
    "genres any-of": models.Filter(
        must=[models.FieldCondition(key="genres", match=models.MatchAny(any=["Drama", "Mystery"]))]
    ),
    "year range": models.Filter(
        must=[models.FieldCondition(key="year", range=models.Range(gte=1995, lte=2004))]
    ),
    "type": models.Filter(must=[models.FieldCondition(key="type", match=models.MatchValue(value="TV"))]),
    "combined": models.Filter(
        must=[
            models.FieldCondition(key="genres", match=models.MatchValue(value="Action")),
            models.FieldCondition(key="year", range=models.Range(gt=1992)),
        ],
        must_not=[models.FieldCondition(key="type", match=models.MatchValue(value="OVA"))],
    ),
    "should and nested filter": models.Filter(
        should=[
            models.FieldCondition(key="type", match=models.MatchValue(value="Movie")),
            models.Filter(
                must=[
                    models.FieldCondition(key="score", range=models.Range(gte=8.0)),
                    models.FieldCondition(key="genres", match=models.MatchExcept(**{"except": ["Comedy"]})),
                ]
            ),
        ]
    ),
    "has vector": models.Filter(must=[models.HasVectorCondition(has_vector="picture")]),
    "has id": models.Filter(must=[models.HasIdCondition(has_id=[_pid(1), _pid(2), _pid(40)])]),
    "min should": models.Filter(
        min_should=models.MinShould(
            conditions=[
                models.FieldCondition(key="genres", match=models.MatchValue(value=g)) for g in GENRES[:3]
            ],
            min_count=2,
        )
    ),
    "empty and null": models.Filter(
        must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key="genres"))],
        must=[models.IsNullCondition(is_null=models.PayloadField(key="missing"))],
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
async def test_filters_count_and_select_the_same_points(pair: Pair, name: str):
    flt = FILTERS[name]

    async def select(client: Any) -> tuple[int, list[Any]]:
        count = (await client.count(COLLECTION, count_filter=flt, exact=True)).count
        records, _ = await client.scroll(COLLECTION, scroll_filter=flt, limit=POINTS, with_payload=False)
        return count, [r.id for r in records]

    ours, theirs = await both(pair, select)
    assert ours == theirs
    assert 0 < ours[0] < POINTS or name == "empty and null"


async def test_facet_counts_match_with_and_without_a_payload_index(pair: Pair):
    ours, theirs = await both(pair, lambda c: c.facet(COLLECTION, key="model_version", limit=100, exact=True))
    assert ours == theirs and {h.value: h.count for h in ours.hits} == {"v1": 36, "v0": 12}
    edge, _ = pair
    await edge.create_payload_index(COLLECTION, "genres", field_schema=models.PayloadSchemaType.KEYWORD)
    flt = FILTERS["year range"]
    ours, theirs = await both(pair, lambda c: c.facet(COLLECTION, key="genres", facet_filter=flt, exact=True))
    assert ours == theirs


async def test_delete_removes_points_like_local_mode(pair: Pair):
    async def scenario(client: Any) -> tuple[int, list[Any]]:
        await client.delete(COLLECTION, points_selector=models.PointIdsList(points=[_pid(0), _pid(5)]))
        await client.delete(COLLECTION, points_selector=FILTERS["type"])
        left = (await client.count(COLLECTION)).count
        return left, [r.id for r in await client.retrieve(COLLECTION, ids=[_pid(0), _pid(1), _pid(3)])]

    ours, theirs = await both(pair, scenario)
    assert ours == theirs and ours[1] == [_pid(1)]


async def test_payload_updates_match_local_mode(pair: Pair):
    async def scenario(client: Any) -> list[models.Record]:
        await client.set_payload(COLLECTION, payload={"featured": True}, points=[_pid(1), _pid(2)])
        await client.batch_update_points(
            COLLECTION,
            update_operations=[
                models.SetPayloadOperation(
                    set_payload=models.SetPayload(payload={"season": "spring"}, filter=FILTERS["type"])
                ),
                models.DeletePayloadOperation(
                    delete_payload=models.DeletePayload(keys=["score"], points=[_pid(2)])
                ),
                models.UpsertOperation(upsert=models.PointsList(points=_points(seed=3)[:2])),
            ],
        )
        return await client.retrieve(COLLECTION, ids=[_pid(0), _pid(1), _pid(2), _pid(3)], with_vectors=True)

    ours, theirs = await both(pair, scenario)
    assert_same_records(ours, theirs)
    # anime-1 was replaced by the upsert (payload and all); anime-2 kept its update, lost its score.
    assert "featured" not in ours[1].payload and ours[1].payload == _points(seed=3)[1].payload
    assert ours[2].payload["featured"] is True and "score" not in ours[2].payload


# -- queries ---------------------------------------------------------------------------------------


QUERIES: dict[str, dict[str, Any]] = {
    "dense": {"query": _query_vector(1, "text"), "using": "text", "limit": 10},
    "dense, filtered, payload keys": {
        "query": _query_vector(2, "picture"),
        "using": "picture",
        "limit": 20,
        "query_filter": FILTERS["genres any-of"],
        "with_payload": ["anime_id", "year"],
    },
    "dense, threshold, vectors": {
        "query": _query_vector(3, "text"),
        "using": "text",
        "limit": 30,
        "score_threshold": 0.2,
        "with_vectors": True,
    },
    "multivector": {"query": TOKENS_QUERY, "using": "tokens", "limit": 15},
    "sparse idf": {"query": SPARSE_QUERY, "using": "text_sparse", "limit": 15},
    "nearest query, offset": {
        "query": models.NearestQuery(nearest=_query_vector(4, "text")),
        "using": "text",
        "limit": 10,
        "offset": 5,
    },
}


@pytest.mark.parametrize("name", list(QUERIES))
async def test_plain_queries_rank_alike(pair: Pair, name: str):
    ours, theirs = await both(pair, lambda c: c.query_points(COLLECTION, **QUERIES[name]))
    assert len(ours.points) > 3
    assert_same_points(ours.points, theirs.points)
    for a, b in zip(ours.points, theirs.points, strict=True):
        if a.id == b.id:
            assert a.payload == b.payload
            assert_same_vectors(a.vector, b.vector)


def _prefetch(limit: int = 12, query_filter: models.Filter | None = None) -> list[models.Prefetch]:
    return [
        models.Prefetch(query=_query_vector(5, "text"), using="text", limit=limit, filter=query_filter),
        models.Prefetch(query=SPARSE_QUERY, using="text_sparse", limit=limit, filter=query_filter),
        models.Prefetch(query=TOKENS_QUERY, using="tokens", limit=limit, filter=query_filter),
    ]


FUSED: dict[str, dict[str, Any]] = {
    "rrf default k": {"prefetch": _prefetch(), "query": models.FusionQuery(fusion=models.Fusion.RRF)},
    "rrf k=60 weighted": {
        "prefetch": _prefetch(),
        "query": models.RrfQuery(rrf=models.Rrf(k=60, weights=[1.0, 0.5, 2.0])),
    },
    "dbsf": {"prefetch": _prefetch(), "query": models.FusionQuery(fusion=models.Fusion.DBSF)},
    "dbsf filtered": {
        "prefetch": _prefetch(query_filter=FILTERS["year range"]),
        "query": models.FusionQuery(fusion=models.Fusion.DBSF),
    },
    "nested prefetch + formula": {
        "prefetch": models.Prefetch(
            prefetch=_prefetch(), query=models.FusionQuery(fusion=models.Fusion.DBSF), limit=25
        ),
        "query": models.FormulaQuery(
            formula=models.SumExpression(
                sum=[
                    "$score",
                    models.MultExpression(mult=[0.05, "score"]),
                    models.MultExpression(
                        mult=[0.3, models.FieldCondition(key="type", match=models.MatchValue(value="TV"))]
                    ),
                    models.MultExpression(mult=[0.1, "bonus"]),
                ]
            ),
            defaults={"bonus": 1.0},
        ),
    },
    "formula with decay and division": {
        "prefetch": _prefetch(),
        "query": models.FormulaQuery(
            formula=models.SumExpression(
                sum=[
                    "$score[0]",
                    models.DivExpression(div=models.DivParams(left="score", right=10.0)),
                    models.GaussDecayExpression(
                        gauss_decay=models.DecayParamsExpression(x="year", target=2005.0, scale=10.0)
                    ),
                ]
            ),
            defaults={"$score[0]": 0.0},
        ),
    },
}


@pytest.mark.parametrize("name", list(FUSED))
async def test_fused_queries_rank_alike(pair: Pair, name: str):
    # The limit covers every prefetched point, so no tie is cut at the boundary.
    arguments = {**FUSED[name], "limit": 40, "with_payload": ["anime_id"]}
    ours, theirs = await both(pair, lambda c: c.query_points(COLLECTION, **arguments))
    assert len(ours.points) > 5
    assert_same_points(ours.points, theirs.points)


async def test_query_batch_answers_each_request_in_order(pair: Pair):
    requests = [
        models.QueryRequest(query=_query_vector(6, "text"), using="text", limit=5, with_payload=True),
        models.QueryRequest(query=SPARSE_QUERY, using="text_sparse", limit=5, filter=FILTERS["type"]),
        models.QueryRequest(prefetch=_prefetch(), query=models.RrfQuery(rrf=models.Rrf(k=60)), limit=40),
    ]
    ours, theirs = await both(pair, lambda c: c.query_batch_points(COLLECTION, requests=requests))
    assert len(ours) == 3
    for a, b in zip(ours, theirs, strict=True):
        assert_same_points(a.points, b.points)
    assert ours[0].points[0].payload and ours[1].points[0].payload is None


# -- errors and refusals ---------------------------------------------------------------------------


async def test_bad_requests_are_value_errors(pair: Pair):
    edge, _ = pair
    with pytest.raises(EdgeRequestError, match="dimension"):
        await edge.query_points(COLLECTION, query=[1.0, 2.0], using="text")
    with pytest.raises(EdgeRequestError):
        await edge.upsert(COLLECTION, [models.PointStruct(id=1, vector={"nope": [1.0]})])
    with pytest.raises(ValueError, match="UUID"):
        await edge.retrieve(COLLECTION, ids=["not-a-uuid"])


@pytest.mark.parametrize(
    ("what", "call"),
    [
        (
            "snapshot location",
            lambda c: c.recover_snapshot(COLLECTION, location="https://example.com/a.snapshot"),
        ),
        ("query by point id", lambda c: c.query_points(COLLECTION, query=_pid(1), using="text")),
        (
            "RecommendQuery",
            lambda c: c.query_points(
                COLLECTION,
                query=models.RecommendQuery(recommend=models.RecommendInput(positive=[_pid(1)])),
                using="text",
            ),
        ),
        ("order_by", lambda c: c.scroll(COLLECTION, order_by="year")),
        (
            "shard_number=2",
            lambda c: c.create_collection(
                "x", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT), shard_number=2
            ),
        ),
        (
            "optimizers_config",
            lambda c: c.create_collection(
                "x",
                vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT),
                optimizers_config=models.OptimizersConfigDiff(),
            ),
        ),
        ("hnsw_config", lambda c: c.update_collection(COLLECTION, hnsw_config=models.HnswConfigDiff(m=8))),
        ("shard_key_selector", lambda c: c.upsert(COLLECTION, [], shard_key_selector="a")),
        (
            "mmr",
            lambda c: c.query_points(
                COLLECTION,
                query=models.NearestQuery(nearest=[0.0] * 8, mmr=models.Mmr(diversity=0.5)),
                using="text",
            ),
        ),
    ],
)
async def test_unsupported_calls_raise_naming_what(
    pair: Pair, what: str, call: Callable[[Any], Awaitable[Any]]
):
    edge, _ = pair
    with pytest.raises(Unsupported, match=what.split("=")[0].split()[0]):
        await call(edge)


# -- the folder: lock, layout, durability -----------------------------------------------------------


async def test_a_second_client_on_the_folder_fails_clearly(tmp_path: Path):
    client = EdgeQdrantClient(tmp_path)
    try:
        with pytest.raises(StoreLocked, match=str(tmp_path)):
            EdgeQdrantClient(tmp_path)
        code = f"from service.store.edge_client import EdgeQdrantClient as C; C({str(tmp_path)!r})"
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(other.communicate(), 60)
        assert other.returncode != 0
        assert "StoreLocked" in stderr.decode() and f"pid {os.getpid()}" in stderr.decode()
    finally:
        await client.close()
    await EdgeQdrantClient(tmp_path).close()  # released on close


async def test_a_second_service_on_a_held_folder_stops_with_one_clear_line(
    tmp_path: Path, tiny_repository: Path
):
    folder = tmp_path / "q"
    client = EdgeQdrantClient(folder)
    try:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "MODEL_", "SERVICE_"))}
        env = {"MODEL_REPOSITORY": str(tiny_repository), "QDRANT_PATH": str(folder), "SERVICE_PORT": "1"}
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", cwd=ROOT, env={**environ, **env}, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(other.communicate(), 120)
        assert other.returncode == 2
        assert "Traceback" not in stderr.decode()
        line = json.loads(stderr.decode().strip().splitlines()[-1])
        assert line["event"] == "cannot start" and line["error"] == "store_locked"
        assert str(folder) in line["reason"] and f"pid {os.getpid()}" in line["reason"]
    finally:
        await client.close()


async def test_a_local_mode_folder_is_not_mistaken_for_an_empty_store(tmp_path: Path):
    local = AsyncQdrantClient(path=str(tmp_path))
    await _create(local)
    await local.close()
    with pytest.raises(EdgeStorageError, match="local-mode"):
        EdgeQdrantClient(tmp_path)


async def test_everything_survives_a_reopen(tmp_path: Path):
    client = EdgeQdrantClient(tmp_path)
    await _create(client)
    await client.upsert(COLLECTION, _points())
    await client.create_payload_index(COLLECTION, "type", field_schema=models.PayloadSchemaType.KEYWORD)
    before = await client.query_points(
        COLLECTION, prefetch=_prefetch(), query=models.FusionQuery(fusion=models.Fusion.DBSF), limit=40
    )
    await client.close()

    reopened = EdgeQdrantClient(tmp_path)
    try:
        info = await reopened.get_collection(COLLECTION)
        assert info.points_count == POINTS and "type" in info.payload_schema
        assert info.config.metadata == {"avs_index_params": {"hnsw_m": 32}}
        after = await reopened.query_points(
            COLLECTION, prefetch=_prefetch(), query=models.FusionQuery(fusion=models.Fusion.DBSF), limit=40
        )
        assert_same_points(after.points, before.points)
        assert not await reopened.optimize()  # done at open: nothing left to do
    finally:
        await reopened.close()


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


async def test_a_copied_store_answers_the_same_and_takes_no_more_disk(tmp_path: Path):
    client = EdgeQdrantClient(tmp_path / "store")
    await _create(client)
    await client.upsert(COLLECTION, _points())
    before = await client.query_points(COLLECTION, query=_query_vector(3, "text"), using="text", limit=10)
    await client.close()

    copy_folder(tmp_path / "store", tmp_path / "copy")
    # The shard preallocates sparse files hundreds of MB long: a copy that writes the holes out
    # would cost all of that on disk for every copy.
    assert _disk_bytes(tmp_path / "copy") <= _disk_bytes(tmp_path / "store") + (1 << 20)
    copied = EdgeQdrantClient(tmp_path / "copy")
    try:
        after = await copied.query_points(COLLECTION, query=_query_vector(3, "text"), using="text", limit=10)
        assert_same_points(after.points, before.points)
        assert (await copied.count(COLLECTION)).count == POINTS
    finally:
        await copied.close()


async def test_a_dropped_collection_is_gone_from_disk(tmp_path: Path):
    client = EdgeQdrantClient(tmp_path)
    await _create(client)
    assert await client.delete_collection(COLLECTION) and not await client.delete_collection(COLLECTION)
    await client.close()
    assert not list((tmp_path / "shards").iterdir()) and not list((tmp_path / "collections").iterdir())


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from qdrant_client import models
    from service.store.edge_client import EdgeQdrantClient

    async def main():
        client = EdgeQdrantClient(sys.argv[1])
        await client.create_collection(
            "c", vectors_config={"v": models.VectorParams(size=16, distance=models.Distance.COSINE)}
        )
        for batch in range(1000):
            points = [
                models.PointStruct(id=batch * 64 + i, vector={"v": [float(i + 1)] * 16}, payload={"b": batch})
                for i in range(64)
            ]
            await client.upsert("c", points=points, wait=True)
            print(f"ACK {batch}", flush=True)

    asyncio.run(main())
    """
)


async def test_acknowledged_upserts_survive_sigkill(tmp_path: Path):
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(tmp_path), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    acknowledged = -1
    while acknowledged < 5:
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line, "the child ended before acknowledging six batches"
        acknowledged = int(line.split()[1])
    os.kill(child.pid, signal.SIGKILL)  # right after the acknowledgement, mid-way through the next
    await asyncio.wait_for(child.wait(), 60)
    assert acknowledged == 5

    client = EdgeQdrantClient(tmp_path)
    try:
        wanted = list(range((acknowledged + 1) * 64))
        found = await client.retrieve("c", ids=wanted, with_payload=False)
        assert len(found) == len(wanted)
        assert (await client.count("c")).count >= len(wanted)
    finally:
        await client.close()


async def test_reads_run_concurrently_with_a_write(pair: Pair):
    edge, _ = pair
    queries = [edge.query_points(COLLECTION, query=_query_vector(i, "text"), using="text") for i in range(8)]
    write = edge.upsert(COLLECTION, _points(seed=99))
    answers = await asyncio.gather(write, *queries)
    assert all(len(a.points) == 10 for a in answers[1:])
    assert (await edge.count(COLLECTION)).count == POINTS


async def test_exact_ties_rank_in_id_order_whatever_the_write_order(tmp_path: Path):
    """The engine breaks ties by position in its segments (write order); a reindex rewrites in id
    order, so without this the same data would rank its ties differently after one."""
    ids = [_pid(i) for i in range(6)]
    answers = []
    for order in (range(6), reversed(range(6))):
        client = EdgeQdrantClient(tmp_path / f"edge-{len(answers)}")
        try:
            await client.create_collection(
                "t", vectors_config={"v": models.VectorParams(size=2, distance=models.Distance.COSINE)}
            )
            points = [models.PointStruct(id=ids[i], vector={"v": [1.0, 0.5]}) for i in order]
            await client.upsert("t", points)
            await client.upsert("t", [models.PointStruct(id=7, vector={"v": [1.0, 0.0]})])
            answer = await client.query_points("t", query=[1.0, 0.4], using="v", limit=7)
            answers.append([p.id for p in answer.points])
        finally:
            await client.close()
    assert answers[0] == answers[1] == [*sorted(ids), 7]


# -- snapshots -------------------------------------------------------------------------------------


async def _state(client: EdgeQdrantClient) -> dict[str, Any]:
    """Everything a restore must bring back: points with payloads and vectors, metadata, indexes."""
    records, _ = await client.scroll(COLLECTION, limit=10 * POINTS, with_payload=True, with_vectors=True)
    info = await client.get_collection(COLLECTION)
    return {
        "points": {r.id: (r.payload, r.vector) for r in records},
        "metadata": info.config.metadata,
        "payload_indexes": {key: index.data_type for key, index in info.payload_schema.items()},
        "hnsw_m": info.config.hnsw_config.m,
    }


async def _snapshotted(tmp_path: Path) -> tuple[EdgeQdrantClient, models.SnapshotDescription, dict[str, Any]]:
    client = EdgeQdrantClient(tmp_path)
    await _create(client)
    await client.upsert(COLLECTION, _points())
    await client.create_payload_index(COLLECTION, "type", field_schema=models.PayloadSchemaType.KEYWORD)
    state = await _state(client)
    return client, await client.create_snapshot(COLLECTION), state


async def _change_everything(client: EdgeQdrantClient) -> None:
    await client.upsert(
        COLLECTION,
        [models.PointStruct(id=_pid(POINTS + i), **_fields(p)) for i, p in enumerate(_points(99)[:5])],
    )
    await client.upsert(COLLECTION, _points(seed=3)[:4])  # new vectors and payloads for existing points
    await client.delete(COLLECTION, models.PointIdsList(points=[_pid(10), _pid(11)]))
    await client.set_payload(COLLECTION, {"score": 0.0}, points=[_pid(12)])
    await client.update_collection(COLLECTION, metadata={"avs_index_params": None, "rollout": {"v2": 0.5}})
    await client.delete_payload_index(COLLECTION, "type")
    await client.create_payload_index(COLLECTION, "year", field_schema=models.PayloadSchemaType.INTEGER)


def _fields(point: models.PointStruct) -> dict[str, Any]:
    return {"vector": point.vector, "payload": point.payload}


async def test_a_restore_brings_back_exactly_the_collection_as_snapshotted(tmp_path: Path):
    client, snapshot, at_snapshot = await _snapshotted(tmp_path)
    try:
        file = tmp_path / "snapshots" / COLLECTION / snapshot.name
        assert snapshot.name.startswith(f"{COLLECTION}-") and snapshot.name.endswith(".snapshot")
        assert snapshot.size == file.stat().st_size
        assert snapshot.checksum == hashlib.sha256(file.read_bytes()).hexdigest()
        # The shard's files are sparse, hundreds of MB long: a snapshot holds only their data.
        assert snapshot.size <= _disk_bytes(tmp_path / "shards" / COLLECTION) + (1 << 20)
        assert await client.list_snapshots(COLLECTION) == [snapshot]
        expected_answer = await client.query_points(
            COLLECTION, prefetch=_prefetch(), query=models.FusionQuery(fusion=models.Fusion.RRF), limit=20
        )

        await _change_everything(client)
        assert await _state(client) != at_snapshot

        location = EdgeQdrantClient.snapshot_location(tmp_path, COLLECTION, snapshot.name)
        assert await client.recover_snapshot(COLLECTION, location=location)
        assert await _state(client) == at_snapshot
        answer = await client.query_points(
            COLLECTION, prefetch=_prefetch(), query=models.FusionQuery(fusion=models.Fusion.RRF), limit=20
        )
        assert_same_points(answer.points, expected_answer.points)
        # The replaced shard is gone from disk; the collection goes on taking writes.
        assert not (tmp_path / "shards" / COLLECTION).exists()
        await client.upsert(COLLECTION, [models.PointStruct(id=_pid(POINTS + 1), **_fields(_points(5)[0]))])
    finally:
        await client.close()

    reopened = EdgeQdrantClient(tmp_path)
    try:
        state = await _state(reopened)
        assert state["points"].pop(_pid(POINTS + 1))
        assert state == at_snapshot
        assert await reopened.list_snapshots(COLLECTION) == [snapshot]
        # A second restore, by path this time, replaces the first one's shard.
        assert await reopened.recover_snapshot(COLLECTION, location=str(file))
        assert await _state(reopened) == at_snapshot
        assert len(list((tmp_path / "restored" / COLLECTION).iterdir())) == 1
        assert await reopened.delete_snapshot(COLLECTION, snapshot.name)
        assert await reopened.list_snapshots(COLLECTION) == [] and not file.exists()
    finally:
        await reopened.close()


async def test_a_missing_damaged_or_foreign_snapshot_is_refused_and_changes_nothing(tmp_path: Path):
    client, snapshot, at_snapshot = await _snapshotted(tmp_path)
    try:
        folder = tmp_path / "snapshots" / COLLECTION
        damaged = bytearray((folder / snapshot.name).read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        (folder / snapshot.name).write_bytes(bytes(damaged))
        (tmp_path / "garbage.snapshot").write_bytes(b"not a tar file" * 100)
        await client.create_collection(
            "other", vectors_config={"text": models.VectorParams(size=3, distance=models.Distance.DOT)}
        )
        other = await client.create_snapshot("other")

        refusals = {
            "no snapshot file": str(tmp_path / "missing.snapshot"),
            "damaged": str(folder / snapshot.name),
            "not a readable snapshot": (tmp_path / "garbage.snapshot").as_uri(),
            "other vectors": EdgeQdrantClient.snapshot_location(tmp_path, "other", other.name),
        }
        for reason, location in refusals.items():
            with pytest.raises(EdgeRequestError, match=reason):
                await client.recover_snapshot(COLLECTION, location=location)
            assert await _state(client) == at_snapshot
        assert not list((tmp_path / "restored").rglob("*"))  # nothing left of the refused files
        with pytest.raises(EdgeRequestError, match="not found"):
            await client.delete_snapshot(COLLECTION, "nope.snapshot")
    finally:
        await client.close()


async def test_searches_during_a_restore_all_succeed(tmp_path: Path):
    client, snapshot, _ = await _snapshotted(tmp_path)
    try:
        await _change_everything(client)
        restoring = asyncio.create_task(
            client.recover_snapshot(
                COLLECTION, location=str(tmp_path / "snapshots" / COLLECTION / snapshot.name)
            )
        )
        # Reads of every kind, some of which hold on to the shard they started with.
        reads: list[Callable[[int], Awaitable[Any]]] = [
            lambda i: client.query_points(COLLECTION, query=_query_vector(i, "text"), using="text", limit=5),
            lambda i: client.retrieve(COLLECTION, ids=[_pid(20 + i % 20)]),  # in both states
            lambda i: client.get_collection(COLLECTION),
            lambda i: client.count(COLLECTION),
        ]
        answered = 0

        async def read_until_restored(read: Callable[[int], Awaitable[Any]]) -> None:
            nonlocal answered
            i = 0
            while not restoring.done():
                assert await read(i % POINTS)
                answered += 1
                i += 1

        await asyncio.gather(restoring, *(read_until_restored(read) for read in reads * 2))
        assert answered >= len(reads) * 2
        assert (await client.count(COLLECTION)).count == POINTS
    finally:
        await client.close()


async def test_a_restore_or_snapshot_cut_short_by_a_crash_leaves_the_collection_and_no_debris(tmp_path: Path):
    client, snapshot, _ = await _snapshotted(tmp_path)
    await _change_everything(client)
    changed = await _state(client)
    await client.close()
    # A crash before a restore's commit leaves an unpacked shard that no record names; one while a
    # snapshot is written, the shard's copy and a partial file.
    copy_folder(
        tmp_path / "shards" / COLLECTION, tmp_path / "restored" / COLLECTION / "20260101T000000000000Z"
    )
    folder = tmp_path / "snapshots" / COLLECTION
    copy_folder(tmp_path / "shards" / COLLECTION, folder / f".{COLLECTION}-2027.snapshot.shard")
    (folder / f".{COLLECTION}-2027.snapshot.tmp").write_bytes(b"partial")

    reopened = EdgeQdrantClient(tmp_path)
    try:
        assert await _state(reopened) == changed
        assert not list((tmp_path / "restored").rglob("*"))
        assert sorted(p.name for p in folder.iterdir()) == [snapshot.name, f"{snapshot.name}.checksum"]
        assert await reopened.list_snapshots(COLLECTION) == [snapshot]
    finally:
        await reopened.close()
