"""Search use cases: query in, ranked anime out. No HTTP here; handlers call these."""

from __future__ import annotations

import time
from typing import Any

from service.errors import InvalidInput, NotFound
from service.runtime import TEXT_VECTOR, Runtime
from service.schemas import AnimeRecord, AnimeResult, QueryInfo, SearchRequest, SearchResponse
from service.store.filters import build_filter
from service.store.qdrant_store import Hit
from service.text_compose import normalize_query

_SYNOPSIS_SNIPPET = 500
_RESULT_FIELDS = tuple(f for f in AnimeResult.__struct_fields__ if f not in ("anime_id", "score", "synopsis"))


def _snippet(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= _SYNOPSIS_SNIPPET else text[: _SYNOPSIS_SNIPPET - 1].rstrip() + "…"


def to_result(hit: Hit) -> AnimeResult:
    payload = hit.payload
    fields = {k: payload[k] for k in _RESULT_FIELDS if payload.get(k) is not None}
    fields.setdefault("title", hit.anime_id)
    return AnimeResult(
        anime_id=hit.anime_id, score=hit.score, synopsis=_snippet(payload.get("synopsis")), **fields
    )


class SearchService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def search_text(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        query = normalize_query(request.query)
        if not query:
            raise InvalidInput(
                "query is empty once whitespace and control characters are removed", field="query"
            )
        embeddings = await self.runtime.text.encode([query])
        hits = await self.runtime.store.search(
            TEXT_VECTOR,
            embeddings.dense[0].tolist(),
            limit=request.limit,
            query_filter=build_filter(request.filters),
            score_threshold=request.score_threshold,
        )
        results = [to_result(h) for h in hits]
        manifest = self.runtime.text.manifest
        return SearchResponse(
            results=results,
            total=len(results),
            query_info=QueryInfo(
                engine=self.runtime.engine.name,
                model=manifest.source,
                model_version=manifest.model_version,
                store=self.runtime.store.engine,
                took_ms=round((time.perf_counter() - started) * 1000, 3),
                tokens=embeddings.token_counts[0],
                truncated=embeddings.truncated[0],
            ),
        )

    async def get_anime(self, anime_id: str) -> AnimeRecord:
        hit = await self.runtime.store.get(anime_id)
        if hit is None:
            raise NotFound(f"no anime with id '{anime_id}'", anime_id=anime_id)
        document = {k: v for k, v in hit.payload.items() if k not in ("model_version", "updated_at")}
        return AnimeRecord(
            anime_id=anime_id,
            document=document,
            vectors=hit.vectors,
            model_version=hit.payload.get("model_version"),
            updated_at=hit.payload.get("updated_at"),
        )
