"""Values that cross the store boundary: vector schema, points, hits, queries, records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import models

from service.encoders.sparse import SparseVector


@dataclass(frozen=True)
class VectorSchema:
    """Named vectors the deployed models produce: dense name -> dim, plus sparse names."""

    dense: Mapping[str, int]
    sparse: Sequence[str] = ()
    distance: str = "cosine"


@dataclass(frozen=True)
class StoredPoint:
    anime_id: str
    vectors: Mapping[str, Sequence[float] | SparseVector]
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    anime_id: str
    score: float
    payload: dict[str, Any]
    vectors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VectorQuery:
    """One nearest-neighbour query against one named vector."""

    using: str
    vector: Sequence[float] | SparseVector
    limit: int
    query_filter: models.Filter | None = None
    score_threshold: float | None = None


@dataclass(frozen=True)
class StoredRecord:
    anime_id: str
    payload: dict[str, Any]
    vectors: dict[str, list[float] | SparseVector]


def to_qdrant_vector(value: Sequence[float] | SparseVector) -> Any:
    if isinstance(value, SparseVector):
        return models.SparseVector(indices=value.indices, values=value.values)
    return [float(x) for x in value]


def from_qdrant_vector(value: Any) -> list[float] | SparseVector:
    if isinstance(value, models.SparseVector):
        return SparseVector(list(value.indices), list(value.values))
    return list(value)
