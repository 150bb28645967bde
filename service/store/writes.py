"""Acknowledged writes: upserts, deletes, payload updates, the reindex copier's writes.

A write is acknowledged only once Qdrant confirms it (wait=True). While a reindex builds a new
collection each write reaches it too (service/store/dual_writes.py), and every acknowledged write to
the live collection is announced (`written`: the answer cache moves on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import models

from service.domain.documents import point_id
from service.store.backend import Backend
from service.store.collection import Collection
from service.store.dual_writes import DualWrites
from service.store.guard import StoreGuard
from service.store.reads import Reads
from service.store.slots import with_slots
from service.store.types import StoredPoint, to_qdrant_vector


def structs(
    points: Sequence[StoredPoint], slots: Mapping[str, int], leave_out: frozenset[str] = frozenset()
) -> list[models.PointStruct]:
    """Points as Qdrant takes them, with the slots of each multivector (`slots`: how many each), without
    the vectors in `leave_out` (ones the collection lacks)."""
    return [
        models.PointStruct(
            id=point_id(p.anime_id),
            vector={
                name: to_qdrant_vector(v)
                for name, v in with_slots(p.vectors, slots).items()
                if name not in leave_out
            },
            payload=dict(p.payload),
        )
        for p in points
    ]


@dataclass(eq=False)
class Writes:
    _backend: Backend
    _guard: StoreGuard
    _collection: Collection
    _reads: Reads
    _dual: DualWrites
    # Awaited after every acknowledged write to the live collection (cache invalidation).
    _written: Callable[[], Awaitable[None]]

    async def upsert(self, points: Sequence[StoredPoint]) -> None:
        """Acknowledged only once Qdrant confirms the write (wait=True), live and shadow alike."""
        await self._collection.ensure_ready()
        slots = self._collection.schema.slots
        live = structs(points, slots, self._collection.leave_out)
        if not live:
            return
        shadow = self._dual.target  # before the live write: see DualWrites.target
        await self._guard.call(
            self._backend.client.upsert(self._collection.alias, points=live, wait=True), "upsert"
        )
        if shadow is not None:
            # The new collection has every served version's vectors, the live one perhaps not yet.
            full = structs(points, slots)
            await self._dual.mirror(
                shadow,
                (p.anime_id for p in points),
                lambda: self._guard.call(
                    self._backend.client.upsert(shadow, points=full, wait=True), "write (reindex)"
                ),
            )
        await self._written()

    async def delete(self, anime_id: str) -> bool:
        """True if the anime existed (and is now gone everywhere)."""
        await self._collection.ensure_ready()
        existing = await self._reads.get_many([anime_id], with_vectors=False)
        selector = models.PointIdsList(points=[point_id(anime_id)])
        shadow = self._dual.target
        await self._guard.call(
            self._backend.client.delete(self._collection.alias, points_selector=selector, wait=True), "delete"
        )
        if shadow is not None:
            await self._dual.mirror(
                shadow,
                [anime_id],
                lambda: self._guard.call(
                    self._backend.client.delete(shadow, points_selector=selector, wait=True),
                    "write (reindex)",
                ),
            )
        await self._written()
        return anime_id in existing

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
        await self._guard.call(
            self._backend.client.batch_update_points(
                collection or self._collection.alias, update_operations=operations, wait=True
            ),
            "set payload",
        )
        await self._written()

    async def copy_into(self, collection: str, points: Sequence[StoredPoint]) -> None:
        """The reindex copier's write to the collection it builds: points written directly since the
        reindex began are left out, they are newer than the copy."""

        async def write(fresh: list[StoredPoint]) -> None:
            if fresh:
                await self._guard.call(
                    self._backend.client.upsert(
                        collection, points=structs(fresh, self._collection.schema.slots), wait=True
                    ),
                    "copy",
                )

        await self._dual.copy(points, lambda p: p.anime_id, write)

    async def optimize(self) -> bool:
        """Build the embedded engine's indexes (HNSW, payload indexes) now, after a bulk write: searches
        are exact until then. A no-op for engines that optimise on their own (a server, local mode)."""
        optimize = getattr(self._backend.client, "optimize", None)
        if optimize is None:
            return False
        return bool(await self._guard.call(optimize(), "optimize"))
