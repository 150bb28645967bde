"""Admin and data lifecycle: upsert/delete, stats, reindex without downtime, durability, bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.catalogue.ingest import ingest
from service.domain.documents import AnimeDocument
from service.runtime import build_runtime
from service.settings import load_settings
from service.store.filters import PAYLOAD_INDEXES
from tests.api_calls import wait_for_reindex
from tests.builders import encode_image, synthetic_cover
from tests.conftest import copy_index

SEED = 120


def _doc(anime: AnimeDocument, **changes) -> dict:
    return msgspec.to_builtins(msgspec.structs.replace(anime, **changes))


@pytest.fixture(scope="module")
def seed_index(real_repository: Path, bangumi_documents, tmp_path_factory) -> Path:
    """A store holding the first SEED real anime, built once for the module."""
    folder = tmp_path_factory.mktemp("admin-seed") / "qdrant"

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=real_repository, qdrant_path=folder))
        try:
            await ingest(runtime, bangumi_documents[:SEED], progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


@pytest.fixture
def index(seed_index: Path, tmp_path) -> Path:
    """A fresh copy of the seed store for each test: they write to it."""
    return copy_index(seed_index, tmp_path / "qdrant")


@pytest.fixture
async def client(real_repository: Path, index: Path) -> AsyncIterator[AsyncTestClient]:
    # Candidate lists longer than the store: no list is cut inside a group of exact ties (anime with the
    # same facts line score alike), so a copied store must answer identically, not merely alike.
    settings = load_settings(
        {},
        model_repository=real_repository,
        qdrant_path=index,
        admin_max_batch=50,
        reindex_batch_size=8,
        fusion_candidates=200,
    )
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


async def upsert(client, documents: list[dict], status: int = 200) -> dict:
    response = await client.post("/api/v1/admin/vectors/upsert", json={"documents": documents})
    assert response.status_code == status, response.text[:800]
    return response.json()


async def search_ids(client, query: str, limit: int = 10) -> list[str]:
    response = await client.post("/api/v1/search", json={"query": query, "limit": limit})
    assert response.status_code == 200, response.text
    return [r["anime_id"] for r in response.json()["results"]]


async def stats(client) -> dict:
    response = await client.get("/api/v1/admin/stats")
    assert response.status_code == 200, response.text
    return response.json()


# -- upsert / delete ----------------------------------------------------------------------------


async def test_upsert_is_searchable_at_once_idempotent_and_delete_removes_it_everywhere(
    client, bangumi_documents
):
    runtime = client.app.state.runtime
    new = bangumi_documents[SEED + 5]
    before = (await stats(client))["points"]
    body = await upsert(
        client, [_doc(new, synopsis="A lighthouse keeper befriends a whale in a flooded city.")]
    )
    assert body["stored"] == 1 and body["items"][0]["vectors"] == [
        "facts",
        "synopsis",
        "text_lexical",
        "title",
    ]
    assert new.anime_id in await search_ids(
        client, "lighthouse keeper befriends a whale in a flooded city", 3
    )
    first = (await runtime.store.get_many([new.anime_id]))[new.anime_id]

    await upsert(
        client, [_doc(new, synopsis="Space pirates duel over a stolen star map in the asteroid belt.")]
    )
    after = (await stats(client))["points"]
    assert after == before + 1  # same anime id, same point
    second = (await runtime.store.get_many([new.anime_id]))[new.anime_id]
    assert not np.allclose(first.vectors["synopsis"], second.vectors["synopsis"])
    assert np.allclose(first.vectors["title"], second.vectors["title"])  # the names did not change
    assert second.payload["synopsis"].startswith("Space pirates")
    assert second.payload["model_version"] == runtime.text.manifest.model_version
    assert second.payload["updated_at"]
    assert new.anime_id in await search_ids(client, "space pirates stolen star map asteroid belt", 3)

    neighbour = bangumi_documents[0].anime_id
    response = await client.delete(f"/api/v1/admin/vectors/{new.anime_id}")
    assert response.status_code == 200 and response.json() == {"anime_id": new.anime_id, "deleted": True}
    assert (await client.get(f"/api/v1/search/by-id/{new.anime_id}")).status_code == 404
    assert new.anime_id not in await search_ids(client, "space pirates stolen star map asteroid belt", 50)
    similar = (await client.get(f"/api/v1/similarity/anime/{neighbour}", params={"limit": 100})).json()
    assert new.anime_id not in [r["anime_id"] for r in similar["results"]]
    assert (await stats(client))["points"] == before
    again = await client.delete(f"/api/v1/admin/vectors/{new.anime_id}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"


async def test_pictures_and_client_vectors_are_stored_as_given(client, bangumi_documents):
    runtime = client.app.state.runtime
    cover = base64.b64encode(encode_image(synthetic_cover(3), "PNG")).decode()
    unit = [0.0] * 384
    unit[7] = 1.0
    docs = [
        _doc(bangumi_documents[SEED + 1], picture_data=cover),
        _doc(bangumi_documents[SEED + 2], vectors={"synopsis": unit, "title": unit, "facts": unit}),
        _doc(bangumi_documents[SEED + 3], vectors={"synopsis": unit}),
    ]
    body = await upsert(client, docs)
    text = ["facts", "synopsis", "text_lexical", "title"]
    assert [item["vectors"] for item in body["items"]] == [sorted(["picture", *text]), text, text]
    partly = (await runtime.store.get_many([bangumi_documents[SEED + 3].anime_id])).popitem()[1]
    # The service embedded this anime's title and facts, so its text model's version stands.
    assert partly.payload["model_versions"]["text"] == runtime.text.manifest.model_version
    stored = await runtime.store.get_many([bangumi_documents[SEED + 2].anime_id])
    record = stored[bangumi_documents[SEED + 2].anime_id]
    # A client vector for a name that holds several vectors per anime is its one entry.
    np.testing.assert_allclose(record.vectors["synopsis"], [unit], atol=1e-6)
    np.testing.assert_allclose(record.vectors["title"], [unit], atol=1e-6)
    # Every text vector came from the client, so no model version is claimed for them.
    assert record.payload["model_versions"]["text"] == "client"
    assert "vectors" not in record.payload and "picture_data" not in record.payload
    counts = await stats(client)
    assert counts["vectors"]["picture"] == 1
    assert counts["model_versions"]["client"] == 1


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"vectors": {"title": [0.1, 0.2, 0.3]}}, "vector_dimension_mismatch", "vectors.title"),
        ({"vectors": {"picture": [0.5] * 10}}, "vector_dimension_mismatch", "vectors.picture"),
        ({"vectors": {"poster": [0.5] * 384}}, "unknown_vector", "vectors.poster"),
        (
            {"vectors": {"synopsis": {"indices": [1], "values": [0.5]}}},
            "vector_type_mismatch",
            "vectors.synopsis",
        ),
        ({"vectors": {"text_lexical": [0.5] * 384}}, "vector_type_mismatch", "vectors.text_lexical"),
        ({"rating": 9.5}, "validation_error", None),
        ({"year": 1800}, "validation_error", "year"),
        ({"anime_id": "has spaces"}, "validation_error", "anime_id"),
        (
            {"picture_data": base64.b64encode(b"not an image at all").decode()},
            "unsupported_image_format",
            "picture_data",
        ),
    ],
)
async def test_bad_items_get_item_level_errors_and_good_ones_are_still_stored(
    client, bangumi_documents, change, code, field
):
    good = _doc(bangumi_documents[SEED + 3])
    bad = _doc(bangumi_documents[SEED + 4]) | change
    body = await upsert(client, [good, bad], status=207)
    assert body["stored"] == 1 and body["failed"] == 1
    first, second = body["items"]
    assert first["status"] == "stored" and first["index"] == 0
    assert second["status"] == "failed" and second["index"] == 1
    assert second["errors"][0]["code"] == code
    if field:
        assert second["errors"][0]["field"] == field
    if code == "vector_dimension_mismatch":
        assert field.split(".")[1] in second["errors"][0]["message"]
    assert (await client.get(f"/api/v1/search/by-id/{good['anime_id']}")).status_code == 200
    only_bad = await upsert(client, [bad], status=422)
    assert only_bad["error"]["code"] == "nothing_stored"
    report = only_bad["error"]["details"]
    assert report["stored"] == 0 and report["items"][0]["errors"][0]["code"] == code


async def test_batch_bounds_malformed_json_and_duplicates(client, bangumi_documents):
    docs = [_doc(d) for d in bangumi_documents[SEED : SEED + 51]]
    too_many = await client.post("/api/v1/admin/vectors/upsert", json={"documents": docs})
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "batch_too_large"
    empty = await client.post("/api/v1/admin/vectors/upsert", json={"documents": []})
    assert empty.status_code == 422
    broken = await client.post(
        "/api/v1/admin/vectors/upsert",
        content=b'{"documents": [{"anime_id": ',
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "malformed_json"
    twice = await upsert(client, [docs[0], docs[0]], status=207)
    assert twice["items"][1]["errors"][0]["code"] == "duplicate_id"


# -- stats, info, snapshots -------------------------------------------------------------------


async def test_stats_and_collection_info_describe_the_store(client, bangumi_documents):
    body = await stats(client)
    runtime = client.app.state.runtime
    assert body["points"] == SEED
    with_synopsis = sum(1 for d in bangumi_documents[:SEED] if d.synopsis or d.synopses)
    assert body["vectors"]["title"] == SEED and body["vectors"]["text_lexical"] == SEED
    assert body["vectors"]["synopsis"] == with_synopsis > 0
    assert body["vectors"]["picture"] == 0 and body["vectors"]["thumbnail"] == 0
    assert body["model_versions"] == {runtime.text.manifest.model_version: SEED}
    assert body["stale_points"] == 0
    assert body["store"] == "qdrant-edge"
    # Qdrant's engine keeps payload indexes, as a server does (qdrant-client's local mode has none).
    # The filter fields, and the hubness the synopsis list's score formula reads (a float index).
    assert set(body["payload_indexes"]) == set(PAYLOAD_INDEXES) | {"hubness"}
    assert body["payload_indexes"]["anime_id"] == {"type": "keyword", "points": SEED}
    assert body["payload_indexes"]["hubness"]["type"] == "float"
    info = (await client.get("/api/v1/admin/collection/info")).json()
    assert info["alias"] == "anime" and info["collection"].startswith("anime_")
    assert info["vectors"]["title"]["size"] == 384 and info["vectors"]["picture"]["size"] == 64
    assert info["vectors"]["synopsis"]["multivector"] is True and info["sparse_vectors"] == ["text_lexical"]
    assert info["fits_deployed_models"] is True
    health = (await client.get("/api/v1/admin/health")).json()
    assert health["status"] == "ok" and health["reindex"] is None


async def test_a_snapshot_restore_brings_the_collection_back_and_serves_no_stale_answer(
    client, bangumi_documents
):
    created = await client.post("/api/v1/admin/snapshots")
    assert created.status_code == 201, created.text
    snapshot = created.json()
    info = (await client.get("/api/v1/admin/collection/info")).json()
    assert snapshot["collection"] == info["collection"] and snapshot["name"].endswith(".snapshot")
    assert snapshot["size"] > 0 and len(snapshot["checksum"]) == 64
    listed = await client.get("/api/v1/admin/snapshots")
    assert listed.status_code == 200 and listed.json() == [snapshot]

    new = bangumi_documents[SEED + 7]
    query = "a lighthouse keeper befriends a whale in a flooded city"
    await upsert(client, [_doc(new, synopsis="A lighthouse keeper befriends a whale in a flooded city.")])
    assert new.anime_id in await search_ids(client, query, 3)  # now in the answer cache too

    restored = await client.post(f"/api/v1/admin/snapshots/{snapshot['name']}/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json()["restored"] == snapshot["name"]
    assert new.anime_id not in await search_ids(client, query, 3)  # not the cached answer
    assert (await client.get(f"/api/v1/search/by-id/{new.anime_id}")).status_code == 404
    assert (await stats(client))["points"] == SEED

    unknown = await client.post("/api/v1/admin/snapshots/nope.snapshot/restore")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "snapshot_not_found"
    deleted = await client.delete(f"/api/v1/admin/snapshots/{snapshot['name']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] == snapshot["name"]
    assert (await client.get("/api/v1/admin/snapshots")).json() == []
    gone = await client.delete(f"/api/v1/admin/snapshots/{snapshot['name']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "snapshot_not_found"


async def test_qdrant_client_local_mode_has_no_snapshots(tmp_path):
    from service.store.qdrant_store import AnimeStore, NotSupported
    from service.store.types import VectorSchema

    store = AnimeStore.open(VectorSchema({"title": 4}), alias="anime", path=tmp_path, embedded_engine="local")
    try:
        for call in (store.create_snapshot, store.list_snapshots):
            with pytest.raises(NotSupported, match="QDRANT_EMBEDDED_ENGINE=local"):
                await call()
    finally:
        await store.close()


async def test_a_server_snapshot_is_restored_from_the_server_s_folder_and_moves_the_cache_on():
    """A server's client is stood in for: the store asks it to recover from its own snapshots folder."""
    from types import SimpleNamespace

    from qdrant_client import models

    from service.store.qdrant_store import AnimeStore
    from service.store.types import VectorSchema

    class ServerClient:
        def __init__(self) -> None:
            self.recovered: list[tuple[str, str]] = []

        async def get_aliases(self):
            alias = SimpleNamespace(alias_name="anime", collection_name="anime_1")
            return SimpleNamespace(aliases=[alias])

        async def list_snapshots(self, collection):
            return [models.SnapshotDescription(name="anime_1-2026.snapshot", size=1)]

        async def recover_snapshot(self, collection, *, location, wait):
            self.recovered.append((collection, location))
            return True

    qdrant = ServerClient()
    store = AnimeStore(qdrant, "anime", VectorSchema({"title": 4}), "qdrant-server", "http://qdrant:6333")
    writes = []

    async def on_write() -> None:
        writes.append(1)

    store.on_write = on_write
    store.lifecycle.ready = True
    answer = await store.restore_snapshot("anime_1-2026.snapshot")
    assert answer["collection"] == "anime_1"
    assert qdrant.recovered == [("anime_1", "file:///qdrant/snapshots/anime_1/anime_1-2026.snapshot")]
    assert writes == [1]  # the answer cache's generation moves on
    assert store.lifecycle.ready is False  # the restored collection's schema is checked again


# -- reindex ------------------------------------------------------------------------------------


async def test_reindex_under_search_load_loses_no_search_and_no_write(client, bangumi_documents):
    """Searches run throughout; writes made while the copy is half-way survive the swap."""
    import threading

    store = client.app.state.runtime.store
    queries = ["giant robots", "magical girls", "school band", "detective", "space war"]
    before = {q: await search_ids(client, q) for q in queries}
    old_collection = (await client.get("/api/v1/admin/collection/info")).json()["collection"]

    # Hold the copier after it has read its second page and before it writes it: the window where
    # a concurrent write could be overwritten by the stale copy.
    paused, release, held = threading.Event(), threading.Event(), []
    real_scroll = store.scroll

    async def scroll_then_pause(*args, **kwargs):
        records, offset = await real_scroll(*args, **kwargs)
        if kwargs.get("scroll_filter") is None and len(held) == 1:
            held.append([r.anime_id for r in records])
            paused.set()
            await asyncio.to_thread(release.wait, 30)
        elif not held:
            held.append(None)
        return records, offset

    store.scroll = scroll_then_pause
    failures: list[str] = []
    answered = 0
    stop = asyncio.Event()

    async def load() -> None:
        # The test client runs the app on its own loop in another thread and blocks this one per
        # request, so the reindex really runs beside these searches; sleep(0) lets the test go on.
        nonlocal answered
        while not stop.is_set():
            for q in queries:
                response = await client.post("/api/v1/search", json={"query": q, "limit": 10})
                if response.status_code != 200:
                    failures.append(response.text)
                answered += 1
                await asyncio.sleep(0)

    searcher = asyncio.create_task(load())
    started = await client.post(
        "/api/v1/admin/reindex", json={"index": {"hnsw_m": 32, "quantization": "scalar"}}
    )
    assert started.status_code == 202
    job_id = started.json()["job_id"]
    assert await asyncio.to_thread(paused.wait, 30)
    conflict = await client.post("/api/v1/admin/reindex", json={})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "reindex_in_progress"
    stale = held[1][0]  # read by the copier with its old synopsis, not yet written
    changed = _doc(
        next(d for d in bangumi_documents if d.anime_id == stale), synopsis="Rewritten while copying."
    )
    late = [_doc(d) for d in bangumi_documents[SEED : SEED + 3]]
    await upsert(client, [changed, *late])
    gone = next(d.anime_id for d in bangumi_documents[:SEED] if d.anime_id not in held[1])
    assert (await client.delete(f"/api/v1/admin/vectors/{gone}")).status_code == 200
    for _ in range(20):  # a burst of searches while the job is still mid-copy
        for q in queries:
            response = await client.post("/api/v1/search", json={"query": q, "limit": 10})
            answered += 1
            if response.status_code != 200:
                failures.append(response.text)
    assert (await client.get(f"/api/v1/admin/reindex/{job_id}")).json()["state"] == "running"
    release.set()
    job = await wait_for_reindex(client, job_id)
    stop.set()
    await searcher
    store.scroll = real_scroll

    assert job["state"] == "succeeded", job
    assert job["copied"] >= job["total"] == SEED  # writes landing mid-copy can add pages
    assert failures == [] and answered > 100
    info = (await client.get("/api/v1/admin/collection/info")).json()
    assert info["collection"] != old_collection
    assert info["configured"]["hnsw_m"] == 32 and info["configured"]["quantization"] == "scalar"
    assert old_collection not in [c.name for c in (await store.backend.client.get_collections()).collections]
    assert (await stats(client))["points"] == SEED + 3 - 1
    assert (await client.get(f"/api/v1/search/by-id/{stale}")).json()["document"][
        "synopsis"
    ] == "Rewritten while copying."
    for d in late:
        assert (await client.get(f"/api/v1/search/by-id/{d['anime_id']}")).status_code == 200
    assert (await client.get(f"/api/v1/search/by-id/{gone}")).status_code == 404
    # The content changed mid-copy (three new anime, one gone, one rewritten), and hub penalties and
    # fusion normalise over the content, so exact order is not an invariant here (an unchanged store's
    # is: the next test). What users rely on: what they found before is still found.
    for q in queries:
        untouched = [a for a in before[q] if a not in (gone, stale)]
        after = await search_ids(client, q, limit=20)
        assert len(set(after) & set(untouched)) >= 0.8 * len(untouched), (q, before[q], after)


async def test_an_unchanged_store_answers_identically_after_a_reindex(client):
    queries = ["giant robots", "magical girls", "baseball", "vampires"]
    before = {
        q: (await client.post("/api/v1/search", json={"query": q, "limit": 20})).json()["results"]
        for q in queries
    }
    job = (await client.post("/api/v1/admin/reindex", json={})).json()
    assert (await wait_for_reindex(client, job["job_id"]))["state"] == "succeeded"
    for q in queries:
        after = (await client.post("/api/v1/search", json={"query": q, "limit": 20})).json()["results"]
        assert [r["anime_id"] for r in after] == [r["anime_id"] for r in before[q]]
        assert [r["score"] for r in after] == pytest.approx([r["score"] for r in before[q]], abs=1e-6)


async def test_reindex_reembeds_a_store_built_by_another_model(
    real_repository, tiny_repository, bangumi_documents, tmp_path
):
    """Swap the text model (32-d -> 384-d): searches say why they cannot answer, reindex fixes it."""
    folder = tmp_path / "q"

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=tiny_repository, qdrant_path=folder))
        try:
            await ingest(runtime, bangumi_documents[:40], progress=False)
        finally:
            await runtime.close()

    await asyncio.to_thread(asyncio.run, fill())
    settings = load_settings({}, model_repository=real_repository, qdrant_path=folder, reindex_batch_size=16)
    async with AsyncTestClient(create_app(settings)) as client:
        refused = await client.post("/api/v1/search", json={"query": "robots"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_store_mismatch"
        assert "384" in refused.json()["error"]["message"]
        job = (await client.post("/api/v1/admin/reindex", json={"reembed": True})).json()
        job = await wait_for_reindex(client, job["job_id"])
        assert job["state"] == "succeeded", job
        assert job["reembedded"] == 40
        assert job["dropped_vectors"] == {"text_sparse": 40}  # the new model has no sparse head
        assert len(await search_ids(client, "robots")) == 10
        body = await stats(client)
        runtime = client.app.state.runtime
        assert body["model_versions"] == {runtime.text.manifest.model_version: 40}
        # Calibrated afresh for the new model, and every anime with a synopsis hub-corrected with it.
        calibration = await runtime.store.calibration()
        assert calibration is not None and calibration.text_model == runtime.text.manifest.model_version
        records = await runtime.store.get_many([d.anime_id for d in bangumi_documents[:40]])
        with_synopsis = [r for r in records.values() if "synopsis" in r.vectors]
        assert with_synopsis and all("hubness" in r.payload for r in with_synopsis)
        assert all(r.payload["model_versions"]["calibration"] == calibration.id for r in with_synopsis)


# -- durability ---------------------------------------------------------------------------------


def test_sigkill_during_ingest_loses_nothing_acknowledged_and_resume_finishes(
    real_repository, bangumi_documents, tmp_path
):
    docs = bangumi_documents[:400]
    (tmp_path / "docs.json").write_bytes(msgspec.json.encode(docs))
    env = {**os.environ, "MODEL_REPOSITORY": str(real_repository), "QDRANT_PATH": str(tmp_path / "q")}
    command = [
        sys.executable,
        "-m",
        "service.catalogue.ingest",
        "file",
        str(tmp_path / "docs.json"),
        "--batch-size",
        "8",
    ]
    process = subprocess.Popen(
        [*command, "--log-batches"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    acknowledged: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        acknowledged += event["anime_ids"]
        if len(acknowledged) >= 40:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=30)
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL

    async def present(ids: list[str]) -> set[str]:
        runtime = await build_runtime(
            load_settings({}, model_repository=real_repository, qdrant_path=tmp_path / "q")
        )
        try:
            return set(await runtime.store.get_many(ids, with_vectors=False)), await runtime.store.count()
        finally:
            await runtime.close()

    found, count = asyncio.run(present(acknowledged))
    assert found == set(acknowledged)
    assert len(acknowledged) <= count < len(docs)

    resumed = subprocess.run(
        [*command, "--skip-existing"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "already present" in resumed.stdout
    found, count = asyncio.run(present([d.anime_id for d in docs]))
    assert count == len(docs) == len(found)
