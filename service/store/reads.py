"""Searches and reads against the live collection (through the alias) or a named one.

Nearest-neighbour queries go out as one batch per request (Qdrant's batch Query API); lists that
service/search/fusion.py decides to fuse inside Qdrant go out as one Query API call (prefetch + RRF or
DBSF) with the parameters it chose. No fusion is decided here. Every score handed out is a similarity
(service/store/query_requests.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from qdrant_client import models

from service.domain.documents import point_id
from service.domain.sparse import SparseVector
from service.store.backend import Backend
from service.store.collection import Collection
from service.store.guard import StoreGuard
from service.store.point_names import PointNames
from service.store.query_requests import RequestBuilder, at_least, both, hit, named_hit
from service.store.slots import is_slot
from service.store.types import FacetCount, Hit, StoredRecord, VectorQuery, from_qdrant_vector

# How stale the collection size behind the exact-or-graph choice may be: a count per few seconds.
SIZE_RECHECK_S = 5.0


def _record(record: models.Record, anime_id: str) -> StoredRecord:
    vectors = record.vector if isinstance(record.vector, dict) else {}
    return StoredRecord(
        anime_id=anime_id,
        payload=record.payload or {},
        vectors={name: from_qdrant_vector(v) for name, v in vectors.items() if not is_slot(name)},
    )


class Reads:
    def __init__(self, backend: Backend, guard: StoreGuard, collection: Collection) -> None:
        self._backend = backend
        self._guard = guard
        self._collection = collection
        self._requests = RequestBuilder(collection.schema)
        self._size: tuple[float, int] | None = None  # (when counted, points): see _query_params
        self._names = PointNames()

    async def _query_params(self) -> models.SearchParams | None:
        """The search params of the next queries: exact for a catalogue-sized collection
        (IndexParams.exact_search_up_to), whose size is re-estimated at most every SIZE_RECHECK_S."""
        if self._backend.is_local:  # local mode scans exactly anyway, and warns about params it ignores
            return None
        now = time.monotonic()
        if self._size is None or now - self._size[0] > SIZE_RECHECK_S:
            counted = await self._guard.call(
                self._backend.client.count(self._collection.alias, exact=False), "count"
            )
            self._size = (now, int(counted.count))
        return self._collection.params.search_params(self._size[1])

    def _shortlisted(self) -> frozenset[str]:
        """The multivectors whose lists are found through their slots past the exact-scan size: none on
        local mode, which scans every list exactly whatever it is asked."""
        return frozenset() if self._backend.is_local else self._collection.slotted

    async def search_many(self, queries: Sequence[VectorQuery], *, payload: bool = True) -> list[list[Hit]]:
        """Several nearest-neighbour queries in one round trip (Qdrant's batch query API).

        `payload=False` brings back only ids and scores, named by `PointNames`: candidate lists that
        are fused before anything is shown need no documents, and reading them is most of a query's cost.
        """
        await self._collection.ensure_ready()
        if not queries:
            return []
        params = await self._query_params()
        slotted = self._shortlisted()
        requests = [self._requests.request(q, payload, params, slotted) for q in queries]
        responses = await self._guard.call(
            self._backend.client.query_batch_points(self._collection.alias, requests=requests),
            "batch search",
        )
        if payload:
            return [
                at_least(
                    [hit(p, self._requests.is_distance(q.using)) for p in response.points], q.score_threshold
                )
                for q, response in zip(queries, responses, strict=True)
            ]
        await self._learn_names(str(p.id) for response in responses for p in response.points)
        return [
            at_least(
                [
                    named_hit(p, anime_id, self._requests.is_distance(q.using))
                    for p in response.points
                    if (anime_id := self._names.name(str(p.id))) is not None  # deleted meanwhile
                ],
                q.score_threshold,
            )
            for q, response in zip(queries, responses, strict=True)
        ]

    async def _learn_names(self, points: Iterable[str]) -> None:
        """Name the points not met before: one retrieve of their `anime_id` (see point_names.py)."""
        unknown = self._names.unknown(points)
        if not unknown:
            return
        records = await self._guard.call(
            self._backend.client.retrieve(
                self._collection.alias, ids=unknown, with_payload=["anime_id"], with_vectors=False
            ),
            "retrieve",
        )
        self._names.learn(
            (str(r.id), str(r.payload["anime_id"])) for r in records if r.payload and "anime_id" in r.payload
        )

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

    async def search_lists(
        self,
        queries: Sequence[VectorQuery],
        *,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[list[Hit]]:
        """`search_many` with one filter and one similarity threshold added to every query."""
        return await self.search_many(
            [
                VectorQuery(
                    q.using, q.vector, q.limit, both(q.query_filter, query_filter), score_threshold, q.penalty
                )
                for q in queries
            ]
        )

    def scores_by_distance(self, vector_names: Sequence[str]) -> bool:
        """Whether Qdrant scores any of these vectors by a distance (lower is better)."""
        return any(self._requests.is_distance(name) for name in vector_names)

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
        """Several named-vector queries fused inside Qdrant (Query API: prefetch + RRF or DBSF).

        `score_threshold` is a similarity each list's matches must reach, applied before fusion.
        """
        await self._collection.ensure_ready()
        params = await self._query_params()
        slotted = self._shortlisted()
        prefetch = [self._requests.prefetch(q, score_threshold, params, slotted) for q in queries]
        query: Any = (
            models.RrfQuery(rrf=models.Rrf(k=rrf_k))
            if fusion == "rrf"
            else models.FusionQuery(fusion=models.Fusion.DBSF)
        )
        response = await self._guard.call(
            self._backend.client.query_points(
                self._collection.alias,
                prefetch=prefetch,
                query=query,
                limit=limit,
                query_filter=query_filter,
                with_payload=True,
            ),
            "fused search",
        )
        return [hit(p) for p in response.points]

    async def get_many(self, anime_ids: Sequence[str], with_vectors: bool = True) -> dict[str, StoredRecord]:
        """Records of the ids that exist (one round trip); absent ids are simply missing."""
        await self._collection.ensure_ready()
        if not anime_ids:
            return {}
        wanted = {point_id(a): a for a in anime_ids}
        records = await self._guard.call(
            self._backend.client.retrieve(
                self._collection.alias, ids=list(wanted), with_payload=True, with_vectors=with_vectors
            ),
            "retrieve",
        )
        found: dict[str, StoredRecord] = {}
        for record in records:
            anime_id = wanted.get(str(record.id), str((record.payload or {}).get("anime_id")))
            found[anime_id] = _record(record, anime_id)
        self._names.learn((point_id(a), a) for a in found)
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
        records, next_offset = await self._guard.call(
            self._backend.client.scroll(
                collection,
                limit=limit,
                offset=offset,
                with_payload=True,
                with_vectors=with_vectors if isinstance(with_vectors, bool) else list(with_vectors),
                scroll_filter=scroll_filter,
            ),
            "scroll",
        )
        out = [_record(r, str((r.payload or {}).get("anime_id", r.id))) for r in records]
        return out, next_offset

    async def count(self, collection: str | None = None, count_filter: models.Filter | None = None) -> int:
        if collection is None:
            await self._collection.ensure_ready()
        result = await self._guard.call(
            self._backend.client.count(
                collection or self._collection.alias, count_filter=count_filter, exact=True
            ),
            "count",
        )
        return int(result.count)

    async def facet(
        self, key: str, *, limit: int, facet_filter: models.Filter | None = None
    ) -> list[FacetCount]:
        """How many points hold each value of one payload key: most frequent first, ties by value.

        Exact counts: a catalogue-sized collection counts them quickly, and a client shows them as
        numbers of anime (Qdrant's default estimate could disagree with what a filtered search finds).
        """
        await self._collection.ensure_ready()
        response = await self._guard.call(
            self._backend.client.facet(
                self._collection.alias, key=key, facet_filter=facet_filter, limit=limit, exact=True
            ),
            "facet",
        )
        return [FacetCount(hit.value, hit.count) for hit in response.hits]

    async def ping(self) -> None:
        await self._guard.call(self._backend.client.get_aliases(), "ping")
