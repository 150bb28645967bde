"""Snapshots of the live collection (a Qdrant server only): create, list, restore.

The embedded store has none: it is a folder owned by this process, copied with the service stopped.
A restore replaces every point, so it counts as a write (the answer cache moves on) and the
collection's schema is checked again before the next use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from service.platform.errors import ServiceError
from service.store.backend import Backend
from service.store.collection import Collection
from service.store.guard import StoreGuard


class NotSupported(ServiceError, status_code=501, code="not_supported"):
    pass


@dataclass(eq=False)
class Snapshots:
    _backend: Backend
    _guard: StoreGuard
    _collection: Collection
    # Awaited after a restore: every point may have changed (cache invalidation).
    _written: Callable[[], Awaitable[None]]

    def _require_server(self, what: str) -> None:
        if self._backend.is_embedded:
            raise NotSupported(
                f"{what} needs a Qdrant server: the embedded store has no snapshots "
                "(stop the service and copy QDRANT_PATH instead)"
            )

    async def create(self) -> dict[str, Any]:
        self._require_server("snapshots")
        collection = await self._collection.live()
        snapshot = await self._guard.call(
            self._backend.client.create_snapshot(collection or self._collection.alias, wait=True), "snapshot"
        )
        return {"collection": collection, **snapshot.model_dump(mode="json")}

    async def list(self) -> list[dict[str, Any]]:
        self._require_server("snapshots")
        collection = await self._collection.live()
        snapshots = await self._guard.call(
            self._backend.client.list_snapshots(collection or self._collection.alias), "list snapshots"
        )
        return [{"collection": collection, **s.model_dump(mode="json")} for s in snapshots]

    async def restore(self, name: str) -> dict[str, Any]:
        self._require_server("snapshots")
        collection = await self._collection.live() or self._collection.alias
        location = f"file:///qdrant/snapshots/{collection}/{name}"
        await self._guard.call(
            self._backend.client.recover_snapshot(collection, location=location, wait=True), "restore"
        )
        self._collection.invalidate()
        # Every point may have changed: answers cached before the restore must not be served after it.
        await self._written()
        return {"collection": collection, "restored": name, "location": location}
