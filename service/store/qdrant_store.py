"""The anime store over Qdrant: one collection behind an alias, named vectors, payload = document.

`AnimeStore` is the one object the rest of the service holds; it owns no logic of its own but composes
the store's parts, each in its own module:
  backend.py        which Qdrant (server, embedded qdrant-edge, qdrant-client's local mode) and its client
  guard.py          every call's deadline, circuit breaker and metrics
  collection.py     the alias and the collection's lifecycle, schema check and metadata (calibrations)
  reads.py          searches (batched, fused inside Qdrant) and reads; query_requests.py builds them
  writes.py         acknowledged upserts, deletes and payload updates
  dual_writes.py    a reindex's state: writes reach the collection being built too, until the swap
  overview.py       the admin views; snapshots.py snapshots (a server's, or qdrant-edge's in its folder)
The parts share the backend and the guard and talk to each other through public methods only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from qdrant_client import models

from service.domain.calibration import Calibration
from service.domain.sparse import SparseVector
from service.domain.vectors import CALIBRATION_KEY
from service.store.backend import SERVER, Backend, QdrantApi, open_backend
from service.store.collection import Collection
from service.store.dual_writes import DualWrites
from service.store.guard import CircuitBreakers, StoreGuard
from service.store.overview import Overview
from service.store.params import IndexParams
from service.store.reads import Reads
from service.store.snapshots import NotSupported, Snapshots
from service.store.types import FacetCount, Hit, StoredPoint, StoredRecord, VectorQuery, VectorSchema
from service.store.writes import Writes

__all__ = ["AnimeStore", "NotSupported"]


class AnimeStore:
    def __init__(
        self,
        client: QdrantApi,
        alias: str,
        schema: VectorSchema,
        engine: str,
        location: str,
        params: IndexParams | None = None,
        timeout_s: float | None = None,
        *,
        breakers: CircuitBreakers | None = None,
        observer: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self.backend = Backend(client, engine, location)
        self.alias = alias
        self.schema = schema
        # Awaited after every acknowledged write (upsert, delete, alias swap, restore): cache invalidation.
        self.on_write: Callable[[], Awaitable[None]] | None = None
        self.guard = StoreGuard(timeout_s, breakers=breakers, observer=observer)
        self.lifecycle = Collection(
            self.backend, self.guard, alias, schema, params or IndexParams(), self._written
        )
        # An outage may end on another store (a restarted server): check the collection again then.
        self.guard.on_outage = self.lifecycle.lost
        self._reads = Reads(self.backend, self.guard, self.lifecycle)
        self._dual = DualWrites()
        self._writes = Writes(
            self.backend, self.guard, self.lifecycle, self._reads, self._dual, self._written
        )
        self._overview = Overview(self.backend, self.guard, self.lifecycle, self._reads)
        self._snapshots = Snapshots(self.backend, self.guard, self.lifecycle, self._written)

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
        breakers: CircuitBreakers | None = None,
        observer: Callable[[str, float, bool], None] | None = None,
    ) -> AnimeStore:
        backend = open_backend(
            url=url, api_key=api_key, path=path, timeout_s=timeout_s, embedded_engine=embedded_engine
        )
        # Only a server's calls can be cut short; the embedded engines' run to the end in any case.
        deadline = timeout_s if backend.engine == SERVER else None
        return cls(
            backend.client,
            alias,
            schema,
            backend.engine,
            backend.location,
            params,
            timeout_s=deadline,
            breakers=breakers,
            observer=observer,
        )

    async def _written(self) -> None:
        if self.on_write is not None:
            await self.on_write()

    # -- what it is -----------------------------------------------------------------------------

    @property
    def engine(self) -> str:
        return self.backend.engine

    @property
    def location(self) -> str:
        return self.backend.location

    @property
    def is_local(self) -> bool:
        return self.backend.is_local

    @property
    def is_embedded(self) -> bool:
        """In this process on a folder (qdrant-edge or local mode): no concurrent owner."""
        return self.backend.is_embedded

    @property
    def params(self) -> IndexParams:
        """The index settings searches use: the live collection's once checked."""
        return self.lifecycle.params

    @property
    def missing(self) -> frozenset[str]:
        """The schema's optional vectors the live collection lacks: writes leave them out."""
        return self.lifecycle.missing

    @property
    def checked(self) -> bool:
        """Whether `missing` describes the live collection (kept while the store is down)."""
        return self.lifecycle.checked

    async def refuse_if_down(self) -> None:
        """503 at once while the store's circuit is open, so a request does not encode its query first."""
        await self.guard.refuse_if_down()

    async def ping(self) -> None:
        await self._reads.ping()

    async def close(self) -> None:
        await self.backend.close()

    # -- collection lifecycle -------------------------------------------------------------------

    async def ensure_ready(self) -> None:
        """Create the aliased collection on first use, or check the existing one fits the models."""
        await self.lifecycle.ensure_ready()

    def invalidate(self) -> None:
        """Forget the schema check and the calibrations; the next call re-reads them."""
        self.lifecycle.invalidate()

    async def live_collection(self) -> str | None:
        """The collection behind the alias, without checking its schema (reindex reads any)."""
        return await self.lifecycle.live()

    def new_collection_name(self) -> str:
        return self.lifecycle.new_name()

    async def create_collection(self, name: str, schema: VectorSchema, params: IndexParams) -> None:
        await self.lifecycle.create(name, schema, params)

    async def point_alias(self, collection: str) -> str | None:
        """Make the alias name `collection`, atomically; returns the old target."""
        return await self.lifecycle.point_alias(collection)

    async def drop_collection(self, name: str) -> None:
        await self.lifecycle.drop(name)

    async def missing_optional(self, collection: str) -> frozenset[str]:
        """The schema's optional vectors `collection` lacks (text versions exported after it was built)."""
        return await self.lifecycle.missing_optional(collection)

    async def schema_problems(self, collection: str, schema: VectorSchema) -> list[str]:
        return await self.lifecycle.schema_problems(collection, schema)

    async def collection_params(self, collection: str) -> IndexParams:
        """The index settings `collection` was built with, with the query-time ones in use now."""
        return await self.lifecycle.params_in(collection)

    async def metadata(self, key: str, collection: str | None = None) -> Any:
        return await self.lifecycle.metadata(key, collection)

    async def save_metadata(self, key: str, value: Any, collection: str | None = None) -> None:
        await self.lifecycle.save_metadata(key, value, collection)

    async def calibration(
        self, collection: str | None = None, *, key: str = CALIBRATION_KEY
    ) -> Calibration | None:
        return await self.lifecycle.calibration(collection, key=key)

    async def save_calibration(
        self, calibration: Calibration, collection: str | None = None, *, key: str = CALIBRATION_KEY
    ) -> None:
        await self.lifecycle.save_calibration(calibration, collection, key=key)

    # -- a reindex: dual writes, copy, swap ----------------------------------------------------

    def start_dual_writes(self, target: str) -> None:
        """Writes reach `target` (the collection a reindex builds) as well as the live collection."""
        self._dual.start(target)

    def stop_dual_writes(self) -> None:
        """The reindex ended without swapping: writes go to the live collection only."""
        self._dual.stop()

    async def copy_into(self, collection: str, points: Sequence[StoredPoint]) -> None:
        """The reindex copier's write; points written directly since the reindex began are newer."""
        await self._writes.copy_into(collection, points)

    async def swap_to(self, collection: str, params: IndexParams) -> None:
        """Point the alias at the rebuilt `collection` (no write half-way between the two), stop the
        dual writes, and search with `params`, the settings it was built with."""
        await self._dual.swap(lambda: self.lifecycle.point_alias(collection))
        self.lifecycle.params = params

    # -- writes ---------------------------------------------------------------------------------

    async def upsert(self, points: Sequence[StoredPoint]) -> None:
        """Acknowledged only once Qdrant confirms the write (wait=True), live and shadow alike."""
        await self._writes.upsert(points)

    async def delete(self, anime_id: str) -> bool:
        """True if the anime existed (and is now gone everywhere)."""
        return await self._writes.delete(anime_id)

    async def set_payloads(
        self, values: Mapping[str, Mapping[str, Any]], collection: str | None = None
    ) -> None:
        """Set payload keys of many anime in one acknowledged request (anime id -> keys to set)."""
        await self._writes.set_payloads(values, collection)

    async def optimize(self) -> bool:
        """Build the embedded engine's indexes now, after a bulk write (a no-op elsewhere)."""
        return await self._writes.optimize()

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
        return await self._reads.search(
            vector_name, query, limit=limit, query_filter=query_filter, score_threshold=score_threshold
        )

    async def search_many(self, queries: Sequence[VectorQuery], *, payload: bool = True) -> list[list[Hit]]:
        """Several nearest-neighbour queries in one round trip; `payload=False`: only each `anime_id`."""
        return await self._reads.search_many(queries, payload=payload)

    async def search_lists(
        self,
        queries: Sequence[VectorQuery],
        *,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[list[Hit]]:
        """One round trip of queries, each also held to `query_filter` and `score_threshold`."""
        return await self._reads.search_lists(
            queries, query_filter=query_filter, score_threshold=score_threshold
        )

    def scores_by_distance(self, vector_names: Sequence[str]) -> bool:
        """Whether Qdrant scores any of these vectors by a distance (lower is better)."""
        return self._reads.scores_by_distance(vector_names)

    async def search_fused(
        self,
        queries: Sequence[VectorQuery],
        *,
        fusion: Literal["rrf", "dbsf"],
        rrf_k: int,
        limit: int,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """Several named-vector queries fused inside Qdrant as service/search/fusion.py decided; the
        threshold applies to each list's own similarity, before fusion."""
        return await self._reads.search_fused(
            queries,
            fusion=fusion,
            rrf_k=rrf_k,
            limit=limit,
            query_filter=query_filter,
            score_threshold=score_threshold,
        )

    async def get_many(self, anime_ids: Sequence[str], with_vectors: bool = True) -> dict[str, StoredRecord]:
        """Records of the ids that exist (one round trip); absent ids are simply missing."""
        return await self._reads.get_many(anime_ids, with_vectors)

    async def get(self, anime_id: str) -> Hit | None:
        return await self._reads.get(anime_id)

    async def existing_ids(self, anime_ids: Sequence[str]) -> set[str]:
        return await self._reads.existing_ids(anime_ids)

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
        return await self._reads.scroll(
            collection, limit=limit, offset=offset, with_vectors=with_vectors, scroll_filter=scroll_filter
        )

    async def count(self, collection: str | None = None, count_filter: models.Filter | None = None) -> int:
        return await self._reads.count(collection, count_filter)

    async def facet(
        self, key: str, *, limit: int, facet_filter: models.Filter | None = None
    ) -> list[FacetCount]:
        """How many points of the live collection hold each value of `key`, most frequent first."""
        return await self._reads.facet(key, limit=limit, facet_filter=facet_filter)

    # -- admin views and snapshots --------------------------------------------------------------

    async def collection_info(self, collection: str | None = None) -> dict[str, Any]:
        return await self._overview.collection_info(collection)

    async def stats(self) -> dict[str, Any]:
        return await self._overview.stats()

    async def create_snapshot(self) -> dict[str, Any]:
        return await self._snapshots.create()

    async def list_snapshots(self) -> list[dict[str, Any]]:
        return await self._snapshots.list()

    async def restore_snapshot(self, name: str) -> dict[str, Any]:
        return await self._snapshots.restore(name)

    async def delete_snapshot(self, name: str) -> dict[str, Any]:
        return await self._snapshots.delete(name)
