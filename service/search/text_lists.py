"""The candidate lists a text query asks the store for: one per vector that can answer it."""

from __future__ import annotations

from typing import Any

from service.cache.policy import QueryEmbedding
from service.domain.calibration import center_query
from service.domain.languages import detect_language
from service.domain.vectors import TEXT_LEXICAL_VECTOR
from service.runtime import Runtime, TextModel
from service.schemas import TextMode
from service.store.types import ScorePenalty, VectorQuery


class TextLists:
    """`hub_correction` exists for the relevance harness's ablations: the service always corrects."""

    def __init__(self, runtime: Runtime, *, hub_correction: bool = True) -> None:
        self.runtime = runtime
        self.depth = runtime.settings.fusion_candidates
        self.hub_correction = hub_correction

    async def build(
        self, query: str, embedding: QueryEmbedding, query_filter: Any, mode: TextMode, model: TextModel
    ) -> list[VectorQuery]:
        """Names, facts, synopses (+ lexical and learned sparse in hybrid).

        The synopsis list is centred on the query's language and hub-corrected with the collection's
        calibration (service/domain/calibration.py); the names list is not: a name typed in any script
        should meet that very name, language and all.
        """
        schema = self.runtime.store.schema
        depth = self.depth
        dense = embedding.dense.tolist()
        names = model.names
        lists = [VectorQuery(names.title, dense, depth, query_filter)]
        if names.facts in schema.dense:
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
            if sparse is not None and len(sparse) and names.sparse in schema.sparse:
                lists.append(VectorQuery(names.sparse, sparse, depth, query_filter))
        return lists
