"""Which Qdrant the store talks to, and the few client operations it needs from any of them.

Three engines share qdrant-client's asyncio API: a Qdrant server or cluster (`AsyncQdrantClient` with a
URL), the embedded qdrant-edge engine on a folder (`EdgeQdrantClient`, the default without a URL) and
qdrant-client's own local mode (an exact scan, kept as the test double of the server's API). This is
the only module that knows how each is built; the rest of the store sees a `Backend`: the client
behind the `QdrantApi` protocol, plus what kind of engine it is (some features only a server has).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qdrant_client import AsyncQdrantClient, models

from service.store.edge_client import EdgeQdrantClient, refuse_a_held_folder, refuse_local_mode_folder

SERVER = "qdrant-server"
EDGE = "qdrant-edge"
LOCAL = "qdrant-local"
DEFAULT_FOLDER = "var/qdrant"


class QdrantApi(Protocol):
    """The part of qdrant-client's `AsyncQdrantClient` the store calls, with its signatures.

    `EdgeQdrantClient` implements exactly this subset (plus `optimize`, which only it needs), so a
    method added here must be added there too. `models` in and out, as qdrant-client defines them.
    """

    async def get_aliases(self) -> models.CollectionsAliasesResponse: ...
    async def update_collection_aliases(self, change_aliases_operations: Sequence[Any]) -> bool: ...
    async def get_collections(self) -> models.CollectionsResponse: ...
    async def collection_exists(self, collection_name: str) -> bool: ...
    async def create_collection(self, collection_name: str, **config: Any) -> bool: ...
    async def get_collection(self, collection_name: str) -> models.CollectionInfo: ...
    async def update_collection(self, collection_name: str, **changes: Any) -> bool: ...
    async def delete_collection(self, collection_name: str) -> bool: ...
    async def create_payload_index(
        self, collection_name: str, field_name: str, *, field_schema: Any, wait: bool = True
    ) -> models.UpdateResult: ...
    async def upsert(
        self, collection_name: str, points: Sequence[models.PointStruct], *, wait: bool = True
    ) -> models.UpdateResult: ...
    async def delete(
        self, collection_name: str, points_selector: Any, *, wait: bool = True
    ) -> models.UpdateResult: ...
    async def batch_update_points(
        self, collection_name: str, update_operations: Sequence[Any], *, wait: bool = True
    ) -> list[models.UpdateResult]: ...
    async def retrieve(
        self, collection_name: str, ids: Sequence[Any], *, with_payload: Any, with_vectors: Any
    ) -> list[models.Record]: ...
    async def scroll(self, collection_name: str, **page: Any) -> tuple[list[models.Record], Any]: ...
    async def count(self, collection_name: str, **options: Any) -> models.CountResult: ...
    async def facet(self, collection_name: str, key: str, **options: Any) -> models.FacetResponse: ...
    async def query_points(self, collection_name: str, **query: Any) -> models.QueryResponse: ...
    async def query_batch_points(
        self, collection_name: str, requests: Sequence[models.QueryRequest]
    ) -> list[models.QueryResponse]: ...
    async def create_snapshot(self, collection_name: str, **options: Any) -> Any: ...
    async def list_snapshots(self, collection_name: str) -> list[Any]: ...
    async def recover_snapshot(self, collection_name: str, location: str, **options: Any) -> Any: ...
    async def delete_snapshot(self, collection_name: str, snapshot_name: str, **options: Any) -> Any: ...
    async def close(self) -> None: ...


@dataclass
class Backend:
    """A Qdrant client and what it runs on. `client` may be replaced while the store is in use (a test
    stands in a dead endpoint for an outage): every part of the store reads it at call time."""

    client: QdrantApi
    engine: str  # SERVER, EDGE or LOCAL
    location: str  # the server's URL or the embedded store's folder

    @property
    def is_local(self) -> bool:
        """qdrant-client's local mode: an exact scan that keeps no HNSW, payload indexes or shards."""
        return self.engine == LOCAL

    @property
    def is_embedded(self) -> bool:
        """In this process on a folder (qdrant-edge or local mode): no concurrent owner."""
        return self.engine != SERVER

    def snapshot_location(self, collection: str, name: str) -> str:
        """Where the engine's `recover_snapshot` finds a snapshot it made: a server, in its own
        snapshots folder (as the server sees it); qdrant-edge, in the store's folder."""
        if self.engine == EDGE:
            return EdgeQdrantClient.snapshot_location(self.location, collection, name)
        return f"file:///qdrant/snapshots/{collection}/{name}"

    async def close(self) -> None:
        # qdrant-client warns about closing its local mode's sqlite from a finaliser; nothing to act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await self.client.close()


def open_backend(
    *,
    url: str | None = None,
    api_key: str | None = None,
    path: Path | None = None,
    timeout_s: float = 10.0,
    embedded_engine: str = "edge",
) -> Backend:
    """A server's client for a URL; otherwise the embedded engine on `path` (created if missing)."""
    if url:
        client = AsyncQdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout_s)))
        return Backend(client, SERVER, url)
    folder = Path(path or DEFAULT_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    if embedded_engine == "local":  # qdrant-client's exact scan: the test double for the server API
        return Backend(AsyncQdrantClient(path=str(folder)), LOCAL, str(folder))
    if embedded_engine != "edge":
        raise ValueError(f"unknown embedded engine {embedded_engine!r} (edge or local)")
    return Backend(EdgeQdrantClient(folder), EDGE, str(folder))


def check_folder(path: Path | None = None, embedded_engine: str = "edge") -> None:
    """Raise what opening the embedded engine on `path` would, where that can be told without opening
    it: a folder of qdrant-client's local mode under the edge engine (`LocalModeFolder`, naming the
    command that converts it), or a folder another process owns (`StoreLocked`). Start-up calls this
    before serving, so the refusal is one clear line instead of a failure inside the app's start-up."""
    if embedded_engine == "edge":
        folder = Path(path or DEFAULT_FOLDER)
        refuse_local_mode_folder(folder)
        refuse_a_held_folder(folder)
