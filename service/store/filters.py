"""Search filters and their translation into Qdrant filter conditions (pure).

The `SearchFilters` struct lives here rather than with the HTTP bodies (service/schemas.py re-exports
it) so the store never imports the API's schemas. User strings only ever become `MatchValue`/`MatchAny`
values of fixed keys: no user text reaches a key name or a query language.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
from qdrant_client import models

from service.domain.documents import AnimeStatus, AnimeType

# A genre or theme name: genres and themes are both short labels from one vocabulary.
TagName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Year = Annotated[int, msgspec.Meta(ge=1900, le=2100)]


class SearchFilters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    genres: (
        Annotated[list[TagName], msgspec.Meta(max_length=20, description="Any of these genres.")] | None
    ) = None
    themes: (
        Annotated[list[TagName], msgspec.Meta(max_length=20, description="Any of these themes.")] | None
    ) = None
    year_min: Year | None = None
    year_max: Year | None = None
    type: AnimeType | Annotated[list[AnimeType], msgspec.Meta(max_length=8)] | None = None
    status: AnimeStatus | Annotated[list[AnimeStatus], msgspec.Meta(max_length=4)] | None = None

    def __post_init__(self) -> None:
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError("year_min must not exceed year_max")


# Payload fields that get an index on a Qdrant server, and their schema.
PAYLOAD_INDEXES: dict[str, models.PayloadSchemaType] = {
    "anime_id": models.PayloadSchemaType.KEYWORD,
    "genres": models.PayloadSchemaType.KEYWORD,
    "themes": models.PayloadSchemaType.KEYWORD,
    "studios": models.PayloadSchemaType.KEYWORD,
    "type": models.PayloadSchemaType.KEYWORD,
    "status": models.PayloadSchemaType.KEYWORD,
    "year": models.PayloadSchemaType.INTEGER,
    # Which languages an anime's synopses are in: the hub reference set is its English ones.
    "synopsis_languages": models.PayloadSchemaType.KEYWORD,
}


def _any_of(key: str, value: str | Sequence[str]) -> models.FieldCondition:
    values = [value] if isinstance(value, str) else list(value)
    if len(values) == 1:
        return models.FieldCondition(key=key, match=models.MatchValue(value=values[0]))
    return models.FieldCondition(key=key, match=models.MatchAny(any=values))


# Types a search leaves out unless its own type filter names them: the catalogue may hold entries that are
# not anime (live-action films in bangumi's data), which an anime search should not answer with.
HIDDEN_TYPES = ("LIVE_ACTION",)


def build_filter(
    filters: SearchFilters | None, hidden_types: Sequence[str] = HIDDEN_TYPES
) -> models.Filter | None:
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    if hidden_types and (filters is None or not filters.type):  # a type filter says what it wants itself
        must_not.append(_any_of("type", hidden_types))
    if filters is not None:
        if filters.genres:
            must.append(_any_of("genres", filters.genres))
        if filters.themes:
            must.append(_any_of("themes", filters.themes))
        if filters.year_min is not None or filters.year_max is not None:
            must.append(
                models.FieldCondition(
                    key="year", range=models.Range(gte=filters.year_min, lte=filters.year_max)
                )
            )
        if filters.type:
            must.append(_any_of("type", filters.type))
        if filters.status:
            must.append(_any_of("status", filters.status))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)
