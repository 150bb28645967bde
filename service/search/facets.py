"""What a search can filter on: the genres, themes, types and statuses the collection holds, with counts.

A browser fills its filter controls from this, so it counts exactly what a search may return: the
filter of a search without filters (`build_filter(None)`) leaves out the hidden types here too.

Years come from a facet on `year` rather than two scrolls ordered by year: qdrant-edge refuses
`order_by`, and the facet runs in the same round as the others. A document's year lies in 1900..2100
(`AnimeDocument.year`), so a facet of YEAR_VALUES values sees every year the collection holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from service.schemas import FacetsResponse, FacetValue
from service.store.filters import build_filter
from service.store.qdrant_store import AnimeStore
from service.store.types import FacetCount

# Each list of the answer and the payload key it counts.
FACET_KEYS: Mapping[str, str] = {
    "genres": "genres",
    "themes": "themes",
    "types": "type",
    "statuses": "status",
}
YEAR_VALUES = 2100 - 1900 + 1


def _values(counts: Sequence[FacetCount]) -> list[FacetValue]:
    # Keyword fields hold strings; local mode, which reads raw payloads, could also meet a stray number.
    return [FacetValue(value=c.value, count=c.count) for c in counts if isinstance(c.value, str)]


def facets_response(
    counts: Mapping[str, Sequence[FacetCount]], years: Sequence[FacetCount], total: int
) -> FacetsResponse:
    """The answer from each list's counts (in the store's order), the year counts and the total."""
    held = [c.value for c in years if isinstance(c.value, int) and not isinstance(c.value, bool)]
    return FacetsResponse(
        genres=_values(counts["genres"]),
        themes=_values(counts["themes"]),
        types=_values(counts["types"]),
        statuses=_values(counts["statuses"]),
        year_min=min(held, default=None),
        year_max=max(held, default=None),
        total=total,
    )


class Facets:
    def __init__(self, store: AnimeStore) -> None:
        self.store = store

    async def answer(self, limit: int) -> FacetsResponse:
        """Up to `limit` values per list; every count at once (one round trip's wait, not six)."""
        searchable = build_filter(None)
        facets = asyncio.gather(
            *(self.store.facet(key, limit=limit, facet_filter=searchable) for key in FACET_KEYS.values()),
            self.store.facet("year", limit=YEAR_VALUES, facet_filter=searchable),
        )
        (*lists, years), total = await asyncio.gather(facets, self.store.count(count_filter=searchable))
        return facets_response(dict(zip(FACET_KEYS, lists, strict=True)), years, total)
