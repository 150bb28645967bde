"""Snapshots of the live collection: create, list, restore, delete.

A Qdrant server makes and keeps its own; the embedded qdrant-edge store makes them in its folder
(service/store/edge_client.py). qdrant-client's local mode has none. A restore replaces every point,
so it counts as a write (the answer cache moves on) and the collection's schema is checked again before
the next use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from qdrant_client import models

from service.platform.errors import NotFound, ServiceError
from service.store.backend import Backend
from service.store.collection import Collection
from service.store.edge_client import EdgeRequestError
from service.store.guard import StoreGuard


class NotSupported(ServiceError, status_code=501, code="not_supported"):
    pass


class SnapshotNotFound(NotFound, code="snapshot_not_found"):
    pass


class SnapshotUnusable(ServiceError, status_code=409, code="snapshot_unusable"):
    """The snapshot exists but cannot replace the live collection (damaged, or other vectors)."""


@dataclass(eq=False)
class Snapshots:
    _backend: Backend
    _guard: StoreGuard
    _collection: Collection
    # Awaited after a restore: every point may have changed (cache invalidation).
    _written: Callable[[], Awaitable[None]]

    def _require_snapshots(self) -> None:
        if self._backend.is_local:
            raise NotSupported(
                "snapshots need the default embedded engine or a Qdrant server: qdrant-client's local "
                "mode (QDRANT_EMBEDDED_ENGINE=local) has none; unset it (qdrant-edge) or set QDRANT_URL"
            )

    async def create(self) -> dict[str, Any]:
        self._require_snapshots()
        collection = await self._collection.live()
        snapshot = await self._guard.call(
            self._backend.client.create_snapshot(collection or self._collection.alias, wait=True), "snapshot"
        )
        return {"collection": collection, **snapshot.model_dump(mode="json")}

    async def list(self) -> list[dict[str, Any]]:
        self._require_snapshots()
        collection = await self._collection.live()
        snapshots = await self._listing(collection or self._collection.alias)
        return [{"collection": collection, **s.model_dump(mode="json")} for s in snapshots]

    async def restore(self, name: str) -> dict[str, Any]:
        self._require_snapshots()
        collection = await self._existing(name)
        location = self._backend.snapshot_location(collection, name)
        try:
            await self._guard.call(
                self._backend.client.recover_snapshot(collection, location=location, wait=True), "restore"
            )
        except EdgeRequestError as exc:  # the embedded store refused it and changed nothing
            raise SnapshotUnusable(
                f"snapshot '{name}' cannot be restored into '{collection}': {exc}",
                snapshot=name,
                collection=collection,
            ) from exc
        self._collection.invalidate()
        # Every point may have changed: answers cached before the restore must not be served after it.
        await self._written()
        return {"collection": collection, "restored": name, "location": location}

    async def delete(self, name: str) -> dict[str, Any]:
        self._require_snapshots()
        collection = await self._existing(name)
        await self._guard.call(
            self._backend.client.delete_snapshot(collection, name, wait=True), "delete snapshot"
        )
        return {"collection": collection, "deleted": name}

    async def _listing(self, collection: str) -> list[models.SnapshotDescription]:
        return await self._guard.call(self._backend.client.list_snapshots(collection), "list snapshots")

    async def _existing(self, name: str) -> str:
        """The live collection, which must have a snapshot `name` (else 404)."""
        collection = await self._collection.live() or self._collection.alias
        if name not in {s.name for s in await self._listing(collection)}:
            raise SnapshotNotFound(
                f"no snapshot '{name}' of collection '{collection}' (GET /api/v1/admin/snapshots lists them)",
                snapshot=name,
                collection=collection,
            )
        return collection
