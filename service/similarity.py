""" "More like this": neighbours of a stored anime by content, visuals, or all of its vectors.

The anime's own stored vectors are the queries (no re-encoding), it is excluded by point id, and a
whole batch of ids is answered with two store round trips (one multi-get, one batch query).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec

from service.errors import NotFound, ServiceError
from service.explain import explain
from service.fusion import Candidate, Fused, RankedList, fuse
from service.runtime import (
    FACTS_VECTOR,
    IMAGE_VECTORS,
    SYNOPSIS_VECTOR,
    TEXT_LEXICAL_VECTOR,
    TEXT_SPARSE_VECTOR,
    TITLE_VECTOR,
    Runtime,
)
from service.schemas import (
    AnimeResult,
    ErrorBody,
    QueryInfo,
    SearchFilters,
    SimilarityBatchItem,
    SimilarityBatchRequest,
    SimilarityKind,
    SimilarityResponse,
)
from service.search import to_result
from service.store.filters import build_filter
from service.store.types import ScorePenalty, StoredRecord, VectorQuery

CONTENT_VECTORS = (TITLE_VECTOR, FACTS_VECTOR, SYNOPSIS_VECTOR, TEXT_LEXICAL_VECTOR, TEXT_SPARSE_VECTOR)
KIND_VECTORS: dict[str, tuple[str, ...]] = {
    "anime": CONTENT_VECTORS,
    "visual": IMAGE_VECTORS,
    "vector": (*CONTENT_VECTORS, *IMAGE_VECTORS),
}


class VectorNotFound(NotFound):
    code = "vector_not_found"


@dataclass(frozen=True)
class _Plan:
    anime_id: str
    record: StoredRecord | None
    vectors: tuple[str, ...]
    error: ServiceError | None


class SimilarityService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.candidates = runtime.settings.fusion_candidates

    def _plan(self, kind: str, anime_id: str, record: StoredRecord | None) -> _Plan:
        if record is None:
            return _Plan(anime_id, None, (), NotFound(f"no anime with id '{anime_id}'", anime_id=anime_id))
        names = tuple(n for n in KIND_VECTORS[kind] if n in record.vectors)
        if not names:
            wanted = ", ".join(KIND_VECTORS[kind])
            return _Plan(
                anime_id,
                record,
                (),
                VectorNotFound(
                    f"anime '{anime_id}' has none of the vectors {kind} similarity uses ({wanted})",
                    anime_id=anime_id,
                    kind=kind,
                ),
            )
        return _Plan(anime_id, record, names, None)

    async def _similar_many(
        self,
        kind: str,
        anime_ids: list[str],
        limit: int,
        filters: SearchFilters | None,
        score_threshold: float | None,
    ) -> list[tuple[_Plan, list[AnimeResult]]]:
        """Three store round trips whatever the number of ids: the query anime's vectors, every
        candidate list in one batch (ids and scores only), then the payloads of what made the cut."""
        store = self.runtime.store
        records = await store.get_many(list(dict.fromkeys(anime_ids)))
        plans = [self._plan(kind, anime_id, records.get(anime_id)) for anime_id in anime_ids]
        query_filter = build_filter(filters)
        # One candidate more than needed, and the anime itself dropped from each list afterwards: a
        # must-not filter on its id would cost a per-point check in local mode, and ranks the same.
        depth = max(limit, self.candidates) + 1
        # The stored synopsis vectors are already centred; the hub correction applies as in text search.
        calibration = await self.runtime.calibration()
        hub = ScorePenalty("hubness", calibration.hub_weight) if calibration is not None else None
        queries = [
            VectorQuery(
                name,
                plan.record.vectors[name],
                depth,
                query_filter,
                score_threshold,
                hub if name == SYNOPSIS_VECTOR else None,
            )
            for plan in plans
            if plan.record is not None
            for name in plan.vectors
        ]
        answers = iter(await store.search_many(queries, payload=False))
        ranked_per_plan: list[list[Fused]] = []
        for plan in plans:
            ranked = []
            for name in plan.vectors:  # empty for an unknown anime
                hits = [h for h in next(answers) if h.anime_id != plan.anime_id]
                ranked.append(RankedList(name, name, [Candidate(h.anime_id, h.score) for h in hits]))
            # One list: its own similarity is the score. Several (other models, other scales): rank fusion.
            fused = fuse(ranked, dict.fromkeys(plan.vectors, 1.0), "rrf", limit=limit) if ranked else []
            ranked_per_plan.append(fused)
        wanted = list(dict.fromkeys(item.key for fused in ranked_per_plan for item in fused))
        payloads = await store.get_many(wanted, with_vectors=False)
        out: list[tuple[_Plan, list[AnimeResult]]] = []
        for plan, fused in zip(plans, ranked_per_plan, strict=True):
            if plan.error is not None or plan.record is None:
                out.append((plan, []))
                continue
            results = []
            for item in fused:
                found = payloads.get(item.key)
                if found is None:
                    continue  # deleted between the two calls
                score = item.list_scores[plan.vectors[0]] if len(plan.vectors) == 1 else item.score
                explanation = explain(item, plan.record.payload, found.payload)
                results.append(to_result(item.key, score, found.payload, explanation=explanation))
            out.append((plan, results))
        return out

    def _info(self, started: float, vectors: tuple[str, ...]) -> QueryInfo:
        manifest = self.runtime.text.manifest
        return QueryInfo(
            engine=self.runtime.engine.name,
            model=manifest.source,
            model_version=manifest.model_version,
            store=self.runtime.store.engine,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
            ranking="rrf" if len(vectors) > 1 else None,
            vectors=list(vectors),
        )

    async def similar(
        self,
        kind: SimilarityKind,
        anime_id: str,
        *,
        limit: int,
        filters: SearchFilters | None,
        score_threshold: float | None,
    ) -> SimilarityResponse:
        started = time.perf_counter()
        request = {
            "kind": kind,
            "anime_id": anime_id,
            "limit": limit,
            "filters": filters,
            "threshold": score_threshold,
        }
        assert self.runtime.cache is not None
        answer, cached = await self.runtime.cache.answer(
            "similarity",
            request,
            SimilarityResponse,
            lambda: self._similar(
                kind, anime_id, limit=limit, filters=filters, score_threshold=score_threshold
            ),
        )
        info = msgspec.structs.replace(answer.query_info, took_ms=_ms(started), cached=cached)
        return msgspec.structs.replace(answer, query_info=info)

    async def _similar(
        self,
        kind: SimilarityKind,
        anime_id: str,
        *,
        limit: int,
        filters: SearchFilters | None,
        score_threshold: float | None,
    ) -> SimilarityResponse:
        started = time.perf_counter()
        ((plan, results),) = await self._similar_many(kind, [anime_id], limit, filters, score_threshold)
        if plan.error is not None:
            raise plan.error
        return SimilarityResponse(
            anime_id=anime_id,
            kind=kind,
            results=results,
            total=len(results),
            query_info=self._info(started, plan.vectors),
        )

    async def similar_batch(self, request: SimilarityBatchRequest) -> tuple[list[SimilarityBatchItem], float]:
        started = time.perf_counter()
        answers = await self._similar_many(
            request.kind, list(request.anime_ids), request.limit, request.filters, request.score_threshold
        )
        items = []
        for plan, results in answers:
            if plan.error is not None:
                items.append(
                    SimilarityBatchItem(
                        anime_id=plan.anime_id,
                        status_code=plan.error.status_code,
                        error=ErrorBody(
                            code=plan.error.code, message=plan.error.message, details=plan.error.details
                        ),
                    )
                )
            else:
                items.append(SimilarityBatchItem(anime_id=plan.anime_id, status_code=200, results=results))
        return items, round((time.perf_counter() - started) * 1000, 3)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
