"""Search routes: parse, call the search service, shape the answer."""

from __future__ import annotations

from typing import Annotated

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from service.api.controllers import ApiController
from service.api.errors import error_responses
from service.domain.rollout import Caller
from service.schemas import (
    AnimeRecord,
    ImageSearchRequest,
    MultimodalSearchRequest,
    SearchRequest,
    SearchResponse,
)
from service.search.search_service import SearchService

AnimeIdPath = Annotated[
    str,
    PathParameter(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$", description="Anime id."
    ),
]


class SearchController(ApiController, part="search", role="search"):
    @post(
        "/",
        operation_id="searchText",
        status_code=200,
        summary="Search anime by natural-language text",
        responses=error_responses(400, 404, 422, 502, 503),
    )
    async def search_text(
        self,
        data: JSONBody[SearchRequest],
        search: NamedDependency[SearchService],
        caller: NamedDependency[Caller],
    ) -> SearchResponse:
        return await search.search_text(data, caller)

    @post(
        "/image",
        operation_id="searchImage",
        status_code=200,
        summary="Search anime by a picture (cover art, screenshot): picture and thumbnail vectors, fused",
        responses=error_responses(400, 413, 415, 422, 502, 503),
    )
    async def search_image(
        self, data: JSONBody[ImageSearchRequest], search: NamedDependency[SearchService]
    ) -> SearchResponse:
        return await search.search_image(data)

    @post(
        "/multimodal",
        operation_id="searchMultimodal",
        status_code=200,
        summary="Search by text and/or picture with weights; a missing part falls back to the other",
        responses=error_responses(400, 404, 413, 415, 422, 502, 503),
    )
    async def search_multimodal(
        self,
        data: JSONBody[MultimodalSearchRequest],
        search: NamedDependency[SearchService],
        caller: NamedDependency[Caller],
    ) -> SearchResponse:
        return await search.search_multimodal(data, caller)

    @get(
        "/by-id/{anime_id:str}",
        operation_id="searchById",
        summary="Get one anime by id",
        responses=error_responses(404, 422, 503),
    )
    async def by_id(self, anime_id: AnimeIdPath, search: NamedDependency[SearchService]) -> AnimeRecord:
        return await search.get_anime(anime_id)
