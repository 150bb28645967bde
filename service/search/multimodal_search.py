"""Text and/or picture with weights (POST /api/v1/search/multimodal).

Every list (the text query's, CLIP's text-to-picture lists, the picture's) is asked in one batch and
fused here with the request's ranking; a part whose model is missing degrades the answer instead of
failing it, as long as another part answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

from service.domain.vectors import IMAGE_VECTORS
from service.platform.errors import DependencyUnavailable
from service.runtime import Runtime, TextModel
from service.schemas import MultimodalSearchRequest, SearchResponse
from service.search.fusion import Candidate, RankedList, fuse
from service.search.query_encoders import QueryEncoders
from service.search.questions import RequestQuestion
from service.search.results import documented_results, search_answer
from service.search.text_lists import TextLists
from service.search.text_mode import choose_text_mode, lexical_indexed
from service.store.filters import build_filter
from service.store.types import VectorQuery


@dataclass(frozen=True)
class MultimodalQuestion(RequestQuestion[MultimodalSearchRequest]):
    """`query`: the request's text, checked (None when only a picture was given)."""

    endpoint: ClassVar[str] = "search/multimodal"


@dataclass(frozen=True)
class _List:
    """One candidate list: which part it serves and what it asks the store."""

    name: str
    part: str
    query: VectorQuery


class MultimodalSearch:
    def __init__(self, runtime: Runtime, encoders: QueryEncoders, lists: TextLists) -> None:
        self.runtime = runtime
        self.encoders = encoders
        self.text_lists = lists
        self.depth = runtime.settings.fusion_candidates

    async def answer(self, question: MultimodalQuestion) -> SearchResponse:
        # A new answer needs the store: 503 at once while it is down, before anything is encoded.
        await self.runtime.store.refuse_if_down()
        started = time.perf_counter()
        request, query, model = question.request, question.query, question.model
        query_filter = build_filter(request.filters)

        jobs: list[tuple[str, Awaitable[list[_List]]]] = []
        if query is not None:
            jobs.append(("text", self._text(query, query_filter, model)))
            jobs.append(("text (cross-modal)", self._cross_modal(query, query_filter)))
        if request.image is not None:
            jobs.append(("image", self._picture(request.image, query_filter)))
        outcomes = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)

        lists: list[_List] = []
        degraded: list[str] = []
        failures: list[DependencyUnavailable] = []
        for (label, _), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, DependencyUnavailable):
                failures.append(outcome)
                degraded.append(f"{label}: {outcome.message}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                lists.extend(outcome)
        if not lists:
            raise failures[0]

        # Candidates as ids and scores; the documents of what survives fusion come in one more call.
        hits = await self.runtime.store.search_many([item.query for item in lists], payload=False)
        ranked = [
            RankedList(item.name, item.part, [Candidate(h.anime_id, h.score) for h in found])
            for item, found in zip(lists, hits, strict=True)
        ]
        weights = part_weights(sorted({item.part for item in lists}), request)
        fused = fuse(ranked, weights, request.ranking, limit=request.limit)
        if request.score_threshold is not None:
            fused = [f for f in fused if f.score >= request.score_threshold]
        results = await documented_results(self.runtime, fused)
        return search_answer(
            self.runtime,
            started,
            model.manifest,
            results,
            text_version=model.version if query is not None else None,
            ranking=request.ranking,
            weights=weights,
            vectors=[item.name for item in lists],
            degraded=degraded,
        )

    async def _text(self, query: str, query_filter: Any, model: TextModel) -> list[_List]:
        embedding = await self.encoders.text(query, model)
        # No `text_mode` in a multimodal request: the deployment's mode, where the collection allows it.
        mode = choose_text_mode(
            None, self.runtime.settings.text_search_mode, lexical=lexical_indexed(self.runtime.store.schema)
        )
        queries = await self.text_lists.build(query, embedding, query_filter, mode, model)
        return [_List(q.using, "text", q) for q in queries]

    async def _cross_modal(self, query: str, query_filter: Any) -> list[_List]:
        vector = await self.encoders.clip_text(query)
        if vector is None:
            return []
        return [
            _List(f"clip_text->{name}", "text", VectorQuery(name, vector.tolist(), self.depth, query_filter))
            for name in IMAGE_VECTORS
        ]

    async def _picture(self, data: str, query_filter: Any) -> list[_List]:
        vector = (await self.encoders.picture(data)).tolist()
        return [
            _List(name, "image", VectorQuery(name, vector, self.depth, query_filter))
            for name in IMAGE_VECTORS
        ]


def part_weights(parts: list[str], request: MultimodalSearchRequest) -> dict[str, float]:
    """The request's weights of the parts that answered, summing to 1."""
    requested = {"text": request.text_weight, "image": request.image_weight}
    weights = {part: requested[part] for part in parts}
    if not any(weights.values()):
        weights = dict.fromkeys(parts, 1.0)  # the only part given carries the answer, whatever its weight
    total = sum(weights.values())
    return {part: w / total for part, w in weights.items()}
