"""Shaping answers: stored payloads as results, fused candidates as explained results, query info.

Every search and similarity answer is shaped here, so a result looks the same whichever endpoint
returned it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from service.domain.manifest import ModelManifest
from service.domain.vectors import HUBNESS_FIELD
from service.runtime import Runtime
from service.schemas import AnimeRecord, AnimeResult, QueryInfo, SearchResponse
from service.search.explain import explain
from service.search.fusion import Fused
from service.store.types import Hit, StoredRecord

_SYNOPSIS_SNIPPET = 500
_RESULT_FIELDS = tuple(
    f for f in AnimeResult.__struct_fields__ if f not in ("anime_id", "score", "synopsis", "explanation")
)
# Payload keys the service keeps for itself beside the document (not part of what the client stored).
_BOOKKEEPING = frozenset(
    {"model_version", "model_versions", "updated_at", "updated_at_ts", "synopsis_languages"}
)
_Answer = TypeVar("_Answer")


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _is_bookkeeping(key: str) -> bool:
    return key in _BOOKKEEPING or key == HUBNESS_FIELD or key.startswith(HUBNESS_FIELD + "_v")


def _snippet(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= _SYNOPSIS_SNIPPET else text[: _SYNOPSIS_SNIPPET - 1].rstrip() + "…"


def to_result(anime_id: str, score: float, payload: Mapping[str, Any], **extra: Any) -> AnimeResult:
    fields = {k: payload[k] for k in _RESULT_FIELDS if payload.get(k) is not None}
    fields.setdefault("title", anime_id)
    return AnimeResult(
        anime_id=anime_id, score=score, synopsis=_snippet(payload.get("synopsis")), **fields, **extra
    )


def hit_result(hit: Hit) -> AnimeResult:
    return to_result(hit.anime_id, hit.score, hit.payload)


def fused_results(
    fused: list[Fused],
    documents: Mapping[str, StoredRecord],
    source_payload: Mapping[str, Any] | None = None,
    score: Callable[[Fused], float] = lambda item: item.score,
) -> list[AnimeResult]:
    """Fused candidates (ids and scores) with their documents, each explaining which lists it was in
    and, for "more like this", what it shares with the anime asked about (`source_payload`)."""
    return [
        to_result(
            item.key, score(item), record.payload, explanation=explain(item, source_payload, record.payload)
        )
        for item in fused
        if (record := documents.get(item.key)) is not None  # None: deleted between the two calls
    ]


async def documented_results(runtime: Runtime, fused: list[Fused]) -> list[AnimeResult]:
    """`fused_results` with the documents of what survived fusion, fetched in one call."""
    documents = await runtime.store.get_many([item.key for item in fused], with_vectors=False)
    return fused_results(fused, documents)


def anime_record(anime_id: str, hit: Hit) -> AnimeRecord:
    """A stored anime as the client stored it, the service's bookkeeping left out."""
    document = {k: v for k, v in hit.payload.items() if not _is_bookkeeping(k)}
    return AnimeRecord(
        anime_id=anime_id,
        document=document,
        vectors=hit.vectors,
        model_version=hit.payload.get("model_version"),
        updated_at=hit.payload.get("updated_at"),
    )


def query_info(runtime: Runtime, started: float, manifest: ModelManifest, **extra: Any) -> QueryInfo:
    """How an answer was made: engine, the model that embedded the query, store, time, and `extra`."""
    return QueryInfo(
        engine=runtime.engine.name,
        model=manifest.source,
        model_version=manifest.model_version,
        store=runtime.store.engine,
        took_ms=elapsed_ms(started),
        **extra,
    )


def search_answer(
    runtime: Runtime, started: float, manifest: ModelManifest, results: list[AnimeResult], **extra: Any
) -> SearchResponse:
    return SearchResponse(
        results=results, total=len(results), query_info=query_info(runtime, started, manifest, **extra)
    )


def timed(answer: _Answer, started: float) -> _Answer:
    """The answer with `took_ms` from `started`: the whole request, a cached answer's included."""
    info = msgspec.structs.replace(answer.query_info, took_ms=elapsed_ms(started))  # type: ignore[attr-defined]
    return msgspec.structs.replace(answer, query_info=info)  # type: ignore[type-var]
