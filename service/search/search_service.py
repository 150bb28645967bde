"""What the search routes call: one method per endpoint, and the wiring of the search use cases.

A text search goes: route -> `SearchService.search_text` (checks the query, picks the text model
version) -> `CachedAnswers` (the answer cache) -> `TextSearch` (the use case) -> `QueryEncoders` (the
embedding cache, then the encoder) and the store -> back. Each step is a plain call to the next one
down; nothing below calls back up.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np

from service.cache.policy import CachedQueryEncoder, QueryEmbedding
from service.domain.rollout import Caller
from service.platform.errors import NotFound
from service.runtime import Runtime, TextModel
from service.schemas import (
    AnimeRecord,
    FacetsResponse,
    ImageSearchRequest,
    MultimodalSearchRequest,
    SearchRequest,
    SearchResponse,
    TextMode,
)
from service.search.cached_answers import CachedAnswers
from service.search.facets import Facets
from service.search.fusion import TEXT_FUSION
from service.search.image_search import ImageQuestion, ImageSearch
from service.search.multimodal_search import MultimodalQuestion, MultimodalSearch
from service.search.query_encoders import QueryEncoders
from service.search.results import anime_record, timed
from service.search.text_lists import TextLists
from service.search.text_mode import lexical_indexed
from service.search.text_search import TextQuestion, TextSearch, checked_query
from service.store.types import VectorQuery


class SearchService:
    def __init__(
        self, runtime: Runtime, *, text_fusion: str = TEXT_FUSION, hub_correction: bool = True
    ) -> None:
        """Wires the use cases: every query encoder behind the embedding cache, every use case behind
        the answer cache. `text_fusion` and `hub_correction` exist for the relevance harness's
        ablations: the service itself always runs with the measured defaults."""
        assert runtime.cache is not None
        self.runtime = runtime
        cache = runtime.cache
        self.encoders = QueryEncoders(runtime, wrap=partial(CachedQueryEncoder, cache=cache))
        self.text_lists = TextLists(runtime, hub_correction=hub_correction)
        self.text = CachedAnswers(
            TextSearch(runtime, self.encoders, self.text_lists, text_fusion=text_fusion),
            cache,
            SearchResponse,
        )
        self.image = CachedAnswers(ImageSearch(runtime, self.encoders), cache, SearchResponse)
        self.multimodal = CachedAnswers(
            MultimodalSearch(runtime, self.encoders, self.text_lists), cache, SearchResponse
        )
        self.facet_counts = Facets(runtime.store)

    # -- the endpoints ---------------------------------------------------------------------------

    async def search_text(self, request: SearchRequest, caller: Caller | None = None) -> SearchResponse:
        query = checked_query(request.query)
        model = await self.runtime.choose_model(caller, request.model_version)
        with self.runtime.metrics.text_version("search", model.version):
            started = time.perf_counter()
            return timed(await self.text.answer(TextQuestion(request, query, model)), started)

    async def search_image(self, request: ImageSearchRequest) -> SearchResponse:
        started = time.perf_counter()
        return timed(await self.image.answer(ImageQuestion(request)), started)

    async def search_multimodal(
        self, request: MultimodalSearchRequest, caller: Caller | None = None
    ) -> SearchResponse:
        query = checked_query(request.query) if request.query is not None else None
        model = await self.runtime.choose_model(caller, request.model_version)
        with self.runtime.metrics.text_version("search/multimodal", model.version):
            started = time.perf_counter()
            return timed(await self.multimodal.answer(MultimodalQuestion(request, query, model)), started)

    async def get_anime(self, anime_id: str) -> AnimeRecord:
        hit = await self.runtime.store.get(anime_id)
        if hit is None:
            raise NotFound(f"no anime with id '{anime_id}'", anime_id=anime_id)
        return anime_record(anime_id, hit)

    async def facets(self, limit: int) -> FacetsResponse:
        return await self.facet_counts.answer(limit)

    # -- the parts, for the relevance harness and tests that look inside a search ----------------

    def hybrid_available(self) -> bool:
        return lexical_indexed(self.runtime.store.schema)

    async def embed_text(self, query: str, model: TextModel | None = None) -> QueryEmbedding:
        return await self.encoders.text(query, model or self.runtime.default_model)

    async def embed_image(self, data: str) -> np.ndarray:
        return await self.encoders.picture(data)

    async def text_queries(
        self,
        query: str,
        embedding: QueryEmbedding,
        query_filter: Any,
        mode: TextMode,
        model: TextModel | None = None,
    ) -> list[VectorQuery]:
        return await self.text_lists.build(
            query, embedding, query_filter, mode, model or self.runtime.default_model
        )
