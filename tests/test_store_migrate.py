"""An earlier release's embedded store (qdrant-client's local mode) converts to qdrant-edge, checked.

The local-mode store is built once with the real store code (ingest with the tiny models, engine
`local`) under non-default index settings, with a rollout in its metadata and a second, empty
collection beside the live one (an abandoned reindex); each test converts a copy of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from litestar.testing import AsyncTestClient
from qdrant_client import AsyncQdrantClient, models

import service.store.migrate as migration
from service.app import create_app
from service.catalogue import ingest as ingest_cli
from service.catalogue.ingest import ingest
from service.domain.rollout import Rollout
from service.domain.vectors import CALIBRATION_KEY
from service.runtime import ROLLOUT_METADATA_KEY, build_runtime
from service.settings import load_settings
from service.store.__main__ import main as store_main
from service.store.edge_client import EdgeQdrantClient, LocalModeFolder
from service.store.filters import PAYLOAD_INDEXES
from service.store.migrate import MigrationFailed, migrate_folder
from service.store.schema_check import PARAMS_METADATA_KEY
from service.store.slots import is_slot
from tests.api_calls import ids, post
from tests.builders import story_documents

ROOT = Path(__file__).resolve().parents[1]
ALIAS = "anime"
LOCAL_INDEX = {"qdrant_hnsw_m": 24, "qdrant_hnsw_ef_construct": 64, "qdrant_quantization": "scalar"}


def _settings(repository: Path, folder: Path, engine: str):
    return load_settings(
        {}, model_repository=repository, qdrant_path=folder, qdrant_embedded_engine=engine, **LOCAL_INDEX
    )


@pytest.fixture(scope="module")
def local_store(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("migrate-local") / "qdrant"

    async def fill() -> None:
        runtime = await build_runtime(_settings(tiny_repository, folder, "local"))
        try:
            await ingest(runtime, story_documents(2), progress=False)
            await runtime.save_rollout(Rollout(default=1, history=(1,)))
            store = runtime.store
            await store.create_collection(store.new_collection_name(), store.schema, store.params)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


@pytest.fixture
def source(local_store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(local_store, tmp_path / "qdrant"))


async def _everything(client) -> dict:
    """Collections (config, metadata, points with vectors and payloads) and aliases, as the API says."""
    found: dict = {"aliases": {}, "collections": {}}
    for alias in (await client.get_aliases()).aliases:
        found["aliases"][alias.alias_name] = alias.collection_name
    for description in (await client.get_collections()).collections:
        name = description.name
        info = await client.get_collection(name)
        records, _ = await client.scroll(name, limit=10_000, with_payload=True, with_vectors=True)
        found["collections"][name] = {"info": info, "points": {r.id: r for r in records}}
    return found


async def _read(folder: Path, engine: str) -> dict:
    client = AsyncQdrantClient(path=str(folder)) if engine == "local" else EdgeQdrantClient(folder)
    try:
        return await _everything(client)
    finally:
        await client.close()


def _assert_same_vector(got, want, where: str) -> None:
    if isinstance(want, models.SparseVector):
        assert got.indices == want.indices, where
        np.testing.assert_allclose(got.values, want.values, rtol=1e-6, err_msg=where)
    else:
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6, err_msg=where)


async def test_the_copy_holds_every_point_setting_metadata_index_and_alias(source: Path, tmp_path: Path):
    before = await _read(source, "local")
    target = tmp_path / "edge"
    done = await migrate_folder(source, target, batch_size=5, progress=False)  # several batches

    assert done.store == target.resolve() and done.backup is None
    assert (source / "meta.json").is_file() and not (source / "shards").exists()  # --to leaves it alone
    after = await _read(target, "edge")
    assert after["aliases"] == before["aliases"]
    assert set(after["collections"]) == set(before["collections"]) and len(before["collections"]) == 2
    live = before["aliases"][ALIAS]
    assert len(before["collections"][live]["points"]) == 12
    for name, want in before["collections"].items():
        got = after["collections"][name]
        old, new = want["info"].config, got["info"].config
        assert new.metadata == old.metadata
        assert new.params.vectors == old.params.vectors  # sizes, distances, multivectors
        assert new.params.sparse_vectors == old.params.sparse_vectors  # the IDF modifier too
        # What the collection was created with (local mode reports fixed values, built neither).
        assert (new.hnsw_config.m, new.hnsw_config.ef_construct) == (24, 64)
        assert isinstance(new.quantization_config, models.ScalarQuantization)
        assert set(got["info"].payload_schema) == set(PAYLOAD_INDEXES)
        assert set(got["points"]) == set(want["points"])
        for point_id, record in want["points"].items():
            copied = got["points"][point_id]
            assert copied.payload == record.payload
            assert set(copied.vector) == set(record.vector)
            for vector, value in record.vector.items():
                _assert_same_vector(copied.vector[vector], value, f"{point_id} {vector}")
    metadata = before["collections"][live]["info"].config.metadata
    assert {PARAMS_METADATA_KEY, ROLLOUT_METADATA_KEY, CALIBRATION_KEY} <= set(metadata)


async def _scores(folder: Path, engine: str, queries: dict) -> dict[str, dict]:
    """Each named vector's query against every point: point id -> score."""
    client = AsyncQdrantClient(path=str(folder)) if engine == "local" else EdgeQdrantClient(folder)
    try:
        found = {}
        for name, vector in queries.items():
            answer = await client.query_points(ALIAS, query=vector, using=name, limit=100)
            found[name] = {p.id: p.score for p in answer.points}
        return found
    finally:
        await client.close()


async def test_searches_answer_alike_after_the_migration(source: Path, tmp_path: Path, tiny_repository: Path):
    target = (await migrate_folder(source, tmp_path / "edge", progress=False)).store
    # Every vector (dense, multivectors and their slots, sparse with IDF) of one anime as a query: same
    # points, same scores.
    queries = (await _read(source, "local"))["collections"]
    live = next(c for c in queries.values() if c["points"])
    query = next(iter(live["points"].values())).vector
    before, after = await _scores(source, "local", query), await _scores(target, "edge", query)
    assert set(after) == set(query) and len([n for n in query if not is_slot(n)]) == 5
    assert any(is_slot(n) for n in query)
    for name, scores in before.items():
        assert len(scores) == 12 and set(after[name]) == set(scores), name
        for point_id, score in scores.items():
            assert after[name][point_id] == pytest.approx(score, rel=1e-4, abs=1e-5), (name, point_id)

    # The service starts on the migrated store (the schema fits, nothing is missing, the calibration
    # and the rollout are read) and answers like before. Only the first answer is compared: the two
    # engines' fused scores differ (the tiny random model's lists are near-ties throughout), and the
    # second place was seen to swap between two runs of the same code.
    answers = []
    for folder, engine in ((source, "local"), (target, "edge")):
        async with AsyncTestClient(create_app(_settings(tiny_repository, folder, engine))) as client:
            runtime = client.app.state.runtime
            assert runtime.store.engine == f"qdrant-{engine}"
            for mode in ("dense", "hybrid"):
                body = {"query": "a boy pilots a giant robot", "limit": 12, "text_mode": mode}
                answers.append(ids(await post(client, "/api/v1/search", body)))
            assert runtime.store.missing == frozenset() and await runtime.calibration() is not None
            assert runtime.rollout == Rollout(default=1, history=(1,))
    local_dense, local_hybrid, edge_dense, edge_hybrid = answers
    assert edge_dense[:1] == local_dense[:1] and edge_hybrid[:1] == local_hybrid[:1]
    assert len(edge_dense) == len(edge_hybrid) == 12


def test_the_command_converts_in_place_and_keeps_a_backup(source: Path):
    done = subprocess.run(
        [sys.executable, "-m", "service.store", "migrate", str(source)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    backups = list(source.parent.glob("qdrant.local-backup-*"))
    assert len(backups) == 1 and str(backups[0]) in done.stdout
    assert (backups[0] / "meta.json").is_file()  # the old store, as it was
    assert "12 points" in done.stdout and "[migrate " in done.stderr  # counted, with progress lines
    assert not list(source.parent.glob("*.migrating-*"))

    async def count() -> int:
        client = EdgeQdrantClient(source)
        try:
            return (await client.count(ALIAS, exact=True)).count
        finally:
            await client.close()

    assert asyncio.run(count()) == 12
    # Run again (say, by a deploy script): nothing to do, and nothing is touched.
    assert store_main(["migrate", str(source)]) == 0
    assert len(list(source.parent.glob("qdrant.local-backup-*"))) == 1


def test_what_must_not_be_touched_is_refused(source: Path, tmp_path: Path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert store_main(["migrate", str(source), "--to", str(occupied)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (occupied / "keep.txt").read_text() == "mine" and len(list(occupied.iterdir())) == 1
    assert store_main(["migrate", str(tmp_path / "missing")]) == 2
    assert store_main(["migrate", str(occupied)]) == 2
    assert "no qdrant-client local-mode store" in capsys.readouterr().err
    assert (source / "meta.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "occupied",
        "qdrant",
    ]


async def test_a_count_that_does_not_match_fails_and_leaves_the_source(
    source: Path, monkeypatch: pytest.MonkeyPatch
):
    upsert = EdgeQdrantClient.upsert

    async def losing_one(self, collection_name, points, **options):  # type: ignore[no-untyped-def]
        return await upsert(self, collection_name, points[:-1], **options)

    monkeypatch.setattr(migration.EdgeQdrantClient, "upsert", losing_one)
    meta = (source / "meta.json").read_bytes()
    with pytest.raises(MigrationFailed, match="12 points in the local-mode store, 11 in the copy"):
        await migrate_folder(source, progress=False)
    assert (source / "meta.json").read_bytes() == meta
    assert sorted(p.name for p in source.parent.iterdir()) == ["qdrant"]  # no backup, no partial copy


def test_the_service_refuses_an_unmigrated_folder_naming_the_command(
    source: Path, tiny_repository: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    env = {"MODEL_REPOSITORY": str(tiny_repository), "QDRANT_PATH": str(source), "SERVICE_PORT": "1"}
    started = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env={**_environ_without_service_settings(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 2
    assert "Traceback" not in started.stderr
    line = json.loads(started.stderr.strip().splitlines()[-1])
    assert line["level"] == "error" and line["event"] == "cannot start"
    assert line["command"] == f"python -m service.store migrate {source}"
    assert line["command"] in line["reason"] and "QDRANT_EMBEDDED_ENGINE=local" in line["reason"]

    # The ingest CLI says the same, before it loads any document.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ingest_cli.main(["file", str(source / "not-read.json")]) == 2
    assert "python -m service.store migrate" in capsys.readouterr().err
    with pytest.raises(LocalModeFolder):  # and the store itself, opened any other way
        EdgeQdrantClient(source)
    assert not (source / "shards").exists()


def _environ_without_service_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "MODEL_", "SERVICE_"))}
