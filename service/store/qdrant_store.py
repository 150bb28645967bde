"""The anime store over Qdrant: one collection behind an alias, named vectors, payload = document.

qdrant-client gives the same API for its local mode (a folder, no server) and for a Qdrant server
or cluster, so this class is the only place that knows which one is in use.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from service.documents import point_id
from service.encoders.sparse import SparseVector
from service.errors import DependencyUnavailable, ModelMismatch
from service.fusion import DEFAULT_RRF_K
from service.store.filters import PAYLOAD_INDEXES

RRF_K = int(DEFAULT_RRF_K)

_DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}


@dataclass(frozen=True)
class VectorSchema:
    """Named vectors the deployed models produce: dense name -> dim, plus sparse names."""

    dense: Mapping[str, int]
    sparse: Sequence[str] = ()
    distance: str = "cosine"


@dataclass(frozen=True)
class StoredPoint:
    anime_id: str
    vectors: Mapping[str, Sequence[float] | SparseVector]
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    anime_id: str
    score: float
    payload: dict[str, Any]
    vectors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VectorQuery:
    """One nearest-neighbour query against one named vector."""

    using: str
    vector: Sequence[float] | SparseVector
    limit: int
    query_filter: models.Filter | None = None
    score_threshold: float | None = None


@dataclass(frozen=True)
class StoredRecord:
    anime_id: str
    payload: dict[str, Any]
    vectors: dict[str, list[float] | SparseVector]


def _to_qdrant_vector(value: Sequence[float] | SparseVector) -> Any:
    if isinstance(value, SparseVector):
        return models.SparseVector(indices=value.indices, values=value.values)
    return [float(x) for x in value]


def _from_qdrant_vector(value: Any) -> list[float] | SparseVector:
    if isinstance(value, models.SparseVector):
        return SparseVector(list(value.indices), list(value.values))
    return list(value)


class AnimeStore:
    def __init__(
        self,
        client: AsyncQdrantClient,
        alias: str,
        schema: VectorSchema,
        engine: str,
        location: str,
    ) -> None:
        self._client = client
        self.alias = alias
        self.schema = schema
        self.engine = engine
        self.location = location
        self._ready = False
        self._init_lock = asyncio.Lock()

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
    ) -> AnimeStore:
        if url:
            client = AsyncQdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout_s)))
            return cls(client, alias, schema, "qdrant-server", url)
        folder = Path(path or "var/qdrant")
        folder.mkdir(parents=True, exist_ok=True)
        return cls(AsyncQdrantClient(path=str(folder)), alias, schema, "qdrant-local", str(folder))

    @property
    def is_local(self) -> bool:
        return self.engine == "qdrant-local"

    async def _guard(self, awaitable: Any, action: str) -> Any:
        try:
            return await awaitable
        except (ResponseHandlingException, ConnectionError, OSError, asyncio.TimeoutError) as exc:
            self._ready = False
            raise DependencyUnavailable("qdrant", f"{action} failed: {exc or type(exc).__name__}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code in (502, 503, 504):
                self._ready = False
            raise DependencyUnavailable(
                "qdrant", f"{action} failed: HTTP {exc.status_code} {exc.reason_phrase}"
            ) from exc

    # -- collection lifecycle -------------------------------------------------------------------

    async def ensure_ready(self) -> None:
        """Create the aliased collection on first use, or check the existing one fits the models."""
        if self._ready:
            return
        async with self._init_lock:
            if self._ready:
                return
            collection = await self._resolve_alias()
            if collection is None:
                await self._create(self._new_collection_name())
            else:
                await self._check_schema(collection)
            self._ready = True

    async def _resolve_alias(self) -> str | None:
        aliases = await self._guard(self._client.get_aliases(), "listing aliases")
        for alias in aliases.aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name
        # A plain collection named like the alias (e.g. created by hand) is used as is.
        exists = await self._guard(self._client.collection_exists(self.alias), "checking collection")
        return self.alias if exists else None

    def _new_collection_name(self) -> str:
        return f"{self.alias}_{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d%H%M%S%f')}"

    async def _create(self, name: str) -> None:
        distance = _DISTANCES[self.schema.distance]
        await self._guard(
            self._client.create_collection(
                collection_name=name,
                vectors_config={
                    vector: models.VectorParams(size=dim, distance=distance)
                    for vector, dim in self.schema.dense.items()
                },
                sparse_vectors_config={vector: models.SparseVectorParams() for vector in self.schema.sparse}
                or None,
            ),
            "creating collection",
        )
        if not self.is_local:
            # Local mode has no payload indexes (it scans); a server needs them for fast filters.
            for key, schema in PAYLOAD_INDEXES.items():
                await self._guard(
                    self._client.create_payload_index(name, key, field_schema=schema, wait=True),
                    f"indexing {key}",
                )
        await self._guard(
            self._client.update_collection_aliases(
                change_aliases_operations=[
                    models.CreateAliasOperation(
                        create_alias=models.CreateAlias(collection_name=name, alias_name=self.alias)
                    )
                ]
            ),
            "creating alias",
        )

    async def _check_schema(self, collection: str) -> None:
        info = await self._guard(self._client.get_collection(collection), "reading collection")
        vectors = info.config.params.vectors
        existing = vectors if isinstance(vectors, dict) else {"": vectors}
        sparse_existing = info.config.params.sparse_vectors or {}
        problems = []
        for name, dim in self.schema.dense.items():
            params = existing.get(name)
            if params is None:
                problems.append(f"vector '{name}' is missing")
            elif params.size != dim:
                problems.append(f"vector '{name}' has {params.size} dims, the model gives {dim}")
        problems += [
            f"sparse vector '{n}' is missing" for n in self.schema.sparse if n not in sparse_existing
        ]
        if problems:
            raise ModelMismatch(
                f"collection '{collection}' (alias '{self.alias}') does not fit the deployed models: "
                + "; ".join(problems)
                + ". Re-embed into a new collection (reindex) or point QDRANT_COLLECTION elsewhere.",
                collection=collection,
                problems=problems,
            )

    # -- data -----------------------------------------------------------------------------------

    async def upsert(self, points: Sequence[StoredPoint]) -> None:
        await self.ensure_ready()
        structs = [
            models.PointStruct(
                id=point_id(p.anime_id),
                vector={name: _to_qdrant_vector(v) for name, v in p.vectors.items()},
                payload=dict(p.payload),
            )
            for p in points
        ]
        if structs:
            await self._guard(self._client.upsert(self.alias, points=structs, wait=True), "upsert")

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

    async def search_many(self, queries: Sequence[VectorQuery]) -> list[list[Hit]]:
        """Several nearest-neighbour queries in one round trip (Qdrant's batch query API)."""
        await self.ensure_ready()
        if not queries:
            return []
        requests = [
            models.QueryRequest(
                query=_to_qdrant_vector(q.vector),
                using=q.using,
                limit=q.limit,
                filter=q.query_filter,
                score_threshold=q.score_threshold,
                with_payload=True,
            )
            for q in queries
        ]
        responses = await self._guard(
            self._client.query_batch_points(self.alias, requests=requests), "batch search"
        )
        return [[_hit(p) for p in response.points] for response in responses]

    async def search_fused(
        self,
        queries: Sequence[VectorQuery],
        *,
        fusion: str,
        limit: int,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """Fuse several named-vector queries inside Qdrant (Query API: prefetch + RRF or DBSF)."""
        await self.ensure_ready()
        if len(queries) == 1:
            q = queries[0]
            return await self.search(
                q.using, q.vector, limit=limit, query_filter=query_filter, score_threshold=score_threshold
            )
        prefetch = [
            models.Prefetch(
                query=_to_qdrant_vector(q.vector), using=q.using, limit=q.limit, filter=q.query_filter
            )
            for q in queries
        ]
        # k=60 like the façade's fusion (service/fusion.py), not Qdrant's default 2: agreement between
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
                score_threshold=score_threshold,
                with_payload=True,
            ),
            "fused search",
        )
        return [_hit(p) for p in response.points]

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
                vectors={name: _from_qdrant_vector(v) for name, v in vectors.items()},
            )
        return found

    async def get(self, anime_id: str) -> Hit | None:
        record = (await self.get_many([anime_id])).get(anime_id)
        if record is None:
            return None
        return Hit(anime_id=anime_id, score=1.0, payload=record.payload, vectors=sorted(record.vectors))

    async def count(self) -> int:
        await self.ensure_ready()
        result = await self._guard(self._client.count(self.alias, exact=True), "count")
        return int(result.count)

    async def existing_ids(self, anime_ids: Sequence[str]) -> set[str]:
        await self.ensure_ready()
        records = await self._guard(
            self._client.retrieve(
                self.alias, ids=[point_id(a) for a in anime_ids], with_payload=["anime_id"]
            ),
            "retrieve",
        )
        return {str((r.payload or {}).get("anime_id")) for r in records}

    async def ping(self) -> None:
        await self._guard(self._client.get_aliases(), "ping")

    async def close(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await self._client.close()


def _hit(point: models.ScoredPoint) -> Hit:
    payload = point.payload or {}
    return Hit(anime_id=str(payload.get("anime_id", point.id)), score=float(point.score), payload=payload)
