"""The anime store over Qdrant: one collection behind an alias, named vectors, payload = document.

qdrant-client gives the same API for its local mode (a folder, no server) and for a Qdrant server
or cluster, so this class is the only place that knows which one is in use.

While a reindex builds a new collection, writes go to the live collection and to that "shadow"
too, so the swap loses nothing that was acknowledged in between.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import sqlite3
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from service.domain.calibration import Calibration
from service.domain.documents import point_id
from service.domain.sparse import SparseVector
from service.domain.vectors import CALIBRATION_KEY
from service.platform.errors import DependencyUnavailable, ModelMismatch, ServiceError
from service.search.fusion import DEFAULT_RRF_K, dbsf_normalize
from service.store.edge_client import EdgeQdrantClient, EdgeStorageError
from service.store.filters import PAYLOAD_INDEXES
from service.store.params import IndexParams
from service.store.types import (
    Hit,
    StoredPoint,
    StoredRecord,
    VectorQuery,
    VectorSchema,
    from_qdrant_vector,
    is_multi,
    to_qdrant_vector,
)

RRF_K = int(DEFAULT_RRF_K)

_DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}

# The index settings a collection was built with, kept in its metadata: a server reports HNSW and
# quantization itself, but local mode forgets them, neither keeps the query-time ones, and after a
# restart the environment's settings may no longer be those the live collection was built with.
PARAMS_METADATA_KEY = "avs_index_params"
# 3x, not more: the formula reads each candidate's payload, so the list's cost grows with it (10x took
# 18 ms of a search's ~30 on the catalogue, 3x 9 ms), and 3x kept the same top-10 on 64 queries.
PENALTY_OVERFETCH = 3
# How stale the collection size behind the exact-or-graph choice may be: a count per few seconds.
SIZE_RECHECK_S = 5.0

# Every score the store hands out is a similarity, higher is better, whatever QDRANT_DISTANCE says,
# because fusion (min-max, DBSF), score_threshold (>=) and explanations all assume so:
#   cosine  cosine similarity as Qdrant gives it, in [-1, 1]
#   dot     dot product as Qdrant gives it (= cosine on the L2-normalised vectors our models make;
#           client-given vectors need not be normalised, so it is unbounded then)
#   euclid  1 / (1 + d) where d is the Euclidean distance Qdrant gives (lower is better there):
#           (0, 1], 1.0 for an identical vector; d = 1/s - 1. On unit vectors d = sqrt(2 - 2 cos),
#           so the ranking is the cosine one.
# Sparse vectors always score by dot product, and fused (RRF/DBSF) scores are already higher-better:
# neither is mapped.
#
# score_threshold is the same similarity: for euclid it becomes the largest distance Qdrant should
# keep. Local mode drops a score equal to the threshold (server keeps it) and the euclid mapping
# rounds, so Qdrant is asked with a slightly looser bound and the exact `score >= threshold` is
# applied here, to the scores as reported.
_THRESHOLD_SLACK = 1e-6


def _euclid_similarity(distance: float) -> float:
    return 1.0 / (1.0 + distance)


def _qdrant_threshold(threshold: float | None, euclid: bool) -> float | None:
    """The bound to send to Qdrant for a similarity threshold: a little looser than exact."""
    if threshold is None:
        return None
    if not euclid:
        return threshold - _THRESHOLD_SLACK * max(1.0, abs(threshold))
    if threshold <= 0.0:
        return None  # every euclid similarity is > 0
    distance = 1.0 / threshold - 1.0  # negative (nothing passes) for a threshold above 1.0
    return distance + _THRESHOLD_SLACK * max(1.0, abs(distance))


def _at_least(hits: list[Hit], threshold: float | None) -> list[Hit]:
    return hits if threshold is None else [h for h in hits if h.score >= threshold]


def _both(first: models.Filter | None, second: models.Filter | None) -> models.Filter | None:
    if first is None or second is None:
        return first or second
    return models.Filter(must=[first, second])


def _penalty_formula(query: VectorQuery) -> models.FormulaQuery:
    assert query.penalty is not None
    return models.FormulaQuery(
        formula=models.SumExpression(
            sum=["$score", models.MultExpression(mult=[-query.penalty.weight, query.penalty.field])]
        ),
        defaults={query.penalty.field: 0.0},
    )


class NotSupported(ServiceError):
    status_code = 501
    code = "not_supported"


def _hit(point: models.ScoredPoint, euclid: bool = False) -> Hit:
    payload = point.payload or {}
    score = _euclid_similarity(float(point.score)) if euclid else float(point.score)
    return Hit(anime_id=str(payload.get("anime_id", point.id)), score=score, payload=payload)


def _structs(
    points: Sequence[StoredPoint], leave_out: frozenset[str] = frozenset()
) -> list[models.PointStruct]:
    """Points as Qdrant takes them, without the vectors in `leave_out` (ones the collection lacks)."""
    return [
        models.PointStruct(
            id=point_id(p.anime_id),
            vector={name: to_qdrant_vector(v) for name, v in p.vectors.items() if name not in leave_out},
            payload=dict(p.payload),
        )
        for p in points
    ]


def _missing_optional(info: models.CollectionInfo, schema: VectorSchema) -> frozenset[str]:
    """The schema's optional vectors the collection does not have (a version exported after it)."""
    vectors = info.config.params.vectors
    existing = set(vectors if isinstance(vectors, dict) else {"": vectors})
    existing |= set(info.config.params.sparse_vectors or {})
    return frozenset(name for name in schema.optional if name not in existing)


def _problems(info: models.CollectionInfo, schema: VectorSchema) -> tuple[list[str], list[str]]:
    """What keeps a collection from serving the deployed models: (vectors, metric) problems. Optional
    vectors it lacks are not problems (`_missing_optional`)."""
    vectors = info.config.params.vectors
    existing = vectors if isinstance(vectors, dict) else {"": vectors}
    sparse_existing = info.config.params.sparse_vectors or {}
    shape: list[str] = []
    distance: list[str] = []
    for name, dim in schema.dense.items():
        params = existing.get(name)
        if params is None:
            if name not in schema.optional:
                shape.append(f"vector '{name}' is missing")
            continue
        if params.size != dim:
            shape.append(f"vector '{name}' has {params.size} dims, the model gives {dim}")
        if (params.multivector_config is not None) != (name in schema.multi):
            kind = "several vectors per anime (MaxSim)" if name in schema.multi else "one vector per anime"
            shape.append(f"vector '{name}' should hold {kind}")
            continue
        if params.distance != _distance_of(schema, name):
            # Scores would be read in the wrong metric (e.g. a distance taken for a similarity).
            distance.append(
                f"vector '{name}' uses {params.distance.value} distance, QDRANT_DISTANCE is {schema.distance}"
            )
    for name in schema.sparse:
        if name not in sparse_existing:
            if name not in schema.optional:
                shape.append(f"sparse vector '{name}' is missing")
        elif (sparse_existing[name].modifier == models.Modifier.IDF) != (name in schema.idf):
            shape.append(
                f"sparse vector '{name}' should {'' if name in schema.idf else 'not '}use the IDF modifier"
            )
    return shape, distance


def _distance_of(schema: VectorSchema, name: str) -> models.Distance:
    """Multivectors are always cosine: their entries are centred and re-normalised unit vectors, and
    MaxSim over a distance (lower is better) would pick the worst match. QDRANT_DISTANCE sets the rest."""
    return models.Distance.COSINE if name in schema.multi else _DISTANCES[schema.distance]


def _recorded_params(info: models.CollectionInfo) -> IndexParams | None:
    """The settings recorded at creation; None for a collection made elsewhere or before they were."""
    recorded = (getattr(info.config, "metadata", None) or {}).get(PARAMS_METADATA_KEY)
    if recorded is None:
        return None
    try:
        return msgspec.convert(recorded, IndexParams)
    except msgspec.ValidationError:
        return None  # written by another version of the service: fall back like an unrecorded one


class AnimeStore:
    def __init__(
        self,
        client: AsyncQdrantClient | EdgeQdrantClient,
        alias: str,
        schema: VectorSchema,
        engine: str,
        location: str,
        params: IndexParams | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._client = client
        # A deadline on each whole call (None: the embedded store, whose calls cannot be interrupted).
        self.timeout_s = timeout_s
        self.alias = alias
        self.schema = schema
        self.engine = engine
        self.location = location
        self.params = params or IndexParams()
        self._ready = False
        self._size: tuple[float, int] | None = None  # (when counted, points): see _query_params
        self._calibrations: dict[str, Calibration | None] = {}
        # The schema's optional vectors the live collection lacks: writes leave them out. `checked`:
        # `missing` describes the live collection (kept while the store is down; not after a swap).
        self.missing: frozenset[str] = frozenset()
        self.checked = False
        self._init_lock = asyncio.Lock()
        # Reindex support: the collection being built, the ids written to it directly, and a lock
        # that orders those writes against the copier's.
        self.shadow: str | None = None
        self.shadow_touched: set[str] = set()
        self.shadow_lock = asyncio.Lock()
        # Called with (operation, seconds, ok) after every Qdrant call: the metrics hook.
        self.observer: Callable[[str, float, bool], None] | None = None
        # Awaited after every acknowledged write (upsert, delete, alias swap): cache invalidation.
        self.on_write: Callable[[], Awaitable[None]] | None = None
        # Circuit breaker shared with the engine's (service/platform/resilience.py); None in bare use.
        self.breakers: Any = None

    @classmethod
    def open(
        cls,
        schema: VectorSchema,
        *,
        alias: str,
        url: str | None = None,
        api_key: str | None = None,
        path: Path | None = None,
        timeout_s: float = 10.0,
        params: IndexParams | None = None,
        embedded_engine: str = "edge",
    ) -> AnimeStore:
        if url:
            client = AsyncQdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout_s)))
            return cls(client, alias, schema, "qdrant-server", url, params, timeout_s=timeout_s)
        folder = Path(path or "var/qdrant")
        folder.mkdir(parents=True, exist_ok=True)
        if embedded_engine == "local":  # qdrant-client's exact scan: the test double for the server API
            local = AsyncQdrantClient(path=str(folder))
            return cls(local, alias, schema, "qdrant-local", str(folder), params)
        if embedded_engine != "edge":
            raise ValueError(f"unknown embedded engine {embedded_engine!r} (edge or local)")
        return cls(EdgeQdrantClient(folder), alias, schema, "qdrant-edge", str(folder), params)

    @property
    def is_local(self) -> bool:
        return self.engine == "qdrant-local"

    @property
    def is_embedded(self) -> bool:
        """In this process on a folder (qdrant-edge or local mode): no snapshots, no concurrent owner."""
        return self.engine != "qdrant-server"

    async def _query_params(self) -> models.SearchParams | None:
        """The search params of the next queries: exact for a catalogue-sized collection
        (IndexParams.exact_search_up_to), whose size is re-estimated at most every SIZE_RECHECK_S."""
        if self.is_local:  # local mode scans exactly anyway, and warns about params it ignores
            return None
        now = time.monotonic()
        if self._size is None or now - self._size[0] > SIZE_RECHECK_S:
            counted = await self._guard(self._client.count(self.alias, exact=False), "count")
            self._size = (now, int(counted.count))
        return self.params.search_params(self._size[1])

    async def _guard(self, awaitable: Any, action: str) -> Any:
        if self.breakers is None:
            return await self._call(awaitable, action)
        try:
            return await self.breakers.call("qdrant", "qdrant", lambda: self._call(awaitable, action))
        finally:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started when the circuit was open; a no-op otherwise

    async def refuse_if_down(self) -> None:
        """503 at once while the store's circuit is open, so a request does not encode its query first."""
        if self.breakers is not None:
            await self.breakers.refuse_if_open("qdrant")

    async def _call(self, awaitable: Any, action: str) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            # The HTTP client's timeout bounds each socket read, not the call: a server trickling bytes
            # would hold a request for ever. This deadline bounds the whole call.
            result = await (
                asyncio.wait_for(awaitable, self.timeout_s) if self.timeout_s is not None else awaitable
            )
            ok = True
            return result
        except asyncio.TimeoutError as exc:  # before OSError, of which it is a subclass
            self._ready = False
            within = f"{self.timeout_s:g}s" if self.timeout_s is not None else "the client's timeout"
            raise DependencyUnavailable("qdrant", f"{action}: no answer within {within}") from exc
        except (ResponseHandlingException, ConnectionError, OSError, sqlite3.Error, EdgeStorageError) as exc:
            # sqlite3 (local mode) / EdgeStorageError (qdrant-edge): the embedded store's folder is
            # locked, read-only, corrupt or the disk is full.
            self._ready = False
            raise DependencyUnavailable("qdrant", f"{action} failed: {exc or type(exc).__name__}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code in (502, 503, 504):
                self._ready = False
            raise DependencyUnavailable(
                "qdrant", f"{action} failed: HTTP {exc.status_code} {exc.reason_phrase}"
            ) from exc
        finally:
            if self.observer is not None:
                self.observer(action, time.perf_counter() - started, ok)

    # -- collection lifecycle -------------------------------------------------------------------

    async def ensure_ready(self) -> None:
        """Create the aliased collection on first use, or check the existing one fits the models."""
        if self._ready:
            return
        async with self._init_lock:
            if self._ready:
                return
            collection = await self.live_collection()
            missing: frozenset[str] = frozenset()
            if collection is None:
                name = self.new_collection_name()
                await self.create_collection(name, self.schema, self.params)
                await self.point_alias(name)
            else:
                info = await self._read(collection)
                missing = _missing_optional(info, self.schema)
                shape, distance = _problems(info, self.schema)
                if shape or distance:
                    # Another metric only needs a copy into a collection built with the configured one;
                    # other vectors need the text re-embedded.
                    body = '{"reembed": true}' if shape else "{}"
                    problems = shape + distance
                    raise ModelMismatch(
                        f"collection '{collection}' (alias '{self.alias}') does not fit the deployed models: "
                        + "; ".join(problems)
                        + f". Rebuild it with POST /api/v1/admin/reindex {body}.",
                        collection=collection,
                        problems=problems,
                    )
                # Build-time settings are the live collection's (e.g. rescoring only if it is quantized),
                # not the environment's, which only seed new collections; query-time ones stay ours.
                self.params = self._params_of(info)
            self.missing = missing
            self.checked = True
            self._ready = True

    def invalidate(self) -> None:
        """Forget the schema check and the calibrations (after a swap); the next call re-reads them."""
        self._ready = False
        self.checked = False
        self._calibrations = {}

    async def metadata(self, key: str, collection: str | None = None) -> Any:
        """One key of a collection's metadata (the live one by default); None when absent."""
        name = collection or await self.live_collection()
        if name is None:
            return None
        return (getattr((await self._read(name)).config, "metadata", None) or {}).get(key)

    async def save_metadata(self, key: str, value: Any, collection: str | None = None) -> None:
        """Set one key of a collection's metadata (the live one by default), keeping the others."""
        name = collection or await self.live_collection() or self.alias
        metadata = dict(getattr((await self._read(name)).config, "metadata", None) or {})
        metadata[key] = value
        await self._guard(self._client.update_collection(name, metadata=metadata), f"saving {key}")

    async def calibration(
        self, collection: str | None = None, *, key: str = CALIBRATION_KEY
    ) -> Calibration | None:
        """A text model version's calibration (`key`) in a collection (the live one by default; cached)."""
        if collection is None and self._calibrations.get(key) is not None:
            return self._calibrations[key]
        recorded = await self.metadata(key, collection)
        try:
            found = msgspec.convert(recorded, Calibration) if recorded is not None else None
        except msgspec.ValidationError:
            found = None  # written by another version of the service: as if there were none
        if collection is None:
            self._calibrations[key] = found
        return found

    async def save_calibration(
        self, calibration: Calibration, collection: str | None = None, *, key: str = CALIBRATION_KEY
    ) -> None:
        """Record `calibration` under `key` in a collection's metadata (the live one by default)."""
        await self.save_metadata(key, msgspec.to_builtins(calibration), collection)
        if collection is None or collection == await self.live_collection():
            self._calibrations[key] = calibration

    async def live_collection(self) -> str | None:
        """The collection behind the alias, without checking its schema (reindex reads any)."""
        aliases = await self._guard(self._client.get_aliases(), "listing aliases")
        for alias in aliases.aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name
        # A plain collection named like the alias (e.g. created by hand) is used as is.
        exists = await self._guard(self._client.collection_exists(self.alias), "checking collection")
        return self.alias if exists else None

    def new_collection_name(self) -> str:
        return f"{self.alias}_{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d%H%M%S%f')}"

    async def create_collection(self, name: str, schema: VectorSchema, params: IndexParams) -> None:
        max_sim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
        await self._guard(
            self._client.create_collection(
                collection_name=name,
                vectors_config={
                    vector: models.VectorParams(
                        size=dim,
                        distance=_distance_of(schema, vector),
                        multivector_config=max_sim if vector in schema.multi else None,
                    )
                    for vector, dim in schema.dense.items()
                },
                sparse_vectors_config={
                    vector: models.SparseVectorParams(
                        modifier=models.Modifier.IDF if vector in schema.idf else None
                    )
                    for vector in schema.sparse
                }
                or None,
                hnsw_config=params.hnsw(),
                quantization_config=params.quantization_config(),
                on_disk_payload=params.on_disk_payload,
                metadata={PARAMS_METADATA_KEY: msgspec.to_builtins(params)},
                **(
                    {}
                    if self.is_local
                    else {"shard_number": params.shards, "replication_factor": params.replicas}
                ),
            ),
            "creating collection",
        )
        if not self.is_local:
            # Local mode has no payload indexes (it scans); a server needs them for fast filters.
            for key, field_schema in PAYLOAD_INDEXES.items():
                await self._guard(
                    self._client.create_payload_index(name, key, field_schema=field_schema, wait=True),
                    "create payload index",
                )

    async def point_alias(self, collection: str) -> str | None:
        """Make the alias name `collection`, atomically (one aliases request); returns the old target."""
        previous = await self.live_collection()
        operations: list[Any] = []
        if previous is not None and previous != self.alias:
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias))
            )
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=self.alias)
            )
        )
        await self._guard(
            self._client.update_collection_aliases(change_aliases_operations=operations), "alias swap"
        )
        self.invalidate()
        await self._written()
        return previous

    async def drop_collection(self, name: str) -> None:
        await self._guard(self._client.delete_collection(name), "deleting collection")

    async def _read(self, collection: str) -> models.CollectionInfo:
        return await self._guard(self._client.get_collection(collection), "reading collection")

    async def missing_optional(self, collection: str) -> frozenset[str]:
        """The schema's optional vectors `collection` lacks (text versions exported after it was built)."""
        return _missing_optional(await self._read(collection), self.schema)

    async def schema_problems(self, collection: str, schema: VectorSchema) -> list[str]:
        shape, distance = _problems(await self._read(collection), schema)
        return shape + distance

    def _params_of(self, info: models.CollectionInfo) -> IndexParams:
        """The index settings a collection was built with (ours when it has no record of them), with
        the query-time settings in use now."""
        recorded = _recorded_params(info)
        return recorded.with_query_time_of(self.params) if recorded is not None else self.params

    async def collection_params(self, collection: str) -> IndexParams:
        return self._params_of(await self._read(collection))

    # -- writes ---------------------------------------------------------------------------------

    async def upsert(self, points: Sequence[StoredPoint]) -> None:
        """Acknowledged only once Qdrant confirms the write (wait=True), live and shadow alike."""
        await self.ensure_ready()
        structs = _structs(points, self.missing)
        if not structs:
            return
        # Read the shadow before writing: a write that lands in the old collection must reach the new
        # one even if the alias swaps while it is in flight.
        shadow = self.shadow
        await self._guard(self._client.upsert(self.alias, points=structs, wait=True), "upsert")
        if shadow is not None:
            # The new collection has every served version's vectors, the live one perhaps not yet.
            full = _structs(points)
            async with self.shadow_lock:
                self.shadow_touched.update(p.anime_id for p in points)
                await self._shadow_write(shadow, self._client.upsert(shadow, points=full, wait=True))
        await self._written()

    async def delete(self, anime_id: str) -> bool:
        """True if the anime existed (and is now gone everywhere)."""
        await self.ensure_ready()
        existing = await self.get_many([anime_id], with_vectors=False)
        selector = models.PointIdsList(points=[point_id(anime_id)])
        shadow = self.shadow
        await self._guard(self._client.delete(self.alias, points_selector=selector, wait=True), "delete")
        if shadow is not None:
            async with self.shadow_lock:
                self.shadow_touched.add(anime_id)
                await self._shadow_write(
                    shadow, self._client.delete(shadow, points_selector=selector, wait=True)
                )
        await self._written()
        return anime_id in existing

    async def _written(self) -> None:
        if self.on_write is not None:
            await self.on_write()

    async def _shadow_write(self, shadow: str, awaitable: Any) -> None:
        try:
            await self._guard(awaitable, "write (reindex)")
        except Exception:  # local mode raises ValueError for a dropped collection, a server 404
            # The reindex ended meanwhile: if it swapped, the write is already in the live collection;
            # if it failed, its half-built collection is gone. Either way nothing was lost.
            if self.shadow == shadow:
                raise

    async def optimize(self) -> bool:
        """Build the embedded engine's indexes (HNSW, payload indexes) now, after a bulk write: searches
        are exact until then. A no-op for engines that optimise on their own (a server, local mode)."""
        optimize = getattr(self._client, "optimize", None)
        if optimize is None:
            return False
        return bool(await self._guard(optimize(), "optimize"))

    async def set_payloads(
        self, values: Mapping[str, Mapping[str, Any]], collection: str | None = None
    ) -> None:
        """Set payload keys of many anime in one acknowledged request (anime id -> keys to set)."""
        if not values:
            return
        operations = [
            models.SetPayloadOperation(
                set_payload=models.SetPayload(payload=dict(keys), points=[point_id(anime_id)])
            )
            for anime_id, keys in values.items()
        ]
        await self._guard(
            self._client.batch_update_points(
                collection or self.alias, update_operations=operations, wait=True
            ),
            "set payload",
        )
        await self._written()

    async def write_to(self, collection: str, points: Sequence[StoredPoint]) -> None:
        """Raw write to a named collection (the reindex copier)."""
        if points:
            await self._guard(self._client.upsert(collection, points=_structs(points), wait=True), "copy")

    # -- reads ----------------------------------------------------------------------------------

    async def search(
        self,
        vector_name: str,
        query: Sequence[float] | SparseVector,
        *,
        limit: int,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        (hits,) = await self.search_many(
            [VectorQuery(vector_name, query, limit, query_filter, score_threshold)]
        )
        return hits

    def _is_distance(self, vector_name: str) -> bool:
        """Whether Qdrant scores this vector by a distance (lower is better) that must be mapped."""
        return (
            self.schema.distance == "euclid"
            and vector_name not in self.schema.sparse
            and vector_name not in self.schema.multi
        )

    def _query_vector(self, query: VectorQuery) -> Any:
        """The vector as Qdrant wants it: a multivector field takes a list of query vectors."""
        vector = query.vector
        if query.using in self.schema.multi and not isinstance(vector, SparseVector) and not is_multi(vector):
            return [to_qdrant_vector(vector)]
        return to_qdrant_vector(vector)

    def _prefetch(
        self, query: VectorQuery, threshold: float | None, params: models.SearchParams | None
    ) -> models.Prefetch:
        """One candidate list; with a penalty, its scores become `score - weight x payload[field]`.

        The threshold applies to the list's own similarity, before the penalty and any fusion. A
        penalised list is the best `limit` after the penalty among PENALTY_OVERFETCH times as many by
        similarity: taking only `limit` would keep the penalised hubs in the list (at the bottom), and
        their low scores would skew the spread DBSF normalises by.
        """
        penalised = query.penalty is not None
        plain = models.Prefetch(
            query=self._query_vector(query),
            using=query.using,
            limit=query.limit * PENALTY_OVERFETCH if penalised else query.limit,
            filter=query.query_filter,
            score_threshold=_qdrant_threshold(threshold, self._is_distance(query.using)),
            params=None if isinstance(query.vector, SparseVector) else params,
        )
        if query.penalty is None:
            return plain
        return models.Prefetch(prefetch=[plain], query=_penalty_formula(query), limit=query.limit)

    async def search_many(self, queries: Sequence[VectorQuery], *, payload: bool = True) -> list[list[Hit]]:
        """Several nearest-neighbour queries in one round trip (Qdrant's batch query API).

        `payload=False` brings back only each hit's `anime_id`: candidate lists that are fused before
        anything is shown need no documents, and copying them is most of a query's cost.
        """
        await self.ensure_ready()
        if not queries:
            return []
        params = await self._query_params()
        requests = [self._request(q, payload, params) for q in queries]
        responses = await self._guard(
            self._client.query_batch_points(self.alias, requests=requests), "batch search"
        )
        return [
            _at_least([_hit(p, self._is_distance(q.using)) for p in response.points], q.score_threshold)
            for q, response in zip(queries, responses, strict=True)
        ]

    def _request(
        self, q: VectorQuery, payload: bool, params: models.SearchParams | None
    ) -> models.QueryRequest:
        with_payload: Any = True if payload else ["anime_id"]
        if q.penalty is not None:
            # The plain list (with its threshold) as the prefetch, the formula on top: penalised once.
            plain = dataclasses.replace(q, penalty=None, limit=q.limit * PENALTY_OVERFETCH)
            return models.QueryRequest(
                prefetch=[self._prefetch(plain, q.score_threshold, params)],
                query=_penalty_formula(q),
                limit=q.limit,
                with_payload=with_payload,
            )
        return models.QueryRequest(
            query=self._query_vector(q),
            using=q.using,
            limit=q.limit,
            filter=q.query_filter,
            score_threshold=_qdrant_threshold(q.score_threshold, self._is_distance(q.using)),
            params=None if isinstance(q.vector, SparseVector) else params,
            with_payload=with_payload,
        )

    async def search_fused(
        self,
        queries: Sequence[VectorQuery],
        *,
        fusion: str,
        limit: int,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """Fuse several named-vector queries inside Qdrant (Query API: prefetch + RRF or DBSF).

        `score_threshold` is a similarity each list's matches must reach, applied before fusion (as
        for similarity): a fused RRF score (~0.03) is no scale a client can set a threshold on.
        """
        await self.ensure_ready()
        if len(queries) == 1:
            q = queries[0]
            (hits,) = await self.search_many(
                [
                    VectorQuery(
                        q.using,
                        q.vector,
                        limit,
                        _both(q.query_filter, query_filter),
                        score_threshold,
                        q.penalty,
                    )
                ]
            )
            return hits
        if fusion == "dbsf" and any(self._is_distance(q.using) for q in queries):
            # DBSF normalises raw scores as if higher were better, so on distances it ranks the farthest
            # first (qdrant-client local mode and the server alike: qdrant/qdrant#10611).
            return await self._dbsf_here(queries, limit, query_filter, score_threshold)
        params = await self._query_params()
        prefetch = [self._prefetch(q, score_threshold, params) for q in queries]
        # k=60 like the façade's fusion (service/search/fusion.py), not Qdrant's default 2: agreement between
        # lists should beat a single list's top hit, and both paths must rank alike.
        query: Any = (
            models.RrfQuery(rrf=models.Rrf(k=RRF_K))
            if fusion == "rrf"
            else models.FusionQuery(fusion=models.Fusion.DBSF)
        )
        response = await self._guard(
            self._client.query_points(
                self.alias,
                prefetch=prefetch,
                query=query,
                limit=limit,
                query_filter=query_filter,
                with_payload=True,
            ),
            "fused search",
        )
        return [_hit(p) for p in response.points]

    async def _dbsf_here(
        self,
        queries: Sequence[VectorQuery],
        limit: int,
        query_filter: models.Filter | None,
        score_threshold: float | None,
    ) -> list[Hit]:
        """Qdrant's DBSF (sum of per-list mean ± 3σ normalised scores), over our similarity scores."""
        lists = await self.search_many(
            [
                VectorQuery(
                    q.using,
                    q.vector,
                    q.limit,
                    _both(q.query_filter, query_filter),
                    score_threshold,
                    q.penalty,
                )
                for q in queries
            ]
        )
        totals: dict[str, float] = {}
        first: dict[str, Hit] = {}
        for hits in lists:
            for hit, value in zip(hits, dbsf_normalize([h.score for h in hits]), strict=True):
                totals[hit.anime_id] = totals.get(hit.anime_id, 0.0) + value
                first.setdefault(hit.anime_id, hit)
        ranked = sorted(totals, key=lambda anime_id: -totals[anime_id])
        return [Hit(anime_id=a, score=totals[a], payload=first[a].payload) for a in ranked[:limit]]

    async def get_many(self, anime_ids: Sequence[str], with_vectors: bool = True) -> dict[str, StoredRecord]:
        """Records of the ids that exist (one round trip); absent ids are simply missing."""
        await self.ensure_ready()
        if not anime_ids:
            return {}
        wanted = {point_id(a): a for a in anime_ids}
        records = await self._guard(
            self._client.retrieve(self.alias, ids=list(wanted), with_payload=True, with_vectors=with_vectors),
            "retrieve",
        )
        found: dict[str, StoredRecord] = {}
        for record in records:
            anime_id = wanted.get(str(record.id), str((record.payload or {}).get("anime_id")))
            vectors = record.vector if isinstance(record.vector, dict) else {}
            found[anime_id] = StoredRecord(
                anime_id=anime_id,
                payload=record.payload or {},
                vectors={name: from_qdrant_vector(v) for name, v in vectors.items()},
            )
        return found

    async def get(self, anime_id: str) -> Hit | None:
        record = (await self.get_many([anime_id])).get(anime_id)
        if record is None:
            return None
        return Hit(anime_id=anime_id, score=1.0, payload=record.payload, vectors=sorted(record.vectors))

    async def existing_ids(self, anime_ids: Sequence[str]) -> set[str]:
        return set(await self.get_many(anime_ids, with_vectors=False))

    async def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: Any = None,
        with_vectors: bool | Sequence[str] = True,
        scroll_filter: models.Filter | None = None,
    ) -> tuple[list[StoredRecord], Any]:
        """One page of a collection in id order; the returned offset is None after the last page."""
        records, next_offset = await self._guard(
            self._client.scroll(
                collection,
                limit=limit,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors if isinstance(with_vectors, bool) else list(with_vectors),
                scroll_filter=scroll_filter,
            ),
            "scroll",
        )
        out = []
        for record in records:
            payload = record.payload or {}
            vectors = record.vector if isinstance(record.vector, dict) else {}
            out.append(
                StoredRecord(
                    anime_id=str(payload.get("anime_id", record.id)),
                    payload=payload,
                    vectors={name: from_qdrant_vector(v) for name, v in vectors.items()},
                )
            )
        return out, next_offset

    async def count(self, collection: str | None = None, count_filter: models.Filter | None = None) -> int:
        if collection is None:
            await self.ensure_ready()
        result = await self._guard(
            self._client.count(collection or self.alias, count_filter=count_filter, exact=True), "count"
        )
        return int(result.count)

    async def ping(self) -> None:
        await self._guard(self._client.get_aliases(), "ping")

    # -- admin views ----------------------------------------------------------------------------

    async def collection_info(self, collection: str | None = None) -> dict[str, Any]:
        name = collection or await self.live_collection()
        if name is None:
            return {"alias": self.alias, "collection": None}
        info = await self._read(name)
        params = info.config.params
        vectors = params.vectors if isinstance(params.vectors, dict) else {"": params.vectors}
        return {
            "alias": self.alias,
            "collection": name,
            "engine": self.engine,
            "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "optimizer_status": str(info.optimizer_status),
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
            "vectors": {
                name: {
                    "size": v.size,
                    "distance": str(v.distance.value),
                    "on_disk": v.on_disk,
                    # Several vectors per anime, scored by the best match (MaxSim).
                    "multivector": v.multivector_config is not None,
                }
                for name, v in vectors.items()
            },
            "sparse_vectors": sorted(params.sparse_vectors or {}),
            "idf": sorted(
                name
                for name, sparse in (params.sparse_vectors or {}).items()
                if sparse.modifier == models.Modifier.IDF
            ),
            "calibration": msgspec.to_builtins(await self.calibration(name)) if name else None,
            "shards": params.shard_number,
            "replicas": params.replication_factor,
            "on_disk_payload": params.on_disk_payload,
            "hnsw": info.config.hnsw_config.model_dump(exclude_none=True),
            "quantization": (
                info.config.quantization_config.model_dump(exclude_none=True)
                if info.config.quantization_config
                else None
            ),
            # What this collection was built with (its record), not what the environment says now;
            # query-time settings as searches send them.
            "configured": msgspec.to_builtins(self._params_of(info)),
            "configured_from": "collection" if _recorded_params(info) is not None else "settings",
            "note": (
                "local mode searches exactly (brute force); HNSW and quantization apply on a Qdrant server"
                if self.is_local
                else None
            ),
        }

    async def stats(self) -> dict[str, Any]:
        await self.ensure_ready()
        collection = await self.live_collection()
        total = await self.count()
        per_vector = {}
        for name in [*self.schema.dense, *self.schema.sparse]:
            condition = models.Filter(must=[models.HasVectorCondition(has_vector=name)])
            per_vector[name] = await self.count(count_filter=condition)
        facet = await self._guard(
            self._client.facet(self.alias, key="model_version", limit=100, exact=True), "facet"
        )
        if self.is_local:
            indexes: dict[str, Any] | str = "local mode keeps no payload indexes (it scans)"
        else:
            info = await self._guard(
                self._client.get_collection(collection or self.alias), "reading collection"
            )
            indexes = {
                key: {"type": str(schema.data_type.value), "points": schema.points}
                for key, schema in (info.payload_schema or {}).items()
            }
        return {
            "alias": self.alias,
            "collection": collection,
            "store": self.engine,
            "points": total,
            "vectors": per_vector,
            "payload_indexes": indexes,
            "model_versions": {str(hit.value): hit.count for hit in facet.hits},
        }

    # -- snapshots (server only) ----------------------------------------------------------------

    def _require_server(self, what: str) -> None:
        if self.is_embedded:
            raise NotSupported(
                f"{what} needs a Qdrant server: the embedded store has no snapshots "
                "(stop the service and copy QDRANT_PATH instead)"
            )

    async def create_snapshot(self) -> dict[str, Any]:
        self._require_server("snapshots")
        collection = await self.live_collection()
        snapshot = await self._guard(
            self._client.create_snapshot(collection or self.alias, wait=True), "snapshot"
        )
        return {"collection": collection, **snapshot.model_dump(mode="json")}

    async def list_snapshots(self) -> list[dict[str, Any]]:
        self._require_server("snapshots")
        collection = await self.live_collection()
        snapshots = await self._guard(self._client.list_snapshots(collection or self.alias), "list snapshots")
        return [{"collection": collection, **s.model_dump(mode="json")} for s in snapshots]

    async def restore_snapshot(self, name: str) -> dict[str, Any]:
        self._require_server("snapshots")
        collection = await self.live_collection() or self.alias
        location = f"file:///qdrant/snapshots/{collection}/{name}"
        await self._guard(self._client.recover_snapshot(collection, location=location, wait=True), "restore")
        self.invalidate()
        # Every point may have changed: answers cached before the restore must not be served after it.
        await self._written()
        return {"collection": collection, "restored": name, "location": location}

    async def close(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await self._client.close()
