"""The rankers compared side by side: baselines (random, BM25) and the service's own search paths.

Every ranker answers `rank(query, depth) -> [anime_id, ...]`, best first. The service rankers go through
SearchService / SimilarityService in process (no HTTP), exactly the code the endpoints call, with the
answer cache off so that every query is computed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from benchmarks.relevance.judgements import Query
from benchmarks.relevance.pictures import screenshot
from benchmarks.relevance.titles import is_cjk, normalize
from service.domain.composition import compose_text, normalize_query
from service.domain.documents import AnimeDocument
from service.domain.vectors import TEXT_LEXICAL_VECTOR
from service.platform.errors import NotFound
from service.runtime import Runtime
from service.schemas import ImageSearchRequest, MultimodalSearchRequest, Ranking, SearchRequest
from service.search.search_service import SearchService
from service.search.similarity import SimilarityService


class Ranker(Protocol):
    name: str

    async def rank(self, query: Query, depth: int) -> list[str]: ...


# -- baselines --------------------------------------------------------------------------------------------


@dataclass
class RandomRanker:
    """A uniformly random ranking, seeded per query: the floor every system must clear by far."""

    ids: Sequence[str]
    seed: int
    exclude_source: bool = False
    name: str = "random"

    async def rank(self, query: Query, depth: int) -> list[str]:
        rng = random.Random(f"{self.seed}:{query.qid}")
        picked = rng.sample(list(self.ids), min(depth + 1, len(self.ids)))
        if self.exclude_source:
            picked = [a for a in picked if a != query.anime_id]
        return picked[:depth]


_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; CJK runs (no spaces between words) as overlapping character bigrams.

    Bigrams are the usual dictionary-free choice for Chinese/Japanese in lexical search (Lucene's CJK
    analyzer does the same), so the multilingual set has a fair lexical baseline.
    """
    tokens: list[str] = []
    for word in normalize(text).split():
        if not is_cjk(word):
            tokens.append(word)
            continue
        rest = _CJK_RUN.sub(" ", word).split()
        tokens += rest
        for run in _CJK_RUN.findall(word):
            tokens += [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]
    return tokens


class Bm25Ranker:
    """BM25 (bm25s, Lucene variant, k1=1.5, b=0.75) over the same composed text the dense index embeds.

    The composed text is used whole: BM25 has no token window, where the dense index saw only the first
    TEXT_MAX_TOKENS tokens. For "similar to X" the query is X's own composed text (more-like-this).
    Only anime with a positive score are returned, like a lexical engine would.
    """

    def __init__(self, documents: Sequence[AnimeDocument], *, more_like_this: bool = False) -> None:
        import bm25s

        self.ids = [d.anime_id for d in documents]
        self.position = {a: i for i, a in enumerate(self.ids)}
        self.texts = {d.anime_id: compose_text(d) for d in documents}
        self.more_like_this = more_like_this
        self.name = "bm25 more-like-this" if more_like_this else "bm25"
        self.index = bm25s.BM25()
        self.index.index([tokenize(self.texts[a]) for a in self.ids], show_progress=False)

    async def rank(self, query: Query, depth: int) -> list[str]:
        text = self.texts[query.anime_id] if self.more_like_this else query.text or ""
        scores = np.asarray(self.index.get_scores(tokenize(text)), dtype=np.float64)
        if self.more_like_this:
            scores[self.position[query.anime_id]] = 0.0
        # Stable sort: ties keep id order, so the ranking is deterministic.
        order = np.argsort(-scores, kind="stable")[:depth]
        return [self.ids[i] for i in order if scores[i] > 0.0]


# -- the service --------------------------------------------------------------------------------------------


@dataclass
class TextSearchRanker:
    """POST /search: dense, or hybrid (dense + sparse fused by RRF in Qdrant)."""

    search: SearchService
    mode: str = "dense"
    name: str = "dense"

    async def rank(self, query: Query, depth: int) -> list[str]:
        request = SearchRequest(query=query.text or "", limit=depth, text_mode=self.mode)  # type: ignore[arg-type]
        return [r.anime_id for r in (await self.search.search_text(request)).results]


@dataclass
class LexicalRanker:
    """The service's lexical channel alone: the query's BM25 vector against `text_lexical` (Qdrant IDF).

    Not an endpoint: it shows what the channel hybrid search fuses in is worth by itself.
    """

    runtime: Runtime
    name: str = "lexical channel alone (Qdrant BM25)"

    async def rank(self, query: Query, depth: int) -> list[str]:
        vector = self.runtime.lexical.query(normalize_query(query.text or ""))
        if not len(vector):
            return []
        hits = await self.runtime.store.search(TEXT_LEXICAL_VECTOR, vector, limit=depth)
        return [h.anime_id for h in hits]


@dataclass
class SimilarityRanker:
    """GET /similarity/{kind}/{id}: the anime's stored vectors as the query, itself excluded."""

    similarity: SimilarityService
    kind: str
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"similarity/{self.kind}"

    async def rank(self, query: Query, depth: int) -> list[str]:
        try:
            answer = await self.similarity.similar(
                self.kind,  # type: ignore[arg-type]
                query.anime_id,
                limit=depth,
                filters=None,
                score_threshold=None,
            )
        except NotFound:
            return []  # the anime lacks this kind's vectors: an empty answer (the report counts them)
        return [r.anime_id for r in answer.results]


@dataclass
class ImageSearchRanker:
    """POST /search/image with the query's degraded cover screenshot."""

    search: SearchService
    name: str = "image only"

    async def rank(self, query: Query, depth: int) -> list[str]:
        assert query.picture is not None
        request = ImageSearchRequest(image=screenshot(query.picture), limit=depth)
        return [r.anime_id for r in (await self.search.search_image(request)).results]


@dataclass
class MultimodalRanker:
    """POST /search/multimodal with the vague text and the screenshot, default weights (0.5/0.5)."""

    search: SearchService
    ranking: Ranking
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"multimodal {self.ranking}"

    async def rank(self, query: Query, depth: int) -> list[str]:
        assert query.picture is not None
        request = MultimodalSearchRequest(
            query=query.text, image=screenshot(query.picture), ranking=self.ranking, limit=depth
        )
        return [r.anime_id for r in (await self.search.search_multimodal(request)).results]
