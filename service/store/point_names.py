"""Which anime each point is, without reading its payload.

A point's id is uuid5 of its anime id (service/domain/documents.point_id): one way only, so a candidate
list would have to bring back each hit's `anime_id` payload to say which anime it found. On qdrant-edge
that payload read costs ~20 µs a hit, most of a list's cost (a 101-candidate dense list: 2.1 ms with
it, 0.2 ms without), and a similarity batch of 10 anime reads ~4,000 of them. The names are learnt
once (from a retrieve of the unknown ones, or from any record read) and never change: an anime's
point id is a function of its anime id, so a name can never be wrong, only missing.
"""

from __future__ import annotations

from collections.abc import Iterable

# ~150 bytes an entry: a few hundred MB at most for catalogues far beyond any anime database's size.
MAX_NAMES = 2_000_000


class PointNames:
    def __init__(self, max_names: int = MAX_NAMES) -> None:
        self._names: dict[str, str] = {}
        self._max = max_names

    def learn(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Remember (point id, anime id) pairs; forget everything learnt before once `max_names` would
        be passed (a bound, not a cache policy: the catalogue itself is the working set). The pairs of
        one call are always all kept: a search names its hits right after learning them."""
        new = dict(pairs)
        if len(self._names) + len(new) > self._max:
            self._names.clear()
        self._names.update(new)

    def unknown(self, points: Iterable[str]) -> list[str]:
        return list(dict.fromkeys(p for p in points if p not in self._names))

    def name(self, point: str) -> str | None:
        return self._names.get(point)
