"""Carrying out a fusion of store lists that service/search/fusion.py decided on: in Qdrant or here.

The use cases that fuse by RRF or DBSF (picture search; text search's ablations) call `fused_hits`;
it asks `fusion.runs_in_qdrant` where the fusion runs and either hands the lists to the store's one
Query API call or fetches them in one batch and sums here. One list is no fusion: its own similarity
is the score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from qdrant_client import models

from service.search.fusion import DEFAULT_RRF_K, Candidate, QdrantFusion, dbsf_sum, runs_in_qdrant
from service.store.qdrant_store import AnimeStore
from service.store.types import Hit, VectorQuery


async def fused_hits(
    store: AnimeStore,
    queries: Sequence[VectorQuery],
    fusion: QdrantFusion,
    *,
    limit: int,
    query_filter: models.Filter | None = None,
    score_threshold: float | None = None,
) -> list[Hit]:
    """The `limit` best anime of `queries` fused by `fusion`, each list held to the filter and the
    similarity threshold before fusion."""
    if len(queries) == 1:
        (hits,) = await store.search_lists(
            [dataclasses.replace(queries[0], limit=limit)],
            query_filter=query_filter,
            score_threshold=score_threshold,
        )
        return hits
    if runs_in_qdrant(fusion, over_distances=store.scores_by_distance([q.using for q in queries])):
        return await store.search_fused(
            queries,
            fusion=fusion,
            rrf_k=int(DEFAULT_RRF_K),
            limit=limit,
            query_filter=query_filter,
            score_threshold=score_threshold,
        )
    lists = await store.search_lists(queries, query_filter=query_filter, score_threshold=score_threshold)
    first: dict[str, Hit] = {}
    for hits in lists:
        for found in hits:
            first.setdefault(found.anime_id, found)
    fused = dbsf_sum([[Candidate(h.anime_id, h.score) for h in hits] for hits in lists], limit=limit)
    return [Hit(anime_id=c.key, score=c.score, payload=first[c.key].payload) for c in fused]
