"""Facet route: the values a search can filter on, with counts, for a client's filter controls."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service.api.controllers import ApiController
from service.api.errors import error_responses
from service.schemas import FacetsResponse
from service.search.search_service import SearchService

FacetLimitQuery = Annotated[
    int, QueryParameter(ge=1, le=1000, description="How many values per list, most frequent first (1..1000).")
]


class FacetsController(ApiController, part="facets", role="search"):
    @get(
        "/",
        operation_id="listFacets",
        summary="Genres, themes, types and statuses a search can filter on, with counts; the years held",
        responses=error_responses(422, 503),
    )
    async def list_facets(
        self, search: NamedDependency[SearchService], limit: FacetLimitQuery = 200
    ) -> FacetsResponse:
        return await search.facets(limit)
