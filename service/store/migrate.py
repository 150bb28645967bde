"""Converting an earlier release's embedded store (qdrant-client's local mode) to qdrant-edge.

Earlier releases kept the embedded catalogue with qdrant-client's local mode (`meta.json` and
`collection/<name>/storage.sqlite`); the embedded engine is now qdrant-edge (edge_client.py), which
refuses such a folder rather than read it as empty. `migrate_folder` writes a new edge store beside
the destination with every collection of the old one: the same vectors (dense, multivector, sparse
with its modifier), its metadata (the index settings, calibrations and rollout the service keeps
there) and the HNSW and quantization settings recorded in it, the store's payload indexes (local mode
keeps none), every point with its vectors and payload, and the aliases. Point counts are compared per
collection, then the optimizers build the HNSW graphs and payload indexes, so the service's first
start does not have to. Only then does the new folder take its place (in place: the old folder is
renamed to a backup first); any failure before that leaves the source as it was and removes the copy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from service.platform.logs import get_logger
from service.platform.progress import counter
from service.store import schema_check
from service.store.edge_client import ALIASES_FILE, EdgeQdrantClient, is_local_mode_folder
from service.store.filters import PAYLOAD_INDEXES
from service.store.folders import fsync_dir

_log = get_logger("service.store.migrate")

BATCH_SIZE = 256
_LOCAL_META = "meta.json"


class AlreadyEdge(Exception):
    """The folder already holds a qdrant-edge store: nothing to do."""


class MigrationRefused(ValueError):
    """A source or target the migration must not touch (bad input): nothing was changed."""


class MigrationFailed(RuntimeError):
    """The copy could not be made or did not check out: the source is as it was, the copy removed."""


@dataclass(frozen=True)
class CollectionCopied:
    name: str
    points: int
    payload_indexes: list[str]
    # The index settings (HNSW, quantization) were the store's record; else qdrant-edge's defaults.
    index_settings_kept: bool


@dataclass(frozen=True)
class Migration:
    source: Path
    store: Path  # where the qdrant-edge store is now
    backup: Path | None  # in place: where the local-mode folder was moved
    collections: list[CollectionCopied]
    aliases: dict[str, str]
    seconds: float

    @property
    def points(self) -> int:
        return sum(c.points for c in self.collections)


def is_edge_folder(root: Path) -> bool:
    return (root / ALIASES_FILE).is_file() or (root / "collections").is_dir() or (root / "shards").is_dir()


async def migrate_folder(
    source: Path, target: Path | None = None, *, batch_size: int = BATCH_SIZE, progress: bool = True
) -> Migration:
    """Convert the local-mode store in `source` to a qdrant-edge store: in place (the old folder kept as
    `<source>.local-backup-<UTC time>`), or into `target` (a new or empty folder; `source` untouched).

    Raises `AlreadyEdge`, `MigrationRefused` (nothing touched) or `MigrationFailed` (source untouched).
    """
    started = time.monotonic()
    plan = _plan(Path(source), None if target is None else Path(target))
    try:
        collections, aliases = await _copy(plan.source, plan.staging, batch_size, progress)
        _put_in_place(plan)
    except BaseException as exc:
        shutil.rmtree(plan.staging, ignore_errors=True)
        if isinstance(exc, (MigrationFailed, MigrationRefused)) or not isinstance(exc, Exception):
            raise
        raise MigrationFailed(f"{exc} ({plan.source} is left as it was)") from exc
    seconds = time.monotonic() - started
    return Migration(plan.source, plan.destination, plan.backup, collections, aliases, seconds)


@dataclass(frozen=True)
class _Plan:
    source: Path
    destination: Path
    staging: Path  # the copy is written here, beside the destination (one file system: a rename)
    backup: Path | None  # in place: where the local-mode folder goes


def _plan(source: Path, target: Path | None) -> _Plan:
    """Where everything goes, once source and target are checked (`MigrationRefused`, `AlreadyEdge`)."""
    # Resolved: a QDRANT_PATH that is a symlink keeps pointing at the converted store.
    source = source.resolve()
    _check_source(source)
    destination = source if target is None else target.resolve()
    if target is None:
        if os.path.ismount(source):
            raise MigrationRefused(
                f"{source} is a mount point and cannot be renamed: migrate with --to a folder on the volume"
            )
    else:
        _check_target(destination, source)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    staging = destination.with_name(f"{destination.name}.migrating-{stamp}")
    backup = source.with_name(f"{source.name}.local-backup-{stamp}") if target is None else None
    for planned in (staging, backup):
        if planned is not None and planned.exists():
            raise MigrationRefused(f"{planned} already exists: move it aside, or try again in a second")
    destination.parent.mkdir(parents=True, exist_ok=True)
    return _Plan(source, destination, staging, backup)


def _check_source(source: Path) -> None:
    if not source.is_dir():
        raise MigrationRefused(f"{source} is not a folder")
    local, edge = is_local_mode_folder(source), is_edge_folder(source)
    if local and edge:
        raise MigrationRefused(
            f"{source} holds both a local-mode store (meta.json, collection/) and a qdrant-edge store "
            "(collections/, shards/): move one of them aside first"
        )
    if edge:
        raise AlreadyEdge(f"{source} already holds a qdrant-edge store: nothing to migrate")
    if not (source / _LOCAL_META).is_file():
        raise MigrationRefused(f"{source} holds no qdrant-client local-mode store (no {_LOCAL_META})")


def _check_target(target: Path, source: Path) -> None:
    if target == source or target.is_relative_to(source):
        raise MigrationRefused(f"{target} is the source {source} or inside it: name a folder outside it")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise MigrationRefused(f"{target} exists and is not empty: name a new or empty folder")
    if os.path.ismount(target):  # the copy is renamed into place, which a mount point cannot take
        raise MigrationRefused(f"{target} is a mount point: name a new folder inside it")


@contextmanager
def _quiet() -> Iterator[None]:
    # Local mode warns about large collections on open and about its sqlite on close; nothing to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _open_local(source: Path) -> AsyncQdrantClient:
    try:
        with _quiet():
            return AsyncQdrantClient(path=str(source))
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise MigrationFailed(
                f"{source} is in use by another process (the service, or an ingest): stop it first"
            ) from exc
        raise


async def _copy(
    source: Path, staging: Path, batch_size: int, progress: bool
) -> tuple[list[CollectionCopied], dict[str, str]]:
    local = _open_local(source)
    try:
        edge = EdgeQdrantClient(staging, optimize_on_open=False)
        try:
            names = sorted(c.name for c in (await local.get_collections()).collections)
            copied = [await _copy_collection(local, edge, name, batch_size, progress) for name in names]
            aliases = {a.alias_name: a.collection_name for a in (await local.get_aliases()).aliases}
            if aliases:
                await edge.update_collection_aliases(
                    [
                        models.CreateAliasOperation(
                            create_alias=models.CreateAlias(collection_name=c, alias_name=a)
                        )
                        for a, c in aliases.items()
                    ]
                )
            await _check_copy(edge, copied, aliases, source)
            _log.info("building indexes", collections=len(names))
            await edge.optimize()
        finally:
            await edge.close()
    finally:
        with _quiet():
            await local.close()
    return copied, aliases


async def _copy_collection(
    local: AsyncQdrantClient,
    edge: EdgeQdrantClient,
    name: str,
    batch_size: int,
    progress: bool,
) -> CollectionCopied:
    info = await local.get_collection(name)
    params = info.config.params
    # Local mode keeps only the vectors and the metadata of what it was asked to create (it builds no
    # HNSW, quantization or payload indexes, and reports fixed values): the index settings are the ones
    # the store recorded in the metadata when it created the collection, translated as it does.
    recorded = schema_check.recorded_params(info)
    await edge.create_collection(
        name,
        vectors_config=params.vectors,
        sparse_vectors_config=params.sparse_vectors,
        hnsw_config=recorded.hnsw() if recorded is not None else None,
        quantization_config=recorded.quantization_config() if recorded is not None else None,
        on_disk_payload=recorded.on_disk_payload if recorded is not None else params.on_disk_payload,
        metadata=info.config.metadata,
    )
    # The indexes the store gives every collection it creates (local mode scans and keeps none).
    for key, schema in PAYLOAD_INDEXES.items():
        await edge.create_payload_index(name, key, field_schema=schema, wait=True)
    total = (await local.count(name, exact=True)).count
    _log.info("copying collection", collection=name, points=total)
    reporter: AbstractContextManager[Callable[[int], None]] = (
        counter(f"migrate {name}", total, unit="point") if progress else nullcontext(_silent)
    )
    offset: Any = None
    with reporter as advance:
        while True:
            records, offset = await local.scroll(
                name, limit=batch_size, offset=offset, with_payload=True, with_vectors=True
            )
            if records:
                points = [
                    models.PointStruct(id=r.id, vector=r.vector or {}, payload=r.payload or {})
                    for r in records
                ]
                await edge.upsert(name, points, wait=True)
                advance(len(records))
            if offset is None:
                break
    return CollectionCopied(name, total, list(PAYLOAD_INDEXES), recorded is not None)


async def _check_copy(
    edge: EdgeQdrantClient, copied: list[CollectionCopied], aliases: dict[str, str], source: Path
) -> None:
    """The copy against the source's counts (taken before copying; the source is locked meanwhile)."""
    problems = []
    for collection in copied:
        got = (await edge.count(collection.name, exact=True)).count
        if collection.points != got:
            problems.append(
                f"collection {collection.name}: {collection.points} points in the local-mode store, "
                f"{got} in the copy"
            )
    kept = {a.alias_name: a.collection_name for a in (await edge.get_aliases()).aliases}
    if kept != aliases:
        problems.append(f"aliases {aliases} became {kept}")
    if problems:
        raise MigrationFailed(
            "the copy does not match: " + "; ".join(problems) + f" ({source} is left as it was)"
        )


def _put_in_place(plan: _Plan) -> None:
    """Move the checked copy to the destination (in place: the old folder to the backup first)."""
    staging, destination, backup = plan.staging, plan.destination, plan.backup
    if backup is not None:
        os.rename(destination, backup)
        try:
            os.rename(staging, destination)
        except BaseException:
            os.rename(backup, destination)  # the old store back where it was
            raise
    else:
        if destination.exists():
            destination.rmdir()  # checked empty
        os.rename(staging, destination)
    with contextlib.suppress(OSError):  # the renames survive a power cut where the file system allows
        fsync_dir(destination.parent)


def _silent(_: int) -> None:
    return None
