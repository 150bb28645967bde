"""Similarity routes: "more like this" by content, visuals or all vectors, one id or a batch."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from service.api.controllers import ApiController
from service.api.errors import error_responses
from service.api.search_routes import AnimeIdPath
from service.domain.documents import AnimeStatus, AnimeType
from service.domain.rollout import Caller
from service.schemas import (
    SearchFilters,
    SimilarityBatchRequest,
    SimilarityBatchResponse,
    SimilarityKind,
    SimilarityResponse,
)
from service.search.similarity import SimilarityService

LimitQuery = Annotated[int, QueryParameter(ge=1, le=100, description="How many results (1..100).")]
YearQuery = Annotated[int | None, QueryParameter(ge=1900, le=2100)]


def _filters(
    genres: list[str] | None,
    themes: list[str] | None,
    year_min: int | None,
    year_max: int | None,
    type_: list[AnimeType] | None,
    status: list[AnimeStatus] | None,
) -> SearchFilters | None:
    raw = {
        "genres": genres,
        "themes": themes,
        "year_min": year_min,
        "year_max": year_max,
        "type": type_,
        "status": status,
    }
    present = {k: v for k, v in raw.items() if v}
    # convert() validates like a request body (bounds, enums, year order) and raises ValidationError -> 422.
    return msgspec.convert(present, SearchFilters) if present else None


class SimilarityController(ApiController, part="similarity", role="search"):
    @get(
        "/{kind:str}/{anime_id:str}",
        operation_id="similarAnime",
        summary="Anime similar to one anime: kind = anime (content), visual (pictures), vector (all)",
        responses=error_responses(404, 422, 503),
    )
    async def similar(
        self,
        kind: Annotated[SimilarityKind, PathParameter(description="anime, visual or vector")],
        anime_id: AnimeIdPath,
        similarity: NamedDependency[SimilarityService],
        caller: NamedDependency[Caller],
        limit: LimitQuery = 10,
        score_threshold: Annotated[float | None, QueryParameter(ge=-1e6, le=1e6)] = None,
        genres: Annotated[list[str] | None, QueryParameter(max_items=20)] = None,
        themes: Annotated[list[str] | None, QueryParameter(max_items=20)] = None,
        year_min: YearQuery = None,
        year_max: YearQuery = None,
        type_: Annotated[list[AnimeType] | None, QueryParameter(name="type", max_items=8)] = None,
        status: Annotated[list[AnimeStatus] | None, QueryParameter(max_items=4)] = None,
        model_version: Annotated[
            int | None,
            QueryParameter(ge=1, description="Admin only: compare with this text model version's vectors."),
        ] = None,
    ) -> SimilarityResponse:
        filters = _filters(genres, themes, year_min, year_max, type_, status)
        return await similarity.similar(
            kind,
            anime_id,
            limit=limit,
            filters=filters,
            score_threshold=score_threshold,
            caller=caller,
            model_version=model_version,
        )

    @post(
        "/batch",
        operation_id="similarBatch",
        status_code=200,
        summary="Similar anime for up to 50 ids in one call: exactly one answer per id, in order",
        responses=error_responses(400, 404, 422, 503),
    )
    async def batch(
        self,
        data: JSONBody[SimilarityBatchRequest],
        similarity: NamedDependency[SimilarityService],
        caller: NamedDependency[Caller],
    ) -> SimilarityBatchResponse:
        items, took_ms = await similarity.similar_batch(data, caller)
        return SimilarityBatchResponse(kind=data.kind, results=items, took_ms=took_ms)
