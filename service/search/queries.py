"""Search use cases: text, image and multimodal queries in, ranked anime out. No HTTP here."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from PIL import Image

from service.cache.policy import QueryEmbedding, SearchCache
from service.domain.calibration import center_query
from service.domain.composition import normalize_query
from service.domain.languages import detect_language
from service.domain.rollout import Caller
from service.domain.vectors import (
    FACTS_VECTOR,
    HUBNESS_FIELD,
    IMAGE_VECTORS,
    SYNOPSIS_VECTOR,
    TEXT_LEXICAL_VECTOR,
    TEXT_SPARSE_VECTOR,
    TITLE_VECTOR,
)
from service.images.checks import decode_base64_image
from service.platform.errors import DependencyUnavailable, InvalidInput, NotFound
from service.runtime import Runtime, TextModel
from service.schemas import (
    AnimeRecord,
    AnimeResult,
    ImageSearchRequest,
    MultimodalSearchRequest,
    QueryInfo,
    SearchRequest,
    SearchResponse,
)
from service.search.explain import explain
from service.search.fusion import Candidate, Fused, RankedList, fuse, fuse_confident
from service.store.filters import build_filter
from service.store.types import Hit, ScorePenalty, VectorQuery

_SYNOPSIS_SNIPPET = 500
# How text search fuses its lists: "confident" (service/search/fusion.py fuse_confident, in the façade, on the
# candidate lists Qdrant returns in one batch), or Qdrant's own "dbsf"/"rrf" (inside Qdrant), kept as
# the relevance harness's ablations. Rank fusion gives every list's first hit the same weight, and DBSF
# weighs a list that is sure of its best hit like one that is not; the confident sum lets the sure list
# win. Measured on the whole catalogue in benchmarks/RESULTS.md ("hybrid" against "hybrid, Qdrant DBSF"
# and "hybrid, RRF").
TEXT_FUSION = "confident"
# Per list: synopses carry a plot description, the only kind of query no other list can answer.
TEXT_WEIGHTS = {
    TITLE_VECTOR: 1.0,
    FACTS_VECTOR: 1.0,
    SYNOPSIS_VECTOR: 1.5,
    TEXT_LEXICAL_VECTOR: 1.0,
    TEXT_SPARSE_VECTOR: 1.0,
}
_RESULT_FIELDS = tuple(
    f for f in AnimeResult.__struct_fields__ if f not in ("anime_id", "score", "synopsis", "explanation")
)


# Payload keys the service keeps for itself beside the document (not part of what the client stored).
_BOOKKEEPING = frozenset(
    {"model_version", "model_versions", "updated_at", "updated_at_ts", "synopsis_languages"}
)


def _is_bookkeeping(key: str) -> bool:
    return key in _BOOKKEEPING or key == HUBNESS_FIELD or key.startswith(HUBNESS_FIELD + "_v")


def _snippet(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= _SYNOPSIS_SNIPPET else text[: _SYNOPSIS_SNIPPET - 1].rstrip() + "…"


def to_result(anime_id: str, score: float, payload: dict[str, Any], **extra: Any) -> AnimeResult:
    fields = {k: payload[k] for k in _RESULT_FIELDS if payload.get(k) is not None}
    fields.setdefault("title", anime_id)
    return AnimeResult(
        anime_id=anime_id, score=score, synopsis=_snippet(payload.get("synopsis")), **fields, **extra
    )


def hit_result(hit: Hit) -> AnimeResult:
    return to_result(hit.anime_id, hit.score, hit.payload)


@dataclass(frozen=True)
class _List:
    """One candidate list of a multimodal query: which part it serves and what it asks the store."""

    name: str
    part: str
    query: VectorQuery


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


class SearchService:
    def __init__(
        self, runtime: Runtime, *, text_fusion: str = TEXT_FUSION, hub_correction: bool = True
    ) -> None:
        """`text_fusion` and `hub_correction` exist for the relevance harness's ablations: the service
        itself always runs with the measured defaults."""
        self.runtime = runtime
        settings = runtime.settings
        self.limits = runtime.image_limits
        self.candidates = settings.fusion_candidates
        self.text_fusion = text_fusion
        self.hub_correction = hub_correction

    # -- helpers ---------------------------------------------------------------------------------

    def _query_text(self, text: str) -> str:
        query = normalize_query(text)
        if not query:
            raise InvalidInput(
                "query is empty once whitespace and control characters are removed", field="query"
            )
        return query

    async def decode_image(self, data: str) -> Image.Image:
        """base64 -> checked, oriented RGB image; raises ImageError (4xx) for anything else."""
        raw = decode_base64_image(data, self.limits)
        return await self.runtime.decoder.decode(raw, self.limits)

    def _require_images(self) -> None:
        if self.runtime.image is None:
            raise DependencyUnavailable(
                "image_embedder", "no image model is deployed: export one with `python -m export clip`"
            )

    def _info(self, started: float, model: str, version: str, **extra: Any) -> QueryInfo:
        return QueryInfo(
            engine=self.runtime.engine.name,
            model=model,
            model_version=version,
            store=self.runtime.store.engine,
            took_ms=_elapsed_ms(started),
            **extra,
        )

    def hybrid_available(self) -> bool:
        return TEXT_LEXICAL_VECTOR in self.runtime.store.schema.sparse

    async def text_queries(
        self,
        query: str,
        embedding: QueryEmbedding,
        query_filter: Any,
        mode: str,
        model: TextModel | None = None,
    ) -> list[VectorQuery]:
        """The candidate lists of a text query: names, facts, synopses (+ lexical and learned sparse in
        hybrid).

        The synopsis list is centred on the query's language and hub-corrected with the collection's
        calibration (service/domain/calibration.py); the names list is not: a name typed in any script should
        meet that very name, language and all.
        """
        model = model or self.runtime.default_model
        depth = self.candidates
        dense = embedding.dense.tolist()
        names = model.names
        lists = [VectorQuery(names.title, dense, depth, query_filter)]
        if names.facts in self.runtime.store.schema.dense:
            lists.append(VectorQuery(names.facts, dense, depth, query_filter))
        calibration = await self.runtime.calibration(model)
        if calibration is not None:
            centred = center_query(embedding.dense, detect_language(query), calibration).tolist()
            penalty = ScorePenalty(names.hubness, calibration.hub_weight) if self.hub_correction else None
            lists.append(VectorQuery(names.synopsis, centred, depth, query_filter, penalty=penalty))
        else:
            lists.append(VectorQuery(names.synopsis, dense, depth, query_filter))
        if mode == "hybrid":
            lexical = self.runtime.lexical.query(query)
            if len(lexical):  # emoji or punctuation only: no word to match
                lists.append(VectorQuery(TEXT_LEXICAL_VECTOR, lexical, depth, query_filter))
            sparse = embedding.sparse
            if sparse is not None and len(sparse) and names.sparse in self.runtime.store.schema.sparse:
                lists.append(VectorQuery(names.sparse, sparse, depth, query_filter))
        return lists

    @property
    def cache(self) -> SearchCache:
        assert self.runtime.cache is not None
        return self.runtime.cache

    async def embed_text(self, query: str, model: TextModel | None = None) -> QueryEmbedding:
        encoder = (model or self.runtime.default_model).encoder

        async def compute() -> QueryEmbedding:
            e = await encoder.encode([query], kind="query")
            return QueryEmbedding(
                e.dense[0], e.sparse[0] if e.sparse else None, e.token_counts[0], e.truncated[0]
            )

        return await self.cache.embedding(encoder.manifest.model_version, query, compute)

    async def embed_clip_text(self, query: str) -> np.ndarray | None:
        clip_text = self.runtime.clip_text
        if clip_text is None or self.runtime.image is None:
            return None

        async def compute() -> QueryEmbedding:
            return QueryEmbedding((await clip_text.encode([query], kind="query")).dense[0])

        return (await self.cache.embedding(clip_text.manifest.model_version, query, compute)).dense

    async def embed_image(self, data: str) -> np.ndarray:
        """The picture's vector; decoding (and its 4xx answers) only happens on a cache miss."""
        image_encoder = self.runtime.image
        if image_encoder is None:
            await self.decode_image(data)  # bad pictures are still the client's 4xx, not our 503
            self._require_images()

        async def compute() -> QueryEmbedding:
            image = await self.decode_image(data)
            return QueryEmbedding((await image_encoder.encode([image]))[0])  # type: ignore[union-attr]

        return (await self.cache.embedding(image_encoder.manifest.model_version, data, compute)).dense  # type: ignore[union-attr]

    async def _cached(
        self,
        endpoint: str,
        request: Any,
        compute: Callable[[], Awaitable[SearchResponse]],
        model: TextModel | None = None,
    ) -> SearchResponse:
        """The answer from the cache, or computed; keyed by the text version too (clients of two
        versions asking the same get their own version's answer)."""
        started = time.perf_counter()
        if model is not None:
            endpoint = f"{endpoint}@text:{model.version}"

        async def answer_now() -> SearchResponse:
            # A cached answer is still served while the store is down; a new one needs the store.
            await self.runtime.store.refuse_if_down()
            return await compute()

        answer, cached = await self.cache.answer(
            endpoint, request, SearchResponse, answer_now, keep=lambda a: not a.query_info.degraded
        )
        info = msgspec.structs.replace(answer.query_info, took_ms=_elapsed_ms(started), cached=cached)
        return msgspec.structs.replace(answer, query_info=info)

    # -- text ------------------------------------------------------------------------------------

    async def search_text(self, request: SearchRequest, caller: Caller | None = None) -> SearchResponse:
        query = self._query_text(request.query)
        model = await self.runtime.choose_model(caller, request.model_version)
        with self.runtime.metrics.text_version("search", model.version):
            return await self._cached(
                "search", request, lambda: self._search_text(request, query, model), model
            )

    async def _search_text(self, request: SearchRequest, query: str, model: TextModel) -> SearchResponse:
        started = time.perf_counter()
        mode = request.text_mode or self.runtime.settings.text_search_mode
        if mode == "hybrid" and not self.hybrid_available():
            mode = "dense"  # a collection built before the lexical channel: dense until reindexed
        embedding = await self.embed_text(query, model)
        lists = await self.text_queries(query, embedding, build_filter(request.filters), mode, model)
        if self.text_fusion == "confident":
            results = await self._fuse_text(lists, request.limit, request.score_threshold, model)
        else:
            hits = await self.runtime.store.search_fused(
                lists, fusion=self.text_fusion, limit=request.limit, score_threshold=request.score_threshold
            )
            results = [hit_result(h) for h in hits]
        manifest = model.manifest
        return SearchResponse(
            results=results,
            total=len(results),
            query_info=self._info(
                started,
                manifest.source,
                manifest.model_version,
                text_version=model.version,
                tokens=embedding.tokens,
                truncated=embedding.truncated,
                mode=mode,
                ranking=self.text_fusion,
                vectors=[q.using for q in lists],
            ),
        )

    async def _fuse_text(
        self, lists: list[VectorQuery], limit: int, score_threshold: float | None, model: TextModel
    ) -> list[AnimeResult]:
        """Candidates of every list in one batch (ids and scores), fused here, then the results."""
        store = self.runtime.store
        queries = [dataclasses.replace(q, score_threshold=score_threshold) for q in lists]
        found = await store.search_many(queries, payload=False)
        ranked = [
            RankedList(q.using, q.using, [Candidate(h.anime_id, h.score) for h in hits])
            for q, hits in zip(queries, found, strict=True)
        ]
        sparse = {q.using: q.limit for q in queries if q.using in store.schema.sparse}
        weights = {q.using: TEXT_WEIGHTS.get(model.names.base_name(q.using), 1.0) for q in queries}
        return await self._results_of(fuse_confident(ranked, weights, limit=limit, zero_filled=sparse))

    async def _results_of(self, fused: list[Fused]) -> list[AnimeResult]:
        """Fused candidates (ids and scores) as results: their documents in one call, each result
        explaining which lists it was in."""
        records = await self.runtime.store.get_many([f.key for f in fused], with_vectors=False)
        return [
            to_result(f.key, f.score, record.payload, explanation=explain(f, None, record.payload))
            for f in fused
            if (record := records.get(f.key)) is not None  # None: deleted between the two calls
        ]

    # -- image -----------------------------------------------------------------------------------

    async def search_image(self, request: ImageSearchRequest) -> SearchResponse:
        return await self._cached("search/image", request, lambda: self._search_image(request))

    async def _search_image(self, request: ImageSearchRequest) -> SearchResponse:
        started = time.perf_counter()
        vector = (await self.embed_image(request.image)).tolist()
        assert self.runtime.image is not None
        query_filter = build_filter(request.filters)
        # Picture and thumbnail come from one model: rank fusion inside Qdrant (Query API prefetch + RRF).
        hits = await self.runtime.store.search_fused(
            [VectorQuery(name, vector, self.candidates, query_filter) for name in IMAGE_VECTORS],
            fusion="rrf",
            limit=request.limit,
            score_threshold=request.score_threshold,
        )
        results = [hit_result(h) for h in hits]
        manifest = self.runtime.image.manifest
        return SearchResponse(
            results=results,
            total=len(results),
            query_info=self._info(
                started, manifest.source, manifest.model_version, ranking="rrf", vectors=list(IMAGE_VECTORS)
            ),
        )

    # -- multimodal ------------------------------------------------------------------------------

    async def _text_lists(self, query: str, query_filter: Any, model: TextModel) -> list[_List]:
        embedding = await self.embed_text(query, model)
        mode = self.runtime.settings.text_search_mode if self.hybrid_available() else "dense"
        queries = await self.text_queries(query, embedding, query_filter, mode, model)
        return [_List(q.using, "text", q) for q in queries]

    async def _cross_modal_lists(self, query: str, query_filter: Any) -> list[_List]:
        vector = await self.embed_clip_text(query)
        if vector is None:
            return []
        return [
            _List(
                f"clip_text->{name}",
                "text",
                VectorQuery(name, vector.tolist(), self.candidates, query_filter),
            )
            for name in IMAGE_VECTORS
        ]

    async def _image_lists(self, data: str, query_filter: Any) -> list[_List]:
        vector = (await self.embed_image(data)).tolist()
        return [
            _List(name, "image", VectorQuery(name, vector, self.candidates, query_filter))
            for name in IMAGE_VECTORS
        ]

    async def search_multimodal(
        self, request: MultimodalSearchRequest, caller: Caller | None = None
    ) -> SearchResponse:
        query = self._query_text(request.query) if request.query is not None else None
        model = await self.runtime.choose_model(caller, request.model_version)
        with self.runtime.metrics.text_version("search/multimodal", model.version):
            return await self._cached(
                "search/multimodal", request, lambda: self._search_multimodal(request, query, model), model
            )

    async def _search_multimodal(
        self, request: MultimodalSearchRequest, query: str | None, model: TextModel
    ) -> SearchResponse:
        started = time.perf_counter()
        query_filter = build_filter(request.filters)

        jobs: list[tuple[str, Awaitable[list[_List]]]] = []
        if query is not None:
            jobs.append(("text", self._text_lists(query, query_filter, model)))
            jobs.append(("text (cross-modal)", self._cross_modal_lists(query, query_filter)))
        if request.image is not None:
            jobs.append(("image", self._image_lists(request.image, query_filter)))
        outcomes = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)

        lists: list[_List] = []
        degraded: list[str] = []
        failures: list[DependencyUnavailable] = []
        for (label, _), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, DependencyUnavailable):
                failures.append(outcome)
                degraded.append(f"{label}: {outcome.message}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                lists.extend(outcome)
        if not lists:
            raise failures[0]

        # Candidates as ids and scores; the documents of what survives fusion come in one more call.
        hits = await self.runtime.store.search_many([item.query for item in lists], payload=False)
        ranked = [
            RankedList(item.name, item.part, [Candidate(h.anime_id, h.score) for h in found])
            for item, found in zip(lists, hits, strict=True)
        ]
        parts = sorted({item.part for item in lists})
        requested = {"text": request.text_weight, "image": request.image_weight}
        weights = {part: requested[part] for part in parts}
        if not any(weights.values()):
            weights = dict.fromkeys(parts, 1.0)  # the only part given carries the answer, whatever its weight
        total = sum(weights.values())
        weights = {part: w / total for part, w in weights.items()}
        fused = fuse(ranked, weights, request.ranking, limit=request.limit)
        if request.score_threshold is not None:
            fused = [f for f in fused if f.score >= request.score_threshold]
        results = await self._results_of(fused)
        manifest = model.manifest
        return SearchResponse(
            results=results,
            total=len(results),
            query_info=self._info(
                started,
                manifest.source,
                manifest.model_version,
                text_version=model.version if query is not None else None,
                ranking=request.ranking,
                weights=weights,
                vectors=[item.name for item in lists],
                degraded=degraded,
            ),
        )

    # -- lookups ---------------------------------------------------------------------------------

    async def get_anime(self, anime_id: str) -> AnimeRecord:
        hit = await self.runtime.store.get(anime_id)
        if hit is None:
            raise NotFound(f"no anime with id '{anime_id}'", anime_id=anime_id)
        document = {k: v for k, v in hit.payload.items() if not _is_bookkeeping(k)}
        return AnimeRecord(
            anime_id=anime_id,
            document=document,
            vectors=hit.vectors,
            model_version=hit.payload.get("model_version"),
            updated_at=hit.payload.get("updated_at"),
        )
