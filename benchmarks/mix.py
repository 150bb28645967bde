"""A mixed request stream for benchmarks.soak: what a day of traffic on the service looks like.

Each request index draws its endpoint by weight and its content from a seeded stream of its own, so the
same index is the same request whichever client sends it and in whatever order (as in
benchmarks.latency), and a run is repeatable.

The default weights are our estimate of real use, not a measurement: people mostly search, in
English, Japanese or Chinese (the relevance harness's query sets: titles typed exactly, misspelled or
paraphrased, genre descriptions, plots), a quarter of them narrowing by genre, years or type; opening
an anime's page asks for it by id and for similar anime (by content, or by its stored vector); a
recommendations page asks for ten at once; and now and then an operator re-upserts an anime (the
catalogue's own document, which the service embeds again: the write path under reads, idempotent, so
the store does not grow during a soak).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from service.domain.documents import AnimeDocument

KINDS = (
    "search",
    "search-filtered",
    "by-id",
    "similarity-anime",
    "similarity-vector",
    "similarity-batch",
    "upsert",
)
DEFAULT_WEIGHTS: dict[str, float] = {
    "search": 0.45,
    "search-filtered": 0.12,
    "by-id": 0.15,
    "similarity-anime": 0.12,
    "similarity-vector": 0.10,
    "similarity-batch": 0.05,
    "upsert": 0.01,
}
# The query sets a soak draws its searches from: every text set, so every script and kind of query.
QUERY_SETS = (
    "title-en",
    "title-paraphrase",
    "title-misspelled",
    "genre-description",
    "plot-en",
    "title-ja",
    "title-zh",
    "multilingual-title",
)
BATCH_IDS = 10
YEAR_SPAN = 3
LIMIT = 10


@dataclass(frozen=True)
class TextQuery:
    text: str
    anime_id: str  # the anime the query was built from: its facets make the filters
    query_set: str


def query_pool(
    documents: Sequence[AnimeDocument],
    *,
    chinese_titles: Mapping[str, str] | None = None,
    per_set: int = 200,
    seed: int = 0,
) -> list[TextQuery]:
    """Up to `per_set` queries of each of QUERY_SETS over `documents` (title-zh only with the Chinese
    titles, see benchmarks.relevance.judgements)."""
    from benchmarks.relevance.judgements import Catalogue, build_sets

    catalogue = Catalogue.of(documents, chinese_titles=chinese_titles)
    sets = build_sets(catalogue, QUERY_SETS, per_set=per_set, seed=seed)
    return [TextQuery(q.text, q.anime_id, s.name) for s in sets for q in s.queries if q.text]


def parse_weights(text: str) -> dict[str, float]:
    """`search=0.5,upsert=0.02`: the kinds named replace the defaults' weights; the rest keep theirs."""
    weights = dict(DEFAULT_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, value = part.partition("=")
        if kind not in KINDS:
            raise ValueError(f"unknown request kind {kind!r}: one of {', '.join(KINDS)}")
        try:
            weights[kind] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: the weight must be a number") from None
        if weights[kind] < 0:
            raise ValueError(f"{part!r}: a weight cannot be negative")
    if sum(weights.values()) <= 0:
        raise ValueError("every weight is zero")
    return weights


def filters_for(doc: AnimeDocument, rng: random.Random) -> dict[str, Any] | None:
    """One or two of the anime's own facets (a genre, years around its year, its type), so a filtered
    search has answers to find."""
    options: list[dict[str, Any]] = []
    if doc.genres:
        options.append({"genres": [rng.choice(doc.genres)]})
    if doc.year is not None:
        options.append(
            {"year_min": max(1900, doc.year - YEAR_SPAN), "year_max": min(2100, doc.year + YEAR_SPAN)}
        )
    if doc.type != "UNKNOWN":
        options.append({"type": doc.type})
    if not options:
        return None
    chosen = rng.sample(options, rng.randint(1, min(2, len(options))))
    return {key: value for option in chosen for key, value in option.items()}


class Mix:
    """The request of each index (a `benchmarks.load.RequestMaker`) and its kind, for reports."""

    def __init__(
        self,
        documents: Sequence[AnimeDocument],
        queries: Sequence[TextQuery],
        weights: Mapping[str, float] = DEFAULT_WEIGHTS,
        *,
        seed: int = 0,
    ) -> None:
        if not documents:
            raise ValueError("a mix needs the stored documents")
        if not queries and (weights.get("search", 0) or weights.get("search-filtered", 0)):
            raise ValueError("a mix with searches needs queries")
        self.documents = {d.anime_id: d for d in documents}
        self.ids = sorted(self.documents)
        self.queries = list(queries)
        self.seed = seed
        self.weights = {k: float(weights.get(k, 0.0)) for k in KINDS}
        kinds = [k for k in KINDS if self.weights[k] > 0]
        self._kinds = kinds
        self._bounds = list(itertools.accumulate(self.weights[k] for k in kinds))

    def _rng(self, i: int) -> random.Random:
        return random.Random(f"{self.seed}:{i}")

    def _draw_kind(self, rng: random.Random) -> str:
        point = rng.random() * self._bounds[-1]
        return self._kinds[min(bisect.bisect_right(self._bounds, point), len(self._kinds) - 1)]

    def kind(self, i: int) -> str:
        return self._draw_kind(self._rng(i))

    def __call__(self, i: int) -> tuple[str, str, Any]:
        rng = self._rng(i)
        kind = self._draw_kind(rng)
        if kind in ("search", "search-filtered"):
            query = rng.choice(self.queries)
            body: dict[str, Any] = {"query": query.text, "limit": LIMIT}
            doc = self.documents.get(query.anime_id)
            if kind == "search-filtered" and doc is not None:
                filters = filters_for(doc, rng)
                if filters:
                    body["filters"] = filters
            return "POST", "/api/v1/search", body
        anime_id = rng.choice(self.ids)
        if kind == "by-id":
            return "GET", f"/api/v1/search/by-id/{anime_id}", None
        if kind in ("similarity-anime", "similarity-vector"):
            return "GET", f"/api/v1/similarity/{kind.removeprefix('similarity-')}/{anime_id}", None
        if kind == "similarity-batch":
            batch = rng.sample(self.ids, min(BATCH_IDS, len(self.ids)))
            return "POST", "/api/v1/similarity/batch", {"anime_ids": batch, "kind": "vector", "limit": LIMIT}
        document = msgspec.to_builtins(self.documents[anime_id])
        return "POST", "/api/v1/admin/vectors/upsert", {"documents": [document]}
