"""An asyncio Qdrant client over qdrant-edge: Qdrant's own engine (segments, HNSW, payload indexes,
quantization, Query API, WAL) in-process, on a folder.

It implements the subset of `qdrant_client.AsyncQdrantClient` that the store uses (`QdrantApi` in
service/store/backend.py), with the same signatures, `qdrant_client.models` in and out, so the store
runs unchanged on it — the shape of qdrant-client itself (one client API, local and remote
implementations). qdrant-client's own local mode is a pure-Python exact scan; this is the engine a
server runs, without the server.

Layout of the folder (one process owns it, see `EdgeQdrantClient.__init__`):

    .edge.lock                 exclusive flock held while a client is open
    aliases.json               {"aliases": {alias: collection}}, replaced atomically
    collections/<name>.json    what the shard does not keep: the config as created, metadata, the
                               payload indexes asked for. The collection exists iff this file does.
    shards/<name>/             the collection's EdgeShard (segments, WAL, edge_config.json)
    restored/<name>/<time>/    the collection's shard instead, once a snapshot was restored (the
                               record's "shard" names it)
    snapshots/<name>/<name>-<time>.snapshot[.checksum]
                               snapshots and their SHA-256 (format: service/store/edge_snapshots.py)

Snapshots: qdrant-edge 0.9 can unpack a server's snapshot but not make one, so they are made here: under
the collection's write lock the shard is flushed and copied (only its data, see folders.py; writes wait
that long, searches do not), then the copy and the record are written out as one tar. A restore unpacks
the file beside the live shard, loads it, and swaps it in by replacing the record, the one commit point:
searches in flight finish on the old shard, which is closed and deleted after them, so none fails. The
old shard is never renamed or overwritten while open: closing a shard writes to its folder by path.

Durability: `EdgeShard.update` appends to a memory-mapped WAL and returns without any fsync/msync
(checked with strace); only `flush()` syncs the WAL and segments. A killed process loses nothing
either way (the page cache survives it and the WAL is replayed on load), but a power cut or kernel
crash could. So every write is flushed before it is acknowledged.

Threads: shard calls block, so they run in a bounded thread pool off the event loop, and writes to
one collection are serialised. Queries release the GIL inside the engine; qdrant-edge 0.9 holds it
through `update`, `flush` and `optimize` (measured), so those stall the event loop for their
duration whatever thread runs them. That is why `optimize` (building HNSW and payload indexes,
merging segments) is not run in the background while serving: it runs when a client opens the
folder (before the service answers) and whenever `optimize()` is called, e.g. at the end of a bulk
ingest. Between those, new points sit in an appendable segment searched exactly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import functools
import inspect
import json
import logging
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as edge
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.models import QueryResponse

from service.store import edge_convert as convert
from service.store import edge_snapshots as snapshots
from service.store.edge_convert import Unsupported, refuse
from service.store.folders import copy_folder, fsync_dir

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCK_FILE = ".edge.lock"
ALIASES_FILE = "aliases.json"
SNAPSHOTS_DIR = "snapshots"
RESTORED_DIR = "restored"
RECORD_FORMAT = 1
_SCROLL_PAGE = 1024
_INVALID_NAME_CHARS = set('<>:"/\\|?*\0')
_COMPLETED = models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)

# Messages of qdrant-edge errors that say the engine or its storage failed, not the request: the
# store is unavailable (an answer of 503), like a server that cannot be reached.
_STORAGE_FAILURES = (
    "Service runtime error",
    "Service internal error",
    "Inconsistent storage",
    "Out of memory",
    "Timeout error",
    "Operation cancelled",
    "No space left",
    "I/O error",
)


class EdgeStorageError(RuntimeError):
    """The embedded engine or its folder failed (I/O, disk full, corruption, lock): store unavailable."""


class StoreLocked(EdgeStorageError):
    """Another process holds the folder; two engines on one folder would corrupt it."""


class EdgeRequestError(ValueError):
    """The embedded engine refused the request (wrong dimensions, unknown vector, bad filter...)."""


def _translate(exc: Exception) -> Exception:
    """qdrant-edge raises bare `Exception`s; sort them into unavailable-store and bad-request errors."""
    message = str(exc)
    if any(marker in message for marker in _STORAGE_FAILURES):
        return EdgeStorageError(f"qdrant-edge: {message}")
    return EdgeRequestError(f"qdrant-edge: {message}")


def _engine_call(fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except Exception as exc:
        if type(exc) is Exception:  # qdrant-edge's own; ours and Python's keep their types
            raise _translate(exc) from exc
        raise


# -- the folder ------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    """Replace `path` atomically and durably: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out, ensure_ascii=False, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _remove_durably(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as source:
        return json.load(source)


def _lock_folder(root: Path, *, write_pid: bool = True) -> int:
    """Take the folder's exclusive lock (released when the descriptor closes, even on a crash)."""
    lock_path = root / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLocked(
            f"the embedded Qdrant store {root} is in use by another process (pid {holder}, lock "
            f"{lock_path}); stop it, or use a Qdrant server for concurrent access"
        ) from None
    if write_pid:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    return fd


def refuse_a_held_folder(root: Path) -> None:
    """Raise `StoreLocked` now if another process owns `root`, without keeping the lock.

    Start-up asks this before serving so that a second service on the folder stops with one clear line;
    the lock taken when the client opens stays the guarantee (the owner may start in between)."""
    if (root / LOCK_FILE).is_file():
        os.close(_lock_folder(root, write_pid=False))


class LocalModeFolder(EdgeStorageError):
    """The folder holds qdrant-client's local-mode store (earlier releases' embedded store)."""

    def __init__(self, root: Path) -> None:
        self.path = root
        self.command = f"python -m service.store migrate {root}"
        super().__init__(
            f"{root} holds a qdrant-client local-mode store (meta.json, collection/), the embedded store "
            f"of earlier releases: convert it once with `{self.command}` (the old folder is kept as a "
            "backup), or keep serving it as it is with QDRANT_EMBEDDED_ENGINE=local (an exact scan)"
        )


def is_local_mode_folder(root: Path) -> bool:
    return (root / "meta.json").is_file() or (root / "collection").is_dir()


def refuse_local_mode_folder(root: Path) -> None:
    """A qdrant-client local-mode folder must not be mistaken for an empty edge store."""
    if is_local_mode_folder(root):
        raise LocalModeFolder(root)


def _check_name(name: str) -> None:
    if name in ("", ".", "..") or len(name) > 255 or any(c in _INVALID_NAME_CHARS for c in name):
        raise ValueError(f"invalid collection name {name!r}")


# -- collections -----------------------------------------------------------------------------------


@dataclass
class _Collection:
    name: str
    shard: Any  # edge.EdgeShard
    record: dict[str, Any]
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False
    # Shard calls in the pool now: a restore closes the shard it replaced only after them.
    calls: set[concurrent.futures.Future[Any]] = field(default_factory=set)


def _new_record(
    vectors: Any,
    sparse: Mapping[str, models.SparseVectorParams] | None,
    hnsw: models.HnswConfig,
    quantization: Any,
    on_disk_payload: bool | None,
    metadata: Mapping[str, Any] | None,
) -> dict[str, Any]:
    def dump(value: Any) -> Any:
        return None if value is None else value.model_dump(mode="json", exclude_none=True)

    return {
        "format": RECORD_FORMAT,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "vectors": dump(vectors)
        if isinstance(vectors, models.VectorParams)
        else {name: dump(p) for name, p in (vectors or {}).items()},
        "sparse_vectors": None if sparse is None else {name: dump(p) for name, p in sparse.items()},
        "hnsw_config": dump(hnsw),
        "quantization_config": dump(quantization),
        # qdrant-edge keeps payloads on disk unless told otherwise.
        "on_disk_payload": True if on_disk_payload is None else on_disk_payload,
        "metadata": None if metadata is None else json.loads(json.dumps(dict(metadata))),
        "payload_indexes": {},
    }


def _collection_info(record: Mapping[str, Any], info: Any) -> models.CollectionInfo:
    """A server-shaped CollectionInfo: config from the record, counts and indexes from the shard."""
    return models.CollectionInfo(
        status=models.CollectionStatus.GREEN,
        optimizer_status=models.OptimizersStatusOneOf.OK,
        indexed_vectors_count=info.indexed_vectors_count,
        points_count=info.points_count,
        segments_count=info.segments_count,
        config=models.CollectionConfig(
            params=models.CollectionParams(
                vectors=record["vectors"],
                sparse_vectors=record["sparse_vectors"],
                shard_number=1,
                replication_factor=1,
                write_consistency_factor=1,
                on_disk_payload=record["on_disk_payload"],
            ),
            hnsw_config=record["hnsw_config"],
            # qdrant-edge's documented optimizer defaults; it has no flush timer (0: flushed per write).
            optimizer_config=models.OptimizersConfig(
                deleted_threshold=0.2,
                vacuum_min_vector_number=1000,
                default_segment_number=0,
                flush_interval_sec=0,
            ),
            quantization_config=record["quantization_config"],
            metadata=record["metadata"],
        ),
        payload_schema={
            key: models.PayloadIndexInfo(
                data_type=convert.payload_schema_type(index.data_type), params=None, points=index.points
            )
            for key, index in info.payload_schema.items()
        },
        created_at=record.get("created_at"),
    )


# -- shard-side work (runs in the pool threads) ----------------------------------------------------


def _apply_durably(shard: Any, build: Callable[[], list[Any]]) -> None:
    """Apply update operations, then flush: acknowledged writes survive a power cut, not just a crash."""
    operations = build()
    try:
        for operation in operations:
            shard.update(operation)
    finally:
        shard.flush()


def _values_at(payload: Any, key: str) -> list[Any]:
    """Values under a payload path ("a", "a.b", "a[].b"), lists flattened as Qdrant reads them."""
    values = [payload]
    for part in key.split("."):
        part = part.removesuffix("[]")
        found = []
        for value in values:
            if isinstance(value, Mapping) and part in value:
                inner = value[part]
                found.extend(inner if isinstance(inner, list) else [inner])
        values = found
    return values


_FACET_TYPES = (bool, int, str)  # qdrant-client's FacetValue order, used to break ties like it


def _facet_scan(shard: Any, key: str, flt: Any) -> Counter[tuple[int, Any]]:
    """Facet counts by reading payloads: what local mode does, for a key without a payload index."""
    counts: Counter[tuple[int, Any]] = Counter()
    offset = None
    top = key.split(".")[0].removesuffix("[]")
    while True:
        request = edge.ScrollRequest(
            offset=offset,
            limit=_SCROLL_PAGE,
            filter=flt,
            with_payload=edge.PayloadSelector.Include([top]),
            with_vector=False,
        )
        records, offset = shard.scroll(request)
        for found in records:
            seen = {
                (_FACET_TYPES.index(type(v)), v)
                for v in _values_at(found.payload or {}, key)
                if type(v) in _FACET_TYPES
            }
            counts.update(seen)
        if offset is None:
            return counts


def _facet(shard: Any, key: str, flt: Any, limit: int, exact: bool) -> models.FacetResponse:
    if key in shard.info().payload_schema:
        hits = shard.facet(edge.FacetRequest(key, limit=limit, exact=exact, filter=flt)).hits
        counts = {(_FACET_TYPES.index(type(h.value)), h.value): h.count for h in hits}
    else:
        counts = _facet_scan(shard, key, flt)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return models.FacetResponse(hits=[models.FacetValueHit(value=v, count=n) for (_, v), n in ranked])


def _id_order(point: models.ScoredPoint) -> tuple[int, Any]:
    return (0, point.id) if isinstance(point.id, int) else (1, str(point.id))  # numbers first, like Qdrant


def _scored(found: Sequence[Any]) -> QueryResponse:
    """Points as the engine ranked them, exact ties in point-id order.

    The engine orders equal scores by where points sit in its segments, i.e. by write order, so the
    same data written in another order (a reindex copies it in id order) would rank its ties
    differently. Ordering them by id makes the answer a function of the data alone.
    """
    points = [convert.scored_point(p) for p in found]
    ranked: list[models.ScoredPoint] = []
    start = 0
    for end in range(1, len(points) + 1):
        if end == len(points) or points[end].score != points[start].score:
            ranked.extend(sorted(points[start:end], key=_id_order) if end - start > 1 else points[start:end])
            start = end
    return QueryResponse(points=ranked)


def _retrieve(shard: Any, ids: Sequence[Any], with_payload: Any, with_vectors: Any) -> list[models.Record]:
    asked = [convert.point_id(i) for i in ids]
    wanted = list(dict.fromkeys(asked))
    found = shard.retrieve(
        wanted,
        with_payload=convert.with_payload(with_payload),
        with_vector=convert.with_vectors(with_vectors),
    )
    by_id = {convert.from_point_id(r.id): convert.record(r) for r in found}
    return [by_id[i] for i in asked if i in by_id]  # in the order asked, repeats too, like local mode


def _points(points: Any) -> list[models.PointStruct]:
    if isinstance(points, models.Batch):
        return convert.batch_points(points)
    if isinstance(points, Sequence) and not isinstance(points, (str, bytes)):
        return list(points)
    raise Unsupported(f"points of type {type(points).__name__}")


def _selected(selector: Any) -> tuple[list[Any] | None, Any]:
    """(point ids, None) or (None, edge filter) for a points selector."""
    if isinstance(selector, models.PointIdsList):
        refuse(shard_key=selector.shard_key)
        return [convert.point_id(i) for i in selector.points], None
    if isinstance(selector, models.FilterSelector):
        refuse(shard_key=selector.shard_key)
        return None, convert.edge_filter(selector.filter)
    if isinstance(selector, models.Filter):
        return None, convert.edge_filter(selector)
    if isinstance(selector, Sequence) and not isinstance(selector, (str, bytes)):
        return [convert.point_id(i) for i in selector], None
    raise Unsupported(f"points selector of type {type(selector).__name__}")


def _upsert_operation(points: Any, update_filter: Any = None, update_mode: Any = None) -> Any:
    modes = {
        models.UpdateMode.UPSERT: edge.UpdateMode.Upsert,
        models.UpdateMode.INSERT_ONLY: edge.UpdateMode.InsertOnly,
        models.UpdateMode.UPDATE_ONLY: edge.UpdateMode.UpdateOnly,
    }
    return edge.UpdateOperation.upsert_points(
        [convert.edge_point(p) for p in _points(points)],
        condition=convert.edge_filter(update_filter),
        update_mode=None if update_mode is None else modes[update_mode],
    )


def _delete_operation(selector: Any) -> Any:
    ids, flt = _selected(selector)
    if ids is not None:
        return edge.UpdateOperation.delete_points(ids)
    return edge.UpdateOperation.delete_points_by_filter(flt)


def _payload_operation(kind: str, payload: Any, ids: Any, flt: Any, key: str | None) -> Any:
    """set_payload / overwrite_payload by ids or by filter (a server takes either, not both)."""
    if (ids is None) == (flt is None):
        raise ValueError(f"{kind} needs either point ids or a filter")
    payload = dict(payload)
    if ids is not None:
        return getattr(edge.UpdateOperation, kind)([convert.point_id(i) for i in ids], payload, key)
    return getattr(edge.UpdateOperation, f"{kind}_by_filter")(convert.edge_filter(flt), payload, key)


def _by_ids_or_filter(name: str, ids: Any, flt: Any, *rest: Any) -> Any:
    if (ids is None) == (flt is None):
        raise ValueError(f"{name} needs either point ids or a filter")
    if ids is not None:
        return getattr(edge.UpdateOperation, name)([convert.point_id(i) for i in ids], *rest)
    return getattr(edge.UpdateOperation, f"{name}_by_filter")(convert.edge_filter(flt), *rest)


def _batch_operation(operation: Any) -> Any:
    """One operation of `batch_update_points`."""
    if isinstance(operation, models.UpsertOperation):
        upsert = operation.upsert
        refuse(shard_key=upsert.shard_key)
        points = upsert.points if isinstance(upsert, models.PointsList) else upsert.batch
        return _upsert_operation(points, upsert.update_filter, upsert.update_mode)
    if isinstance(operation, models.DeleteOperation):
        return _delete_operation(operation.delete)
    if isinstance(operation, (models.SetPayloadOperation, models.OverwritePayloadOperation)):
        kind = "set_payload" if isinstance(operation, models.SetPayloadOperation) else "overwrite_payload"
        body = getattr(operation, kind)
        refuse(shard_key=body.shard_key)
        return _payload_operation(kind, body.payload, body.points, body.filter, body.key)
    if isinstance(operation, models.DeletePayloadOperation):
        body = operation.delete_payload
        refuse(shard_key=body.shard_key)
        return _by_ids_or_filter("delete_payload", body.points, body.filter, list(body.keys))
    if isinstance(operation, models.ClearPayloadOperation):
        ids, flt = _selected(operation.clear_payload)
        return _by_ids_or_filter("clear_payload", ids, flt)
    if isinstance(operation, models.DeleteVectorsOperation):
        body = operation.delete_vectors
        refuse(shard_key=body.shard_key)
        return _by_ids_or_filter("delete_vectors", body.points, body.filter, list(body.vector))
    if isinstance(operation, models.UpdateVectorsOperation):
        body = operation.update_vectors
        refuse(shard_key=body.shard_key)
        vectors = [
            edge.PointVectors(convert.point_id(p.id), convert.edge_vectors(p.vector)) for p in body.points
        ]
        return edge.UpdateOperation.update_vectors(vectors, condition=convert.edge_filter(body.update_filter))
    raise Unsupported(f"update operation {type(operation).__name__}")


# -- the client ------------------------------------------------------------------------------------


class EdgeQdrantClient:
    """`AsyncQdrantClient`'s API (the subset the service uses) over qdrant-edge shards in a folder."""

    def __init__(
        self, path: str | os.PathLike[str], *, workers: int | None = None, optimize_on_open: bool = True
    ):
        """Open (or start) the store in `path`, owning it until `close()`.

        `optimize_on_open` runs the shard optimizers on every collection before returning, so a
        collection bulk-loaded by an earlier process (the ingest CLI) gets its HNSW and payload
        indexes before this one serves: ~11 s for 8,658 anime on two cores (the GIL is held meanwhile),
        and a no-op (~50 µs) when there is nothing to do.
        """
        self._root = Path(path)
        self._root.mkdir(parents=True, exist_ok=True)
        refuse_local_mode_folder(self._root)
        self._lock_fd: int | None = _lock_folder(self._root)
        self._pool = ThreadPoolExecutor(
            max_workers=workers or min(4, os.cpu_count() or 1), thread_name_prefix="qdrant-edge"
        )
        self._catalogue_lock = asyncio.Lock()  # collection lifecycle, aliases and records
        self._closed = False
        try:
            (self._root / "collections").mkdir(exist_ok=True)
            (self._root / "shards").mkdir(exist_ok=True)
            aliases_path = self._root / ALIASES_FILE
            self._aliases: dict[str, str] = (
                dict(_read_json(aliases_path)["aliases"]) if aliases_path.exists() else {}
            )
            self._collections = self._load_all(optimize_on_open)
        except BaseException:
            self._release()
            raise

    # -- folder and lifecycle --------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._root

    def _record_path(self, name: str) -> Path:
        return self._root / "collections" / f"{name}.json"

    def _shard_path(self, name: str) -> Path:
        return self._root / "shards" / name

    def _shard_dir(self, name: str, record: Mapping[str, Any]) -> Path:
        """Where a collection's shard is: shards/<name>/, or where a restore unpacked it."""
        return self._root / record["shard"] if "shard" in record else self._shard_path(name)

    def _snapshots_dir(self, name: str) -> Path:
        return self._root / SNAPSHOTS_DIR / name

    @staticmethod
    def snapshot_location(root: str | os.PathLike[str], collection_name: str, snapshot_name: str) -> str:
        """The `recover_snapshot` location of a snapshot made by the client on the folder `root`."""
        snapshots.check_name(snapshot_name)
        _check_name(collection_name)
        return (Path(root).resolve() / SNAPSHOTS_DIR / collection_name / snapshot_name).as_uri()

    def _load_all(self, optimize: bool) -> dict[str, _Collection]:
        loaded: dict[str, _Collection] = {}
        for record_path in sorted((self._root / "collections").glob("*.json")):
            name = record_path.stem
            try:
                record = _read_json(record_path)
                started = time.perf_counter()
                shard = _engine_call(edge.EdgeShard.load, str(self._shard_dir(name, record)))
                opened = time.perf_counter()  # the WAL replayed: after a crash, what recovery cost
                loaded[name] = _Collection(name, shard, record)
                if optimize:
                    self._optimize_now(loaded[name])
                # Always logged: restart time after a crash is load + optimize, and operators need both.
                log.info(
                    "qdrant-edge: opened collection %s in %.2f s (optimize %.2f s)",
                    name,
                    opened - started,
                    time.perf_counter() - opened,
                )
            except BaseException:
                for collection in loaded.values():
                    collection.shard.close()
                raise
        self._aliases = {a: c for a, c in self._aliases.items() if c in loaded}
        self._remove_leftovers(loaded)
        return loaded

    def _remove_leftovers(self, loaded: Mapping[str, _Collection]) -> None:
        """What a crash left: restores that never committed (or the shards they replaced), temp files."""
        restored = self._root / RESTORED_DIR
        kept = {self._shard_dir(c.name, c.record) for c in loaded.values()}
        for folder in sorted(restored.glob("*/*")):
            if folder not in kept:
                shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
        for folder in sorted(restored.glob("*")):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        snapshots.remove_leftovers(self._root / SNAPSHOTS_DIR)

    @staticmethod
    def _optimize_now(collection: _Collection) -> bool:
        started = time.perf_counter()
        changed = bool(_engine_call(collection.shard.optimize))
        if changed:
            log.info(
                "qdrant-edge: optimized collection %s in %.1f s",
                collection.name,
                time.perf_counter() - started,
            )
        return changed

    def _release(self) -> None:
        self._pool.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    async def close(self, grpc_grace: float | None = None) -> None:
        """Finish writes in flight, flush and close every shard, release the folder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        async with self._catalogue_lock:
            for collection in list(self._collections.values()):
                await self._close_collection(collection)
            self._collections.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._release)

    async def _close_collection(self, collection: _Collection) -> None:
        async with collection.write_lock:
            collection.closed = True
            await asyncio.get_running_loop().run_in_executor(
                self._pool, _engine_call, _flush_and_close, collection.shard
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("EdgeQdrantClient is closed. Please create a new instance.")

    def _collection(self, name: str) -> _Collection:
        """The collection `name` (or the one the alias `name` points to)."""
        self._check_open()
        found = self._collections.get(name) or self._collections.get(self._aliases.get(name, ""))
        if found is None:
            raise ValueError(f"Collection {name} not found")
        return found

    async def _call(self, collection: _Collection, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking shard call in the pool; a collection dropped meanwhile reads as not found."""
        future = self._pool.submit(functools.partial(_engine_call, fn, *args))
        collection.calls.add(future)
        # Runs in the pool thread when the call ends: set.discard is atomic under the GIL.
        future.add_done_callback(collection.calls.discard)
        try:
            return await asyncio.wrap_future(future)
        except EdgeStorageError as exc:
            if collection.closed:
                raise ValueError(f"Collection {collection.name} not found") from exc
            raise

    async def _write(self, collection_name: str, build: Callable[[], list[Any]]) -> models.UpdateResult:
        """Apply operations built (in the pool thread) by `build`, one writer per collection, durably."""
        collection = self._collection(collection_name)
        async with collection.write_lock:
            if collection.closed:  # dropped while this write waited for the one before it
                raise ValueError(f"Collection {collection.name} not found")
            await self._call(collection, _apply_durably, collection.shard, build)
        return _COMPLETED

    # -- collections -----------------------------------------------------------------------------

    async def get_collections(self) -> models.CollectionsResponse:
        self._check_open()
        return models.CollectionsResponse(
            collections=[models.CollectionDescription(name=name) for name in self._collections]
        )

    async def collection_exists(self, collection_name: str) -> bool:
        try:
            self._collection(collection_name)
        except ValueError:
            return False
        return True

    async def create_collection(
        self,
        collection_name: str,
        vectors_config: models.VectorParams | Mapping[str, models.VectorParams] | None = None,
        sparse_vectors_config: Mapping[str, models.SparseVectorParams] | None = None,
        shard_number: int | None = None,
        sharding_method: models.ShardingMethod | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        on_disk_payload: bool | None = None,
        hnsw_config: models.HnswConfigDiff | None = None,
        optimizers_config: models.OptimizersConfigDiff | None = None,
        wal_config: models.WalConfigDiff | None = None,
        quantization_config: Any = None,
        timeout: int | None = None,
        strict_mode_config: models.StrictModeConfig | None = None,
        metadata: dict[str, Any] | None = None,
        payload: models.PayloadStorageParams | None = None,
        id_tracker: models.IdTrackerParams | None = None,
    ) -> bool:
        """One shard per collection: `shard_number`, `replication_factor` and
        `write_consistency_factor` may only be 1 (or unset)."""
        self._check_open()
        _check_name(collection_name)
        for name, value in (
            ("shard_number", shard_number),
            ("replication_factor", replication_factor),
            ("write_consistency_factor", write_consistency_factor),
        ):
            if value not in (None, 1):
                raise Unsupported(f"`{name}={value}` (one embedded shard, no replicas)")
        refuse(
            sharding_method=sharding_method,
            optimizers_config=optimizers_config,
            wal_config=wal_config,
            strict_mode_config=strict_mode_config,
            payload=payload,
            id_tracker=id_tracker,
        )
        hnsw = convert.hnsw_config(hnsw_config)
        config = convert.edge_config(
            vectors_config, sparse_vectors_config, hnsw, quantization_config, on_disk_payload
        )
        record = _new_record(
            vectors_config, sparse_vectors_config, hnsw, quantization_config, on_disk_payload, metadata
        )
        async with self._catalogue_lock:
            if collection_name in self._collections:
                raise ValueError(f"Collection {collection_name} already exists")
            if collection_name in self._aliases:
                raise ValueError(f"Alias {collection_name} already exists")
            shard = await asyncio.get_running_loop().run_in_executor(
                self._pool, _engine_call, _create_shard, self._shard_path(collection_name), config
            )
            _write_json(self._record_path(collection_name), record)  # the commit point
            self._collections[collection_name] = _Collection(collection_name, shard, record)
        return True

    async def get_collection(self, collection_name: str) -> models.CollectionInfo:
        collection = self._collection(collection_name)
        info = await self._call(collection, collection.shard.info)
        return _collection_info(collection.record, info)

    async def update_collection(
        self,
        collection_name: str,
        optimizers_config: models.OptimizersConfigDiff | None = None,
        collection_params: models.CollectionParamsDiff | None = None,
        vectors_config: Any = None,
        hnsw_config: models.HnswConfigDiff | None = None,
        quantization_config: Any = None,
        timeout: int | None = None,
        sparse_vectors_config: Mapping[str, models.SparseVectorParams] | None = None,
        strict_mode_config: models.StrictModeConfig | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Only `metadata` changes (merged like a server: a None value removes its key)."""
        refuse(
            optimizers_config=optimizers_config,
            collection_params=collection_params,
            vectors_config=vectors_config,
            hnsw_config=hnsw_config,
            quantization_config=quantization_config,
            sparse_vectors_config=sparse_vectors_config,
            strict_mode_config=strict_mode_config,
        )
        collection = self._collection(collection_name)
        if metadata is None:
            return False
        async with self._catalogue_lock:
            merged = dict(collection.record["metadata"] or {})
            for key, value in json.loads(json.dumps(metadata)).items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            record = {**collection.record, "metadata": merged}
            _write_json(self._record_path(collection.name), record)
            collection.record = record
        return True

    async def delete_collection(self, collection_name: str, timeout: int | None = None) -> bool:
        """Drop a collection (not through an alias) and the aliases pointing to it."""
        self._check_open()
        async with self._catalogue_lock:
            collection = self._collections.pop(collection_name, None)
            if collection is None:
                return False
            remaining = {a: c for a, c in self._aliases.items() if c != collection_name}
            if remaining != self._aliases:
                self._save_aliases(remaining)
            _remove_durably(self._record_path(collection_name))  # gone from here on, even after a crash
            await self._close_collection(collection)
            await asyncio.get_running_loop().run_in_executor(
                self._pool, _remove_shard, self._shard_dir(collection.name, collection.record), self._root
            )
        return True

    async def create_payload_index(
        self,
        collection_name: str,
        field_name: str,
        field_schema: Any = None,
        field_type: Any = None,
        wait: bool = True,
        ordering: models.WriteOrdering | None = None,
        timeout: int | None = None,
    ) -> models.UpdateResult:
        schema = field_schema if field_schema is not None else field_type
        if schema is None:
            raise ValueError("create_payload_index needs field_schema")
        edge_schema = convert.edge_payload_schema(schema)
        result = await self._write(
            collection_name, lambda: [edge.UpdateOperation.create_field_index(field_name, edge_schema)]
        )
        collection = self._collection(collection_name)
        async with self._catalogue_lock:
            indexes = {
                **collection.record["payload_indexes"],
                field_name: models.PayloadSchemaType(schema).value,
            }
            record = {**collection.record, "payload_indexes": indexes}
            _write_json(self._record_path(collection.name), record)
            collection.record = record
        return result

    async def delete_payload_index(
        self,
        collection_name: str,
        field_name: str,
        wait: bool = True,
        ordering: models.WriteOrdering | None = None,
        timeout: int | None = None,
    ) -> models.UpdateResult:
        result = await self._write(
            collection_name, lambda: [edge.UpdateOperation.delete_field_index(field_name)]
        )
        collection = self._collection(collection_name)
        async with self._catalogue_lock:
            indexes = {k: v for k, v in collection.record["payload_indexes"].items() if k != field_name}
            record = {**collection.record, "payload_indexes": indexes}
            _write_json(self._record_path(collection.name), record)
            collection.record = record
        return result

    # -- snapshots -------------------------------------------------------------------------------

    async def create_snapshot(
        self, collection_name: str, wait: bool = True, **kwargs: Any
    ) -> models.SnapshotDescription:
        """A consistent copy of the collection as of now: every write acknowledged before it, none after."""
        collection = self._collection(collection_name)
        loop = asyncio.get_running_loop()
        folder = self._snapshots_dir(collection.name)
        destination = folder / snapshots.new_name(collection.name, dt.datetime.now(dt.timezone.utc))
        staging = snapshots.staging(destination)
        await loop.run_in_executor(self._pool, functools.partial(folder.mkdir, parents=True, exist_ok=True))
        try:
            async with collection.write_lock:  # writes wait for the flush and the copy, searches go on
                if collection.closed:
                    raise ValueError(f"Collection {collection.name} not found")
                source = self._shard_dir(collection.name, collection.record)
                await self._call(collection, _flush_and_copy, collection.shard, source, staging)
                record = collection.record
            return await loop.run_in_executor(
                self._pool, snapshots.write, destination, collection.name, record, staging
            )
        finally:
            await loop.run_in_executor(
                self._pool, functools.partial(shutil.rmtree, staging, ignore_errors=True)
            )

    async def list_snapshots(self, collection_name: str, **kwargs: Any) -> list[models.SnapshotDescription]:
        """Oldest first. A dropped collection's snapshots stay (and are listed) until deleted."""
        self._check_open()
        name = self._aliases.get(collection_name, collection_name)
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, snapshots.listing, self._snapshots_dir(name)
        )

    async def delete_snapshot(
        self, collection_name: str, snapshot_name: str, wait: bool = True, **kwargs: Any
    ) -> bool:
        self._check_open()
        snapshots.check_name(snapshot_name)
        name = self._aliases.get(collection_name, collection_name)
        path = self._snapshots_dir(name) / snapshot_name
        if not path.is_file():
            raise EdgeRequestError(f"Snapshot {snapshot_name} of collection {name} not found")
        await asyncio.get_running_loop().run_in_executor(self._pool, snapshots.remove, path)
        return True

    async def recover_snapshot(
        self,
        collection_name: str,
        location: str,
        api_key: str | None = None,
        checksum: str | None = None,
        priority: models.SnapshotPriority | None = None,
        wait: bool = True,
        **kwargs: Any,
    ) -> bool:
        """Replace the collection by a snapshot's (created if missing): points, vectors, payloads,
        payload indexes, metadata and settings as they were. `location`: a file:// URI or a path.

        The snapshot must be of a collection with the same vectors; a missing, damaged or other
        collection's file raises `EdgeRequestError` and changes nothing. Searches run throughout
        (on the old shard until the swap); writes wait for the swap only, and go to the new shard.
        """
        self._check_open()
        path = _snapshot_file(location)
        name = self._aliases.get(collection_name, collection_name)
        _check_name(name)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        destination = self._root / RESTORED_DIR / name / stamp
        loop = asyncio.get_running_loop()
        try:
            shard, record = await loop.run_in_executor(
                self._pool, _load_restored, path, destination, checksum
            )
            try:
                record = {**record, "shard": destination.relative_to(self._root).as_posix()}
                replaced = await self._swap_in(name, shard, record, path.name)
            except BaseException:
                await loop.run_in_executor(self._pool, _engine_call, shard.close)
                raise
        except BaseException:
            await loop.run_in_executor(self._pool, _remove_shard, destination, self._root)
            raise
        if replaced is not None:
            old_shard, old_dir, in_flight = replaced
            # Searches that may still read the old shard finish first: none fails for the restore.
            await loop.run_in_executor(None, concurrent.futures.wait, in_flight)
            await loop.run_in_executor(self._pool, _engine_call, _flush_and_close, old_shard)
            await loop.run_in_executor(self._pool, _remove_shard, old_dir, self._root)
        return True

    async def _swap_in(
        self, name: str, shard: Any, record: dict[str, Any], snapshot: str
    ) -> tuple[Any, Path, list[concurrent.futures.Future[Any]]] | None:
        """Make a loaded shard the collection's (the record is the commit point); returns the shard it
        replaced, its folder and the calls that may still use it (None for a new collection)."""
        async with self._catalogue_lock:
            self._check_open()
            collection = self._collections.get(name)
            if collection is None:
                if name in self._aliases:
                    raise ValueError(f"Alias {name} already exists")
                _write_json(self._record_path(name), record)
                self._collections[name] = _Collection(name, shard, record)
                return None
            if _shape(record) != _shape(collection.record):
                raise EdgeRequestError(
                    f"{snapshot} holds a collection with other vectors than {name}: "
                    f"{_shape(record)} instead of {_shape(collection.record)}"
                )
            async with collection.write_lock:  # no write in flight on the old shard
                _write_json(self._record_path(name), record)
                replaced = (
                    collection.shard,
                    self._shard_dir(name, collection.record),
                    list(collection.calls),
                )
                collection.shard, collection.record = shard, record
                return replaced

    # -- aliases ---------------------------------------------------------------------------------

    def _save_aliases(self, aliases: dict[str, str]) -> None:
        _write_json(self._root / ALIASES_FILE, {"aliases": aliases})
        self._aliases = aliases

    async def get_aliases(self) -> models.CollectionsAliasesResponse:
        self._check_open()
        return models.CollectionsAliasesResponse(
            aliases=[
                models.AliasDescription(alias_name=a, collection_name=c) for a, c in self._aliases.items()
            ]
        )

    async def get_collection_aliases(self, collection_name: str) -> models.CollectionsAliasesResponse:
        self._check_open()
        return models.CollectionsAliasesResponse(
            aliases=[
                models.AliasDescription(alias_name=a, collection_name=c)
                for a, c in self._aliases.items()
                if c == collection_name
            ]
        )

    async def update_collection_aliases(
        self, change_aliases_operations: Sequence[Any], timeout: int | None = None
    ) -> bool:
        """All operations apply together or none do: one atomic replacement of the aliases file."""
        self._check_open()
        async with self._catalogue_lock:
            aliases = dict(self._aliases)
            for operation in change_aliases_operations:
                self._apply_alias_operation(aliases, operation)
            self._save_aliases(aliases)
        return True

    def _apply_alias_operation(self, aliases: dict[str, str], operation: Any) -> None:
        if isinstance(operation, models.CreateAliasOperation):
            target, alias = operation.create_alias.collection_name, operation.create_alias.alias_name
            if target not in self._collections:
                raise ValueError(f"Collection {target} not found")
            if alias in self._collections:
                raise ValueError(f"Collection {alias} already exists")
            aliases[alias] = target
        elif isinstance(operation, models.DeleteAliasOperation):
            aliases.pop(operation.delete_alias.alias_name, None)
        elif isinstance(operation, models.RenameAliasOperation):
            old, new = operation.rename_alias.old_alias_name, operation.rename_alias.new_alias_name
            if new in self._collections:
                raise ValueError(f"Collection {new} already exists")
            if old not in aliases:
                raise ValueError(f"Alias {old} does not exist")
            aliases[new] = aliases.pop(old)
        else:
            raise Unsupported(f"alias operation {type(operation).__name__}")

    # -- writes ------------------------------------------------------------------------------------
    # `wait=False` is answered once the write is durable too; `ordering` and `timeout` have nothing
    # to act on with one local replica whose calls cannot be interrupted.

    async def upsert(
        self,
        collection_name: str,
        points: models.Batch | Sequence[models.PointStruct],
        wait: bool = True,
        ordering: models.WriteOrdering | None = None,
        shard_key_selector: Any = None,
        update_filter: models.Filter | None = None,
        update_mode: models.UpdateMode | None = None,
        timeout: int | None = None,
    ) -> models.UpdateResult:
        refuse(shard_key_selector=shard_key_selector)
        return await self._write(
            collection_name, lambda: [_upsert_operation(points, update_filter, update_mode)]
        )

    async def delete(
        self,
        collection_name: str,
        points_selector: Any,
        wait: bool = True,
        ordering: models.WriteOrdering | None = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
    ) -> models.UpdateResult:
        refuse(shard_key_selector=shard_key_selector)
        return await self._write(collection_name, lambda: [_delete_operation(points_selector)])

    async def set_payload(
        self,
        collection_name: str,
        payload: dict[str, Any],
        points: Any,
        key: str | None = None,
        wait: bool = True,
        ordering: models.WriteOrdering | None = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
    ) -> models.UpdateResult:
        refuse(shard_key_selector=shard_key_selector)

        def build() -> list[Any]:
            ids, flt = _selected(points)
            return [_payload_operation("set_payload", payload, ids, flt, key)]

        return await self._write(collection_name, build)

    async def overwrite_payload(
        self,
        collection_name: str,
        payload: dict[str, Any],
        points: Any,
        wait: bool = True,
        ordering: models.WriteOrdering | None = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
    ) -> models.UpdateResult:
        refuse(shard_key_selector=shard_key_selector)

        def build() -> list[Any]:
            ids, flt = _selected(points)
            return [_payload_operation("overwrite_payload", payload, ids, flt, None)]

        return await self._write(collection_name, build)

    async def batch_update_points(
        self,
        collection_name: str,
        update_operations: Sequence[Any],
        wait: bool = True,
        ordering: models.WriteOrdering | None = None,
        timeout: int | None = None,
    ) -> list[models.UpdateResult]:
        """In order, then one flush; like a server's, the batch is not atomic."""
        await self._write(collection_name, lambda: [_batch_operation(op) for op in update_operations])
        return [_COMPLETED] * len(update_operations)

    async def optimize(self, collection_name: str | None = None) -> bool:
        """Run the shard optimizers (HNSW, payload indexes, merging, vacuum) until none has work.

        Holds the GIL for its whole duration in qdrant-edge 0.9 (seconds for ~10k anime): call it
        where nothing is being served, e.g. at the end of a bulk ingest. True if anything changed.
        """
        self._check_open()
        names = [collection_name] if collection_name is not None else list(self._collections)
        changed = False
        for name in names:
            collection = self._collection(name)
            async with collection.write_lock:
                changed |= await self._call(collection, self._optimize_now, collection)
        return changed

    # -- reads -------------------------------------------------------------------------------------
    # `consistency` and `timeout` are accepted for the same reason as `ordering` above.

    async def retrieve(
        self,
        collection_name: str,
        ids: Sequence[Any],
        with_payload: Any = True,
        with_vectors: Any = False,
        consistency: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
    ) -> list[models.Record]:
        refuse(shard_key_selector=shard_key_selector)
        collection = self._collection(collection_name)
        return await self._call(collection, _retrieve, collection.shard, ids, with_payload, with_vectors)

    async def scroll(
        self,
        collection_name: str,
        scroll_filter: models.Filter | None = None,
        limit: int = 10,
        order_by: Any = None,
        offset: Any = None,
        with_payload: Any = True,
        with_vectors: Any = False,
        consistency: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
    ) -> tuple[list[models.Record], Any]:
        """One page in id order and the id the next page starts from (None after the last)."""
        refuse(order_by=order_by, shard_key_selector=shard_key_selector)
        collection = self._collection(collection_name)

        def page() -> tuple[list[models.Record], Any]:
            request = edge.ScrollRequest(
                offset=None if offset is None else convert.point_id(offset),
                limit=limit,
                filter=convert.edge_filter(scroll_filter),
                with_payload=convert.with_payload(with_payload),
                with_vector=convert.with_vectors(with_vectors),
            )
            records, next_offset = collection.shard.scroll(request)
            following = None if next_offset is None else convert.from_point_id(next_offset)
            return [convert.record(r) for r in records], following

        return await self._call(collection, page)

    async def count(
        self,
        collection_name: str,
        count_filter: models.Filter | None = None,
        exact: bool = True,
        shard_key_selector: Any = None,
        timeout: int | None = None,
    ) -> models.CountResult:
        refuse(shard_key_selector=shard_key_selector)
        collection = self._collection(collection_name)

        def count() -> models.CountResult:
            request = edge.CountRequest(exact=exact, filter=convert.edge_filter(count_filter))
            return models.CountResult(count=collection.shard.count(request))

        return await self._call(collection, count)

    async def facet(
        self,
        collection_name: str,
        key: str,
        facet_filter: models.Filter | None = None,
        limit: int = 10,
        exact: bool = False,
        consistency: Any = None,
        timeout: int | None = None,
        shard_key_selector: Any = None,
    ) -> models.FacetResponse:
        """Counts per value, most frequent first (ties by value). With a payload index on `key` the
        engine counts; without one the payloads are read, as qdrant-client's local mode does (a
        server refuses a facet on a key without an index)."""
        refuse(shard_key_selector=shard_key_selector)
        collection = self._collection(collection_name)
        return await self._call(
            collection,
            lambda: _facet(collection.shard, key, convert.edge_filter(facet_filter), limit, exact),
        )

    async def query_points(
        self,
        collection_name: str,
        query: Any = None,
        using: str | None = None,
        prefetch: models.Prefetch | list[models.Prefetch] | None = None,
        query_filter: models.Filter | None = None,
        search_params: models.SearchParams | None = None,
        limit: int = 10,
        offset: int | None = None,
        with_payload: Any = True,
        with_vectors: Any = False,
        score_threshold: float | None = None,
        lookup_from: models.LookupLocation | None = None,
        consistency: Any = None,
        shard_key_selector: Any = None,
        timeout: int | None = None,
    ) -> QueryResponse:
        refuse(lookup_from=lookup_from, shard_key_selector=shard_key_selector)
        collection = self._collection(collection_name)

        def run() -> QueryResponse:
            request = convert.edge_request(
                query=query,
                using=using,
                prefetch=prefetch,
                query_filter=query_filter,
                params=search_params,
                limit=limit,
                offset=offset,
                with_payload_=with_payload,
                with_vectors_=with_vectors,
                score_threshold=score_threshold,
            )
            return _scored(collection.shard.query(request))

        return await self._call(collection, run)

    async def query_batch_points(
        self,
        collection_name: str,
        requests: Sequence[models.QueryRequest],
        consistency: Any = None,
        timeout: int | None = None,
    ) -> list[QueryResponse]:
        """Planned as one batch by the engine, answers in request order. (Cutting a batch into parts
        for several pool threads measured no faster on 2 cores: the engine already uses them.)"""
        collection = self._collection(collection_name)

        def run() -> list[QueryResponse]:
            batch = edge.QueryBatchRequest([convert.edge_batch_request(r) for r in requests])
            answers = collection.shard.query_batch(batch)
            return [_scored(points) for points in answers]

        return await self._call(collection, run)


def _create_shard(path: Path, config: Any) -> Any:
    """A fresh shard (a directory left by a creation that crashed before its record is replaced)."""
    if path.exists():
        shutil.rmtree(path)
    shard = edge.EdgeShard.create(str(path), config)
    shard.flush()
    fsync_dir(path.parent)
    return shard


def _flush_and_close(shard: Any) -> None:
    shard.flush()
    shard.close()


def _remove_shard(path: Path, root: Path) -> None:
    """Delete a shard's folder, and its collection's folder under restored/ once that is empty."""
    shutil.rmtree(path, ignore_errors=True)
    if path.parent.parent == root / RESTORED_DIR:
        with contextlib.suppress(OSError):  # another shard of the collection is there (a restore)
            path.parent.rmdir()


def _flush_and_copy(shard: Any, source: Path, destination: Path) -> None:
    shard.flush()
    copy_folder(source, destination)


def _snapshot_file(location: str) -> Path:
    """The file a `recover_snapshot` location names: a file:// URI or a path on this machine."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "":
        return Path(location)
    raise Unsupported(f"snapshot location {location!r} (only a file:// URI or a path on this machine)")


def _shape(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a collection's points must fit: vector names, sizes, distances, multivector and sparse
    modifiers (storage and index settings may differ)."""

    def dense(params: Mapping[str, Any]) -> tuple[Any, ...]:
        return params.get("size"), params.get("distance"), params.get("multivector_config")

    vectors = record.get("vectors") or {}
    return {
        "vectors": dense(vectors)
        if "size" in vectors
        else {name: dense(params) for name, params in vectors.items()},
        "sparse_vectors": {
            name: (params or {}).get("modifier")
            for name, params in (record.get("sparse_vectors") or {}).items()
        },
    }


def _load_restored(snapshot: Path, destination: Path, checksum: str | None) -> tuple[Any, dict[str, Any]]:
    """Unpack a snapshot beside `destination`, move its shard there and load it (a shard writes to
    its folder by path, so it is loaded where it will stay). Returns (shard, record)."""
    staging = destination.with_name(f".{destination.name}.unpacking")
    staging.mkdir(parents=True)
    try:
        held, record = snapshots.unpack(snapshot, staging, checksum)
        if record.get("format") != RECORD_FORMAT:
            raise snapshots.UnusableSnapshot(
                f"{snapshot.name}: unknown collection record format {record.get('format')!r}"
            )
        os.replace(staging / "shards" / held, destination)
        fsync_dir(destination.parent)
        try:
            return _engine_call(edge.EdgeShard.load, str(destination)), record
        except (EdgeRequestError, EdgeStorageError) as exc:
            raise snapshots.UnusableSnapshot(f"{snapshot.name}: its shard does not load: {exc}") from exc
    except snapshots.UnusableSnapshot as exc:
        raise EdgeRequestError(str(exc)) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refusing(name: str) -> Callable[..., Any]:
    async def refused(self: EdgeQdrantClient, *args: Any, **kwargs: Any) -> Any:
        raise Unsupported(f"AsyncQdrantClient.{name}")

    refused.__name__ = name
    refused.__doc__ = f"Not available in the embedded store: raises `Unsupported` ({name})."
    return refused


# Every other coroutine of AsyncQdrantClient (snapshots, recommend, shard keys, ...) raises a clear
# `Unsupported` naming it, instead of an AttributeError that reads like a bug in the caller.
for _name, _member in inspect.getmembers(AsyncQdrantClient, inspect.iscoroutinefunction):
    if not _name.startswith("_") and not hasattr(EdgeQdrantClient, _name):
        setattr(EdgeQdrantClient, _name, _refusing(_name))
