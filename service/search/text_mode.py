"""Hybrid or dense: the one rule every text query (text search, the text part of multimodal) follows.

The request's `text_mode` wins, else the deployment's TEXT_SEARCH_MODE; hybrid needs the lexical
channel in the collection, so a collection built before it answers dense until it is reindexed.
A request without a `text_mode` field (multimodal) passes None and gets the deployment's mode.
"""

from __future__ import annotations

from service.domain.vectors import TEXT_LEXICAL_VECTOR
from service.schemas import TextMode
from service.store.types import VectorSchema


def lexical_indexed(schema: VectorSchema) -> bool:
    """Whether the collection holds the lexical channel hybrid search needs."""
    return TEXT_LEXICAL_VECTOR in schema.sparse


def choose_text_mode(requested: TextMode | None, configured: TextMode, *, lexical: bool) -> TextMode:
    """`requested` (the request's), else `configured` (TEXT_SEARCH_MODE); dense where hybrid cannot run."""
    mode = requested or configured
    return "dense" if mode == "hybrid" and not lexical else mode
