"""Picture search: cover art or a screenshot in, ranked anime out (POST /api/v1/search/image)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.domain.vectors import IMAGE_VECTORS
from service.runtime import Runtime
from service.schemas import ImageSearchRequest, SearchResponse
from service.search.fused_search import fused_hits
from service.search.fusion import IMAGE_FUSION
from service.search.query_encoders import QueryEncoders
from service.search.results import hit_result, search_answer
from service.store.filters import build_filter
from service.store.types import VectorQuery


@dataclass(frozen=True)
class ImageQuestion:
    request: ImageSearchRequest

    @property
    def cache_endpoint(self) -> str:
        return "search/image"  # one image model: no version in the key

    @property
    def cache_request(self) -> ImageSearchRequest:
        return self.request


class ImageSearch:
    def __init__(self, runtime: Runtime, encoders: QueryEncoders) -> None:
        self.runtime = runtime
        self.encoders = encoders
        self.depth = runtime.settings.fusion_candidates

    async def answer(self, question: ImageQuestion) -> SearchResponse:
        request = question.request
        # A new answer needs the store: 503 at once while it is down, before the picture is encoded.
        await self.runtime.store.refuse_if_down()
        started = time.perf_counter()
        vector = (await self.encoders.picture(request.image)).tolist()
        image = self.runtime.image
        assert image is not None  # `picture` refuses (503) without one
        query_filter = build_filter(request.filters)
        hits = await fused_hits(
            self.runtime.store,
            [VectorQuery(name, vector, self.depth, query_filter) for name in IMAGE_VECTORS],
            IMAGE_FUSION,
            limit=request.limit,
            score_threshold=request.score_threshold,
        )
        results = [hit_result(h) for h in hits]
        return search_answer(
            self.runtime, started, image.manifest, results, ranking=IMAGE_FUSION, vectors=list(IMAGE_VECTORS)
        )
