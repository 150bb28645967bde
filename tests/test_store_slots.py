"""A MaxSim list past the exact-scan size: the union of its slots' lists, rescored by MaxSim.

The store keeps, beside each multivector (an anime's names, its synopses), a few plain vectors with
graphs of their own: its first rows, the last slot the unit mean of the rest (service/store/slots.py),
and gives the multivector itself no graph. These tests hold the store to what a user relies on: the
candidates are rescored by the exact MaxSim score, nothing above the store ever sees a slot, and a
collection built before slots keeps answering and taking writes. Both embedded engines answer the same
assertions (local mode stands in for a server's API, and scans every list exactly).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from service.domain.documents import point_id
from service.store import schema_check
from service.store.filters import PAYLOAD_INDEXES
from service.store.params import IndexParams
from service.store.qdrant_store import AnimeStore
from service.store.slots import slot_name, slot_names, slot_vectors, unit_mean, with_slots
from service.store.types import StoredPoint, VectorQuery, VectorSchema

ENGINES = ["edge", "local"]
DIM = 12
SLOTS = {"title": 3, "synopsis": 2}
SCHEMA = VectorSchema(
    dense={"facts": DIM, "title": DIM, "synopsis": DIM},
    multi=frozenset({"title", "synopsis"}),
    slot_counts=SLOTS,
)
ALL_SLOTS = {s for name, count in SLOTS.items() for s in slot_names(name, count)}
LIMIT = 10
# Every search takes the graph path: what a catalogue past QDRANT_EXACT_SEARCH_UP_TO gets.
GRAPH = IndexParams(exact_search_up_to=0)
EXACT = models.SearchParams(exact=True)


def _unit(rng: np.random.Generator, rows: int) -> np.ndarray:
    block = rng.normal(size=(rows, DIM))
    return block / np.linalg.norm(block, axis=1, keepdims=True)


def _points(count: int, seed: int = 5) -> list[StoredPoint]:
    rng = np.random.default_rng(seed)
    return [
        StoredPoint(
            f"c{i:03d}",
            {
                "facts": _unit(rng, 1)[0].tolist(),
                "title": _unit(rng, 1 + i % 6).tolist(),  # one to six names, as anime have
                "synopsis": _unit(rng, 1 + i % 2).tolist(),
            },
            {"anime_id": f"c{i:03d}", "genres": ["Drama" if i % 3 else "Comedy"], "year": 2000 + i % 20},
        )
        for i in range(count)
    ]


def _max_sim(query: np.ndarray, rows: Any) -> float:
    """Qdrant's MaxSim: for each query row its best match among the rows, summed."""
    return float((query @ np.asarray(rows).T).max(axis=1).sum())


async def _open(folder: Path, engine: str, params: IndexParams = GRAPH) -> AnimeStore:
    store = AnimeStore.open(SCHEMA, alias="anime", path=folder, embedded_engine=engine, params=params)
    await store.ensure_ready()
    return store


@pytest.fixture(params=ENGINES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnimeStore]:
    opened = await _open(tmp_path / "qdrant", request.param)
    try:
        yield opened
    finally:
        await opened.close()


async def _raw(store: AnimeStore, anime_id: str) -> dict[str, Any]:
    """A point's vectors as the engine holds them (past the store's reads)."""
    (record,) = await store.backend.client.retrieve(
        store.alias, ids=[point_id(anime_id)], with_payload=False, with_vectors=True
    )
    assert isinstance(record.vector, dict)
    return record.vector


def test_slots_are_the_first_rows_and_the_unit_mean_of_the_rest() -> None:
    rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert slot_vectors(rows[:2], 3) == rows[:2]  # fewer rows than slots: the rows themselves
    first, second, rest = slot_vectors(rows, 3)
    assert (first, second) == (rows[0], rows[1])
    assert rest == pytest.approx([0.0, 2**-0.5, 2**-0.5])
    assert unit_mean([[0.0, 0.0, 1.0]]) == pytest.approx([0.0, 0.0, 1.0])
    # Opposite rows have no mean direction: one of them stands in rather than a zero vector.
    assert unit_mean([[1.0, 0.0], [-1.0, 0.0]]) == pytest.approx([1.0, 0.0])
    vectors = with_slots({"title": rows, "facts": [1.0, 0.0, 0.0], "synopsis": []}, SLOTS)
    assert set(vectors) == {"title", "facts", "synopsis", *slot_names("title", 3)}


async def test_a_new_collection_gives_each_multivector_slots_and_no_maxsim_graph(store: AnimeStore) -> None:
    info = await store.backend.client.get_collection(store.alias)
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict)
    assert set(vectors) == {"facts", "title", "synopsis", *ALL_SLOTS}
    for name in SCHEMA.multi:
        assert vectors[name].multivector_config is not None
        assert vectors[name].hnsw_config is not None and vectors[name].hnsw_config.m == 0
    assert all(vectors[slot].multivector_config is None for slot in ALL_SLOTS)
    assert store.lifecycle.slotted == SCHEMA.multi
    # The schema check sees the collection as the models' own: no problem, nothing optional missing.
    assert schema_check.problems(info, SCHEMA) == ([], [])


async def test_writes_store_the_slots_and_reads_never_show_them(store: AnimeStore) -> None:
    written = _points(8)
    await store.upsert(written)
    for p in written:
        raw = await _raw(store, p.anime_id)
        for name, count in SLOTS.items():
            filled = slot_vectors(p.vectors[name], count)
            assert {k for k in raw if k.startswith(name + "__")} == set(
                slot_names(name, count)[: len(filled)]
            )
            for j, vector in enumerate(filled):
                assert np.allclose(raw[slot_name(name, j)], vector, atol=1e-5)
    records = await store.get_many([p.anime_id for p in written])
    assert all(set(r.vectors) == {"facts", "title", "synopsis"} for r in records.values())
    page, _ = await store.scroll(store.alias, limit=100)
    assert len(page) == 8 and all(set(r.vectors) == {"facts", "title", "synopsis"} for r in page)
    hit = await store.get("c003")
    assert hit is not None and hit.vectors == ["facts", "synopsis", "title"]


def _by_slots(written: list[StoredPoint], query: np.ndarray) -> list[StoredPoint]:
    """What the slots find, in numpy: each slot's LIMIT best by its vector against the query's unit
    mean, their union ranked by MaxSim (the collection is small enough for the engine to scan each
    slot exactly, so the union is known)."""
    probe = np.asarray(unit_mean(query))
    union: dict[str, StoredPoint] = {}
    for j in range(SLOTS["title"]):
        filled = [(p, slot_vectors(p.vectors["title"], SLOTS["title"])) for p in written]
        ranked = sorted(
            (p for p, v in filled if len(v) > j),
            key=lambda p: -float(np.dot(slot_vectors(p.vectors["title"], SLOTS["title"])[j], probe)),
        )
        union |= {p.anime_id: p for p in ranked[:LIMIT]}
    return sorted(union.values(), key=lambda p: -_max_sim(query, p.vectors["title"]))[:LIMIT]


@pytest.mark.parametrize("rows", [1, 3])
async def test_past_the_exact_size_a_maxsim_list_is_the_union_of_its_slots_rescored_by_maxsim(
    store: AnimeStore, rows: int
) -> None:
    query = _unit(np.random.default_rng(rows), rows)
    # The approximation, made visible: every query row is one of this anime's names, so its MaxSim is
    # the best there is, but those names come after the slots' own rows, and twice as many opposite
    # ones pull the last slot (their mean) away from the query.
    others = _unit(np.random.default_rng(99), SLOTS["title"] - 1)
    decoy = StoredPoint(
        "decoy",
        {
            "facts": query[0].tolist(),
            "title": [*others.tolist(), *(-query).tolist(), *query.tolist(), *(-query).tolist()],
        },
        {"anime_id": "decoy"},
    )
    written = [*_points(300), decoy]
    await store.upsert(written)
    vector = query.tolist() if rows > 1 else query[0].tolist()
    (hits,) = await store.search_many([VectorQuery("title", vector, LIMIT)], payload=False)
    if store.is_local:
        # Local mode has no graph to stand in for: it scans every list exactly, the decoy first.
        assert hits[0].anime_id == "decoy" and hits[0].score == pytest.approx(rows, abs=1e-5)
        return
    want = _by_slots(written, query)
    assert [h.anime_id for h in hits] == [p.anime_id for p in want]
    for h, p in zip(hits, want, strict=True):
        assert h.score == pytest.approx(_max_sim(query, p.vectors["title"]), abs=1e-5)
    assert "decoy" not in {h.anime_id for h in hits}
    # Up to the exact-scan size the same list is MaxSim over every row: the decoy first.
    store.lifecycle.params = IndexParams()
    (exact,) = await store.search_many([VectorQuery("title", vector, LIMIT)], payload=False)
    assert exact[0].anime_id == "decoy" and exact[0].score == pytest.approx(rows, abs=1e-5)


async def test_slots_take_the_filter_threshold_and_fusion_like_any_list(store: AnimeStore) -> None:
    written = _points(60)
    await store.upsert(written)
    query = _unit(np.random.default_rng(11), 1)[0]
    drama = models.Filter(must=[models.FieldCondition(key="genres", match=models.MatchAny(any=["Drama"]))])
    ranked = sorted(
        (p for p in written if p.payload["genres"] == ["Drama"]),
        key=lambda p: -_max_sim(query[None, :], p.vectors["title"]),
    )
    fifth, sixth = (_max_sim(query[None, :], p.vectors["title"]) for p in ranked[4:6])
    threshold = (fifth + sixth) / 2
    # Every anime of this size has at most its six names in three slots' lists of 40: all are found.
    (hits,) = await store.search_many(
        [VectorQuery("title", query.tolist(), 40, drama, score_threshold=threshold)], payload=False
    )
    assert [h.anime_id for h in hits] == [p.anime_id for p in ranked[:5]]
    fused = await store.search_fused(
        [VectorQuery("title", query.tolist(), 40), VectorQuery("facts", query.tolist(), 40)],
        fusion="rrf",
        rrf_k=60,
        limit=5,
        query_filter=drama,
    )
    by_facts = sorted(ranked, key=lambda p: -float(np.dot(p.vectors["facts"], query)))

    def rrf(first_rank: int) -> dict[str, float]:
        scores = {
            p.anime_id: 1 / (60 + first_rank + ranked.index(p)) + 1 / (60 + first_rank + by_facts.index(p))
            for p in ranked
        }
        return {a: scores[a] for a in sorted(scores, key=lambda a: -scores[a])[:5]}

    # RRF of the two Drama rankings (whether Qdrant counts ranks from 0 or 1; two anime may tie).
    got = {h.anime_id: h.score for h in fused}
    assert any(got == pytest.approx(rrf(first)) for first in (0, 1))


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_collection_built_before_slots_answers_and_takes_writes_as_before(
    engine: str, tmp_path: Path
) -> None:
    folder = tmp_path / "qdrant"
    store = await _open(folder, engine)
    client = store.backend.client
    # Built as the previous release did: the multivectors with a graph, no slots.
    max_sim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    await client.create_collection(
        "anime_old",
        vectors_config={
            name: models.VectorParams(
                size=DIM,
                distance=models.Distance.COSINE,
                multivector_config=max_sim if name in SCHEMA.multi else None,
            )
            for name in SCHEMA.dense
        },
    )
    if not store.is_local:
        for key, kind in PAYLOAD_INDEXES.items():
            await client.create_payload_index("anime_old", key, field_schema=kind, wait=True)
    await store.point_alias("anime_old")
    await store.ensure_ready()
    assert store.lifecycle.slotted == frozenset()
    written = _points(20)
    await store.upsert(written)  # would fail if the store wrote a vector the collection lacks
    assert set(await _raw(store, "c004")) == {"facts", "title", "synopsis"}
    query = _unit(np.random.default_rng(2), 1)[0]
    (hits,) = await store.search_many([VectorQuery("title", query.tolist(), 5)])
    want = sorted(written, key=lambda p: -_max_sim(query[None, :], p.vectors["title"]))[:5]
    assert [h.anime_id for h in hits] == [p.anime_id for p in want]
    await store.close()
