"""Text search: a question in words, ranked anime out (POST /api/v1/search). No HTTP, no cache here."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

from service.domain.composition import normalize_query
from service.platform.errors import InvalidInput
from service.runtime import Runtime, TextModel
from service.schemas import AnimeResult, SearchRequest, SearchResponse
from service.search.fused_search import fused_hits
from service.search.fusion import TEXT_FUSION, TEXT_WEIGHTS, Candidate, RankedList, fuse_confident
from service.search.query_encoders import QueryEncoders
from service.search.questions import RequestQuestion
from service.search.results import documented_results, hit_result, search_answer
from service.search.text_lists import TextLists
from service.search.text_mode import choose_text_mode, lexical_indexed
from service.store.filters import build_filter
from service.store.types import VectorQuery


def checked_query(text: str) -> str:
    """The query as it is embedded; refused (400) when nothing is left of it."""
    query = normalize_query(text)
    if not query:
        raise InvalidInput("query is empty once whitespace and control characters are removed", field="query")
    return query


@dataclass(frozen=True)
class TextQuestion(RequestQuestion[SearchRequest]):
    """A text search as its use case gets it: the request, its checked query, the version answering."""

    endpoint: ClassVar[str] = "search"
    query: str


class TextSearch:
    """`text_fusion` exists for the relevance harness's ablations: the service always runs "confident"."""

    def __init__(
        self, runtime: Runtime, encoders: QueryEncoders, lists: TextLists, *, text_fusion: str = TEXT_FUSION
    ) -> None:
        self.runtime = runtime
        self.encoders = encoders
        self.lists = lists
        self.text_fusion = text_fusion

    async def answer(self, question: TextQuestion) -> SearchResponse:
        store = self.runtime.store
        # A new answer needs the store: 503 at once while it is down, before the query is encoded.
        await store.refuse_if_down()
        started = time.perf_counter()
        request, query, model = question.request, question.query, question.model
        mode = choose_text_mode(
            request.text_mode, self.runtime.settings.text_search_mode, lexical=lexical_indexed(store.schema)
        )
        embedding = await self.encoders.text(query, model)
        lists = await self.lists.build(query, embedding, build_filter(request.filters), mode, model)
        if self.text_fusion == "confident":
            results = await self._fuse_here(lists, request.limit, request.score_threshold, model)
        else:
            hits = await fused_hits(
                store, lists, self.text_fusion, limit=request.limit, score_threshold=request.score_threshold
            )
            results = [hit_result(h) for h in hits]
        return search_answer(
            self.runtime,
            started,
            model.manifest,
            results,
            text_version=model.version,
            tokens=embedding.tokens,
            truncated=embedding.truncated,
            mode=mode,
            ranking=self.text_fusion,
            vectors=[q.using for q in lists],
        )

    async def _fuse_here(
        self, lists: list[VectorQuery], limit: int, score_threshold: float | None, model: TextModel
    ) -> list[AnimeResult]:
        """Candidates of every list in one batch (ids and scores), fused here, then the results."""
        store = self.runtime.store
        queries = [dataclasses.replace(q, score_threshold=score_threshold) for q in lists]
        found = await store.search_many(queries, payload=False)
        ranked = [
            RankedList(q.using, q.using, [Candidate(h.anime_id, h.score) for h in hits])
            for q, hits in zip(queries, found, strict=True)
        ]
        sparse = {q.using: q.limit for q in queries if q.using in store.schema.sparse}
        weights = {q.using: TEXT_WEIGHTS.get(model.names.base_name(q.using), 1.0) for q in queries}
        fused = fuse_confident(ranked, weights, limit=limit, zero_filled=sparse)
        return await documented_results(self.runtime, fused)
