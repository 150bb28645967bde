""" "More like this": neighbours of a stored anime by content, visuals, or all of its vectors.

The anime's own stored vectors are the queries (no re-encoding), it is excluded by point id, and a
whole batch of ids is answered with two store round trips (one multi-get, one batch query).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from service.domain.rollout import Caller
from service.domain.vectors import IMAGE_VECTORS, TEXT_LEXICAL_VECTOR, TextVectorNames
from service.platform.errors import NotFound, ServiceError
from service.runtime import Runtime, TextModel
from service.schemas import (
    AnimeResult,
    ErrorBody,
    SearchFilters,
    SimilarityBatchItem,
    SimilarityBatchRequest,
    SimilarityKind,
    SimilarityResponse,
)
from service.search.cached_answers import CachedAnswers
from service.search.fusion import SIMILARITY_FUSION, Candidate, Fused, RankedList, fuse
from service.search.results import elapsed_ms, fused_results, query_info, timed
from service.store.filters import build_filter
from service.store.types import ScorePenalty, StoredRecord, VectorQuery


def kind_vectors(kind: str, names: TextVectorNames) -> tuple[str, ...]:
    """The vectors a kind of similarity compares, with a text model version's own content vectors."""
    content = (names.title, names.facts, names.synopsis, TEXT_LEXICAL_VECTOR, names.sparse)
    return {"anime": content, "visual": IMAGE_VECTORS, "vector": (*content, *IMAGE_VECTORS)}[kind]


# Version 1's names (what a collection built before versions has).
KIND_VECTORS: dict[str, tuple[str, ...]] = {
    kind: kind_vectors(kind, TextVectorNames.of(1)) for kind in ("anime", "visual", "vector")
}


class VectorNotFound(NotFound):
    code = "vector_not_found"


@dataclass(frozen=True)
class SimilarityQuestion:
    """One "more like this" as its use case gets it, with the text model version answering."""

    kind: SimilarityKind
    anime_id: str
    limit: int
    filters: SearchFilters | None
    score_threshold: float | None
    model: TextModel

    @property
    def cache_endpoint(self) -> str:
        return "similarity"

    @property
    def cache_request(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "anime_id": self.anime_id,
            "limit": self.limit,
            "filters": self.filters,
            "threshold": self.score_threshold,
            "text_version": self.model.version,
        }


@dataclass(frozen=True)
class _Plan:
    anime_id: str
    record: StoredRecord | None
    vectors: tuple[str, ...]
    error: ServiceError | None


class SimilaritySearch:
    """The use case: neighbours of one anime (`answer`, what the answer cache wraps) or of many."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.candidates = runtime.settings.fusion_candidates

    async def answer(self, question: SimilarityQuestion) -> SimilarityResponse:
        started = time.perf_counter()
        ((plan, results),) = await self.answer_many(
            question.kind,
            [question.anime_id],
            question.limit,
            question.filters,
            question.score_threshold,
            question.model,
        )
        if plan.error is not None:
            raise plan.error
        model = question.model
        return SimilarityResponse(
            anime_id=question.anime_id,
            kind=question.kind,
            results=results,
            total=len(results),
            query_info=query_info(
                self.runtime,
                started,
                model.manifest,
                text_version=model.version,
                ranking=SIMILARITY_FUSION if len(plan.vectors) > 1 else None,
                vectors=list(plan.vectors),
            ),
        )

    def _plan(self, kind: str, anime_id: str, record: StoredRecord | None, model: TextModel) -> _Plan:
        if record is None:
            return _Plan(anime_id, None, (), NotFound(f"no anime with id '{anime_id}'", anime_id=anime_id))
        vectors = kind_vectors(kind, model.names)
        names = tuple(n for n in vectors if n in record.vectors)
        if not names:
            wanted = ", ".join(vectors)
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

    async def answer_many(
        self,
        kind: str,
        anime_ids: list[str],
        limit: int,
        filters: SearchFilters | None,
        score_threshold: float | None,
        model: TextModel,
    ) -> list[tuple[_Plan, list[AnimeResult]]]:
        """Three store round trips whatever the number of ids: the query anime's vectors, every
        candidate list in one batch (ids and scores only), then the payloads of what made the cut."""
        store = self.runtime.store
        records = await store.get_many(list(dict.fromkeys(anime_ids)))
        plans = [self._plan(kind, anime_id, records.get(anime_id), model) for anime_id in anime_ids]
        query_filter = build_filter(filters)
        # One candidate more than needed, and the anime itself dropped from each list afterwards: a
        # must-not filter on its id would cost a per-point check in local mode, and ranks the same.
        depth = max(limit, self.candidates) + 1
        # The stored synopsis vectors are already centred; the hub correction applies as in text search.
        calibration = await self.runtime.calibration(model)
        hub = ScorePenalty(model.names.hubness, calibration.hub_weight) if calibration is not None else None
        queries = [
            VectorQuery(
                name,
                plan.record.vectors[name],
                depth,
                query_filter,
                score_threshold,
                hub if name == model.names.synopsis else None,
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
            fused = (
                fuse(ranked, dict.fromkeys(plan.vectors, 1.0), SIMILARITY_FUSION, limit=limit)
                if ranked
                else []
            )
            ranked_per_plan.append(fused)
        wanted = list(dict.fromkeys(item.key for fused in ranked_per_plan for item in fused))
        payloads = await store.get_many(wanted, with_vectors=False)
        out: list[tuple[_Plan, list[AnimeResult]]] = []
        for plan, fused in zip(plans, ranked_per_plan, strict=True):
            if plan.error is not None or plan.record is None:
                out.append((plan, []))
                continue
            out.append((plan, fused_results(fused, payloads, plan.record.payload, _score_of(plan.vectors))))
        return out


def _score_of(vectors: tuple[str, ...]) -> Callable[[Fused], float]:
    """One list: its own similarity is the score (a client can set a threshold on it); several: the
    fused one."""
    if len(vectors) == 1:
        (only,) = vectors
        return lambda item: item.list_scores[only]
    return lambda item: item.score


class SimilarityService:
    """What the similarity routes call; the single-id answer goes through the answer cache."""

    def __init__(self, runtime: Runtime) -> None:
        assert runtime.cache is not None
        self.runtime = runtime
        self.search = SimilaritySearch(runtime)
        self.answers = CachedAnswers(self.search, runtime.cache, SimilarityResponse)

    async def similar(
        self,
        kind: SimilarityKind,
        anime_id: str,
        *,
        limit: int,
        filters: SearchFilters | None,
        score_threshold: float | None,
        caller: Caller | None = None,
        model_version: int | None = None,
    ) -> SimilarityResponse:
        started = time.perf_counter()
        model = await self.runtime.choose_model(caller, model_version)
        question = SimilarityQuestion(kind, anime_id, limit, filters, score_threshold, model)
        with self.runtime.metrics.text_version("similarity", model.version):
            answer = await self.answers.answer(question)
        return timed(answer, started)

    async def similar_batch(
        self, request: SimilarityBatchRequest, caller: Caller | None = None
    ) -> tuple[list[SimilarityBatchItem], float]:
        started = time.perf_counter()
        model = await self.runtime.choose_model(caller, request.model_version)
        with self.runtime.metrics.text_version("similarity/batch", model.version):
            answers = await self.search.answer_many(
                request.kind,
                list(request.anime_ids),
                request.limit,
                request.filters,
                request.score_threshold,
                model,
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
        return items, elapsed_ms(started)
