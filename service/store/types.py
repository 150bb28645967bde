"""Values that cross the store boundary: vector schema, points, hits, queries, records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import models

from service.domain.sparse import SparseVector
from service.store.slots import DEFAULT_SLOTS


@dataclass(frozen=True)
class VectorSchema:
    """Named vectors the deployed models produce: dense name -> dim, plus sparse names.

    `multi`: dense vectors stored as several vectors per point and scored by MaxSim (the best of them),
    e.g. every title of an anime. `idf`: sparse vectors whose weights Qdrant multiplies by the
    inverse document frequency it keeps for the collection (BM25's IDF half). `optional`: vectors an
    existing collection may lack (a text model version exported after it was built); new collections
    get them, writes leave them out where the collection has none. `score_fields`: payload fields that
    score formulas read (each text version's synopsis hubness), indexed as floats so that a formula
    reads them from the index instead of the payload storage (a synopsis list of 300 candidates: 4.1
    -> 0.6 ms on qdrant-edge). `slot_counts`: how many plain vectors with a graph of their own stand
    in for a multivector's rows on a large catalogue (service/store/slots.py; DEFAULT_SLOTS where absent).
    """

    dense: Mapping[str, int]
    sparse: Sequence[str] = ()
    distance: str = "cosine"
    multi: frozenset[str] = frozenset()
    idf: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    score_fields: frozenset[str] = frozenset()
    slot_counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def slots(self) -> dict[str, int]:
        """Each multivector's number of slots."""
        return {name: self.slot_counts.get(name, DEFAULT_SLOTS) for name in sorted(self.multi)}

    def without(self, names: frozenset[str]) -> VectorSchema:
        """The schema less `names` (the optional vectors a live collection lacks, for a copy of it)."""
        if not names:
            return self
        return VectorSchema(
            dense={k: v for k, v in self.dense.items() if k not in names},
            sparse=[n for n in self.sparse if n not in names],
            distance=self.distance,
            multi=self.multi - names,
            idf=self.idf - names,
            optional=self.optional - names,
            score_fields=self.score_fields,
            slot_counts={k: v for k, v in self.slot_counts.items() if k not in names},
        )


# One stored vector: dense, several dense (a multivector), or sparse.
VectorValue = Sequence[float] | Sequence[Sequence[float]] | SparseVector


@dataclass(frozen=True)
class StoredPoint:
    anime_id: str
    vectors: Mapping[str, VectorValue]
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    anime_id: str
    score: float
    payload: dict[str, Any]
    vectors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ScorePenalty:
    """Subtract `weight` x the payload number `field` from every score of a list (0 where absent).

    The hub correction: an anime whose synopsis is near everything English is pushed down by how near.
    """

    field: str
    weight: float


@dataclass(frozen=True)
class VectorQuery:
    """One nearest-neighbour query against one named vector (several query vectors for MaxSim)."""

    using: str
    vector: VectorValue
    limit: int
    query_filter: models.Filter | None = None
    score_threshold: float | None = None
    penalty: ScorePenalty | None = None


@dataclass(frozen=True)
class FacetCount:
    """One value of a payload key and how many points hold it (a point holding it twice counts once)."""

    value: str | int | bool
    count: int


@dataclass(frozen=True)
class StoredRecord:
    anime_id: str
    payload: dict[str, Any]
    vectors: dict[str, list[float] | list[list[float]] | SparseVector]


def is_multi(value: Any) -> bool:
    """Several dense vectors (a list of lists), as a multivector holds them."""
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], (list, tuple))


def to_qdrant_vector(value: VectorValue) -> Any:
    if isinstance(value, SparseVector):
        return models.SparseVector(indices=value.indices, values=value.values)
    if is_multi(value):
        return [[float(x) for x in row] for row in value]  # type: ignore[union-attr]
    return [float(x) for x in value]  # type: ignore[arg-type]


def from_qdrant_vector(value: Any) -> list[float] | list[list[float]] | SparseVector:
    if isinstance(value, models.SparseVector):
        return SparseVector(list(value.indices), list(value.values))
    if is_multi(value):
        return [list(row) for row in value]
    return list(value)


def vector_fits(schema: VectorSchema, name: str, value: Any) -> bool:
    """Whether a stored vector can go into a collection of `schema` as it is (name, kind and dims)."""
    if isinstance(value, SparseVector):
        return name in schema.sparse
    if name not in schema.dense:
        return False
    if name in schema.multi:
        return is_multi(value) and all(len(row) == schema.dense[name] for row in value)
    return not is_multi(value) and len(value) == schema.dense[name]
