"""Search use cases: text, image and multimodal queries in, ranked anime out. No HTTP here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from service.encoders.sparse import SparseVector
from service.errors import DependencyUnavailable, InvalidInput, NotFound
from service.explain import explain
from service.fusion import Candidate, RankedList, fuse
from service.images import ImageLimits, decode_base64_image, load_image
from service.runtime import IMAGE_VECTORS, TEXT_SPARSE_VECTOR, TEXT_VECTOR, Runtime
from service.schemas import (
    AnimeRecord,
    AnimeResult,
    ImageSearchRequest,
    MultimodalSearchRequest,
    QueryInfo,
    SearchRequest,
    SearchResponse,
)
from service.store.filters import build_filter
from service.store.types import Hit, VectorQuery
from service.text_compose import normalize_query

_SYNOPSIS_SNIPPET = 500
_RESULT_FIELDS = tuple(
    f for f in AnimeResult.__struct_fields__ if f not in ("anime_id", "score", "synopsis", "explanation")
)


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
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.limits = ImageLimits(max_bytes=settings.image_max_bytes, max_pixels=settings.image_max_pixels)
        self.candidates = settings.fusion_candidates

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
        return await asyncio.to_thread(load_image, raw, self.limits)

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
        return TEXT_SPARSE_VECTOR in self.runtime.store.schema.sparse

    # -- text ------------------------------------------------------------------------------------

    async def search_text(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        query = self._query_text(request.query)
        mode = request.text_mode or self.runtime.settings.text_search_mode
        if mode == "hybrid" and not self.hybrid_available():
            mode = "dense"  # the deployed text model has no sparse head: hybrid is dense
        embeddings = await self.runtime.text.encode([query])
        query_filter = build_filter(request.filters)
        dense = VectorQuery(TEXT_VECTOR, embeddings.dense[0].tolist(), self.candidates, query_filter)
        sparse = embeddings.sparse[0] if embeddings.sparse else None
        if mode == "hybrid" and sparse is not None and len(sparse):
            hits = await self.runtime.store.search_fused(
                [dense, VectorQuery(TEXT_SPARSE_VECTOR, sparse, self.candidates, query_filter)],
                fusion="rrf",
                limit=request.limit,
                score_threshold=request.score_threshold,
            )
            vectors = [TEXT_VECTOR, TEXT_SPARSE_VECTOR]
        else:
            hits = await self.runtime.store.search(
                TEXT_VECTOR,
                dense.vector,
                limit=request.limit,
                query_filter=query_filter,
                score_threshold=request.score_threshold,
            )
            vectors = [TEXT_VECTOR]
        results = [hit_result(h) for h in hits]
        manifest = self.runtime.text.manifest
        return SearchResponse(
            results=results,
            total=len(results),
            query_info=self._info(
                started,
                manifest.source,
                manifest.model_version,
                tokens=embeddings.token_counts[0],
                truncated=embeddings.truncated[0],
                mode=mode,
                ranking="rrf" if len(vectors) > 1 else None,
                vectors=vectors,
            ),
        )

    # -- image -----------------------------------------------------------------------------------

    async def search_image(self, request: ImageSearchRequest) -> SearchResponse:
        started = time.perf_counter()
        image = await self.decode_image(request.image)
        self._require_images()
        assert self.runtime.image is not None
        vector = (await self.runtime.image.encode([image]))[0].tolist()
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

    async def _text_lists(self, query: str, query_filter: Any) -> list[_List]:
        lists: list[_List] = []
        embeddings = await self.runtime.text.encode([query])
        lists.append(
            _List(
                TEXT_VECTOR,
                "text",
                VectorQuery(TEXT_VECTOR, embeddings.dense[0].tolist(), self.candidates, query_filter),
            )
        )
        sparse: SparseVector | None = embeddings.sparse[0] if embeddings.sparse else None
        if (
            self.hybrid_available()
            and self.runtime.settings.text_search_mode == "hybrid"
            and sparse
            and len(sparse)
        ):
            lists.append(
                _List(
                    TEXT_SPARSE_VECTOR,
                    "text",
                    VectorQuery(TEXT_SPARSE_VECTOR, sparse, self.candidates, query_filter),
                )
            )
        return lists

    async def _cross_modal_lists(self, query: str, query_filter: Any) -> list[_List]:
        clip_text = self.runtime.clip_text
        if clip_text is None or self.runtime.image is None:
            return []
        vector = (await clip_text.encode([query])).dense[0].tolist()
        return [
            _List(f"clip_text->{name}", "text", VectorQuery(name, vector, self.candidates, query_filter))
            for name in IMAGE_VECTORS
        ]

    async def _image_lists(self, image: Image.Image, query_filter: Any) -> list[_List]:
        self._require_images()
        assert self.runtime.image is not None
        vector: np.ndarray = (await self.runtime.image.encode([image]))[0]
        return [
            _List(name, "image", VectorQuery(name, vector.tolist(), self.candidates, query_filter))
            for name in IMAGE_VECTORS
        ]

    async def search_multimodal(self, request: MultimodalSearchRequest) -> SearchResponse:
        started = time.perf_counter()
        query = self._query_text(request.query) if request.query is not None else None
        image = await self.decode_image(request.image) if request.image is not None else None
        query_filter = build_filter(request.filters)

        jobs: list[tuple[str, Awaitable[list[_List]]]] = []
        if query is not None:
            jobs.append(("text", self._text_lists(query, query_filter)))
            jobs.append(("text (cross-modal)", self._cross_modal_lists(query, query_filter)))
        if image is not None:
            jobs.append(("image", self._image_lists(image, query_filter)))
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

        hits = await self.runtime.store.search_many([item.query for item in lists])
        payloads: dict[str, dict[str, Any]] = {}
        ranked = []
        for item, found in zip(lists, hits, strict=True):
            for hit in found:
                payloads.setdefault(hit.anime_id, hit.payload)
            ranked.append(RankedList(item.name, item.part, [Candidate(h.anime_id, h.score) for h in found]))
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
        results = [
            to_result(f.key, f.score, payloads[f.key], explanation=explain(f, None, payloads[f.key]))
            for f in fused
        ]
        manifest = self.runtime.text.manifest
        return SearchResponse(
            results=results,
            total=len(results),
            query_info=self._info(
                started,
                manifest.source,
                manifest.model_version,
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
        document = {
            k: v for k, v in hit.payload.items() if k not in ("model_version", "model_versions", "updated_at")
        }
        return AnimeRecord(
            anime_id=anime_id,
            document=document,
            vectors=hit.vectors,
            model_version=hit.payload.get("model_version"),
            updated_at=hit.payload.get("updated_at"),
        )
