"""Our queries as Qdrant requests, and Qdrant's scores as our similarities (pure, given the schema).

Every score the store hands out is a similarity, higher is better, whatever QDRANT_DISTANCE says,
because fusion (min-max, DBSF), score_threshold (>=) and explanations all assume so:
  cosine  cosine similarity as Qdrant gives it, in [-1, 1]
  dot     dot product as Qdrant gives it (= cosine on the L2-normalised vectors our models make;
          client-given vectors need not be normalised, so it is unbounded then)
  euclid  1 / (1 + d) where d is the Euclidean distance Qdrant gives (lower is better there):
          (0, 1], 1.0 for an identical vector; d = 1/s - 1. On unit vectors d = sqrt(2 - 2 cos),
          so the ranking is the cosine one.
Sparse vectors always score by dot product, and fused (RRF/DBSF) scores are already higher-better:
neither is mapped.

score_threshold is the same similarity: for euclid it becomes the largest distance Qdrant should
keep. Local mode drops a score equal to the threshold (server keeps it) and the euclid mapping
rounds, so Qdrant is asked with a slightly looser bound and the exact `score >= threshold` is
applied afterwards (`at_least`), to the scores as reported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qdrant_client import models

from service.domain.sparse import SparseVector
from service.store.slots import slot_names, unit_mean
from service.store.types import Hit, VectorQuery, VectorSchema, is_multi, to_qdrant_vector

# 3x, not more: the formula reads each candidate's payload, so the list's cost grows with it (10x took
# 18 ms of a search's ~30 on the catalogue, 3x 9 ms), and 3x kept the same top-10 on 64 queries.
PENALTY_OVERFETCH = 3

_THRESHOLD_SLACK = 1e-6


def euclid_similarity(distance: float) -> float:
    return 1.0 / (1.0 + distance)


def qdrant_threshold(threshold: float | None, euclid: bool) -> float | None:
    """The bound to send to Qdrant for a similarity threshold: a little looser than exact."""
    if threshold is None:
        return None
    if not euclid:
        return threshold - _THRESHOLD_SLACK * max(1.0, abs(threshold))
    if threshold <= 0.0:
        return None  # every euclid similarity is > 0
    distance = 1.0 / threshold - 1.0  # negative (nothing passes) for a threshold above 1.0
    return distance + _THRESHOLD_SLACK * max(1.0, abs(distance))


def at_least(hits: list[Hit], threshold: float | None) -> list[Hit]:
    return hits if threshold is None else [h for h in hits if h.score >= threshold]


def both(first: models.Filter | None, second: models.Filter | None) -> models.Filter | None:
    if first is None or second is None:
        return first or second
    return models.Filter(must=[first, second])


def similarity(point: models.ScoredPoint, euclid: bool = False) -> float:
    return euclid_similarity(float(point.score)) if euclid else float(point.score)


def hit(point: models.ScoredPoint, euclid: bool = False) -> Hit:
    payload = point.payload or {}
    return Hit(
        anime_id=str(payload.get("anime_id", point.id)), score=similarity(point, euclid), payload=payload
    )


def named_hit(point: models.ScoredPoint, anime_id: str, euclid: bool = False) -> Hit:
    """A hit of a list asked without payload, its anime known from the point id (reads.PointNames)."""
    return Hit(anime_id=anime_id, score=similarity(point, euclid), payload={"anime_id": anime_id})


def penalty_formula(query: VectorQuery) -> models.FormulaQuery:
    assert query.penalty is not None
    return models.FormulaQuery(
        formula=models.SumExpression(
            sum=["$score", models.MultExpression(mult=[-query.penalty.weight, query.penalty.field])]
        ),
        defaults={query.penalty.field: 0.0},
    )


class RequestBuilder:
    """Turns `VectorQuery`s into Qdrant requests for one vector schema."""

    def __init__(self, schema: VectorSchema) -> None:
        self.schema = schema

    def is_distance(self, vector_name: str) -> bool:
        """Whether Qdrant scores this vector by a distance (lower is better) that must be mapped."""
        return (
            self.schema.distance == "euclid"
            and vector_name not in self.schema.sparse
            and vector_name not in self.schema.multi
        )

    def query_vector(self, query: VectorQuery) -> Any:
        """The vector as Qdrant wants it: a multivector field takes a list of query vectors."""
        vector = query.vector
        if query.using in self.schema.multi and not isinstance(vector, SparseVector) and not is_multi(vector):
            return [to_qdrant_vector(vector)]
        return to_qdrant_vector(vector)

    def shortlist(
        self, query: VectorQuery, params: models.SearchParams | None, slotted: frozenset[str]
    ) -> list[models.Prefetch] | None:
        """The candidates of a MaxSim list past the exact-scan size: the list's depth from each of the
        multivector's slots by its own graph (service/store/slots.py), for Qdrant to rescore their
        union exactly. None where the list is scanned exactly, or the collection has no slots for it."""
        if query.using not in slotted or isinstance(query.vector, SparseVector):
            return None
        if params is not None and params.exact:
            return None
        vector = unit_mean(query.vector) if is_multi(query.vector) else to_qdrant_vector(query.vector)
        return [
            models.Prefetch(
                query=vector, using=slot, limit=query.limit, filter=query.query_filter, params=params
            )
            for slot in slot_names(query.using, self.schema.slots[query.using])
        ]

    def _plain(
        self,
        query: VectorQuery,
        limit: int,
        threshold: float | None,
        params: models.SearchParams | None,
        slotted: frozenset[str],
    ) -> dict[str, Any]:
        """The fields of one list by similarity alone, as a Prefetch and a QueryRequest both take them."""
        return {
            "prefetch": self.shortlist(dataclasses.replace(query, limit=limit), params, slotted),
            "query": self.query_vector(query),
            "using": query.using,
            "limit": limit,
            "filter": query.query_filter,
            "score_threshold": qdrant_threshold(threshold, self.is_distance(query.using)),
            "params": None if isinstance(query.vector, SparseVector) else params,
        }

    def prefetch(
        self,
        query: VectorQuery,
        threshold: float | None,
        params: models.SearchParams | None,
        slotted: frozenset[str] = frozenset(),
    ) -> models.Prefetch:
        """One candidate list; with a penalty, its scores become `score - weight x payload[field]`.

        The threshold applies to the list's own similarity, before the penalty and any fusion. A
        penalised list is the best `limit` after the penalty among PENALTY_OVERFETCH times as many by
        similarity: taking only `limit` would keep the penalised hubs in the list (at the bottom), and
        their low scores would skew the spread DBSF normalises by.
        """
        if query.penalty is None:
            return models.Prefetch(**self._plain(query, query.limit, threshold, params, slotted))
        plain = models.Prefetch(
            **self._plain(query, query.limit * PENALTY_OVERFETCH, threshold, params, slotted)
        )
        return models.Prefetch(prefetch=[plain], query=penalty_formula(query), limit=query.limit)

    def request(
        self,
        q: VectorQuery,
        payload: bool,
        params: models.SearchParams | None,
        slotted: frozenset[str] = frozenset(),
    ) -> models.QueryRequest:
        """One list of a batch query; `payload=False` asks for ids and scores only."""
        with_payload: Any = payload
        if q.penalty is None:
            return models.QueryRequest(
                **self._plain(q, q.limit, q.score_threshold, params, slotted), with_payload=with_payload
            )
        # The plain list (with its threshold) as the prefetch, the formula on top: penalised once.
        plain = self._plain(q, q.limit * PENALTY_OVERFETCH, q.score_threshold, params, slotted)
        return models.QueryRequest(
            prefetch=[models.Prefetch(**plain)],
            query=penalty_formula(q),
            limit=q.limit,
            with_payload=with_payload,
        )
