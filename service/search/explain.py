"""Why a result was returned: which vectors matched (score, rank) and what it shares with the query anime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.schemas import Explanation, VectorMatch
from service.search.fusion import Fused


def _shared(source: Mapping[str, Any], target: Mapping[str, Any], key: str) -> list[str]:
    theirs = {str(v).casefold() for v in target.get(key) or []}
    return [str(v) for v in source.get(key) or [] if str(v).casefold() in theirs]


def explain(
    fused: Fused, source_payload: Mapping[str, Any] | None, payload: Mapping[str, Any]
) -> Explanation:
    vectors = [
        VectorMatch(vector=name, score=round(score, 6), rank=fused.list_ranks[name])
        for name, score in sorted(fused.list_scores.items(), key=lambda item: -item[1])
    ]
    source = source_payload or {}
    return Explanation(
        vectors=vectors,
        part_scores={k: round(v, 6) for k, v in fused.part_scores.items()}
        if len(fused.part_scores) > 1
        else None,
        shared_genres=_shared(source, payload, "genres"),
        shared_themes=_shared(source, payload, "themes"),
        shared_tags=_shared(source, payload, "tags"),
    )
