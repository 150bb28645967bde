"""The catalogues benchmarks.scale builds: the real one read back once, then synthetic variants of it.

A catalogue of N anime is the real anime first (as many as there are, in id order), then variants of
them, round-robin over the real ones so every genre, theme, year and type keeps its share. A variant
is a copy of its source's payload under a new id (`<source id>.v<k>`) with the year moved by up to
`YEAR_JITTER` years, and its source's vectors plus isotropic gaussian noise, renormalised: every dense
vector, each row of a multivector on its own. The noise's sigma is chosen so that a noisy unit vector's
expected cosine to its original is `cosine` (default 0.9): with noise n ~ N(0, sigma^2 I_d),
|v + n|^2 ~ 1 + d sigma^2 and (v + n).v ~ 1, so cos ~ 1 / sqrt(1 + d sigma^2), i.e.
sigma = sqrt((1 / cos^2 - 1) / d) (0.0247 for d = 384). The variants thus stay in the real
embeddings' region of the space (e5's vectors crowd a narrow cone, which is what makes HNSW's recall
hard) without being copies of their sources. The sparse (lexical) vector is the source's, less one
term drawn at random where it has more than `MIN_TERMS_TO_DROP` terms.

Everything is deterministic given the seed: a variant's randomness is drawn from its own stream
(seed, index), so point i is the same whatever the catalogue's size or the write batches.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.domain.sparse import SparseVector
from service.store.qdrant_store import AnimeStore
from service.store.types import StoredPoint, VectorSchema

DEFAULT_COSINE = 0.9
YEAR_JITTER = 3
MIN_TERMS_TO_DROP = 3
_PAGE = 512


@dataclass
class SourceCatalogue:
    """The real catalogue as plain arrays: one row block per anime and named vector.

    `dense[name]` holds every row of that vector (one per anime, or several for a multivector);
    `rows[name][i]` is anime i's slice of it (empty where it has none).
    """

    schema: VectorSchema
    ids: list[str]
    payloads: list[dict[str, Any]]
    dense: dict[str, np.ndarray]
    rows: dict[str, list[tuple[int, int]]]
    sparse: dict[str, list[SparseVector | None]]
    # The collection's metadata a copy needs (the calibrations), without its index settings.
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            pickle.dump(self, out, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def load(path: Path) -> SourceCatalogue:
        with path.open("rb") as source:
            loaded = pickle.load(source)  # our own file, written by `save`
        if not isinstance(loaded, SourceCatalogue):
            raise TypeError(f"{path} is not a source catalogue")
        return loaded

    def vectors_of(self, index: int) -> dict[str, Any]:
        """Anime `index`'s vectors as arrays (2-D for a multivector) and sparse vectors."""
        out: dict[str, Any] = {}
        for name, block in self.dense.items():
            start, end = self.rows[name][index]
            if end > start:
                out[name] = block[start:end] if name in self.schema.multi else block[start]
        for name, values in self.sparse.items():
            if values[index] is not None:
                out[name] = values[index]
        return out


async def read_source(store: AnimeStore, metadata_keys: Sequence[str] = ()) -> SourceCatalogue:
    """Every point of the store's live collection, in anime id order, with the given metadata keys."""
    collection = await store.live_collection()
    if collection is None:
        raise ValueError(f"{store.location} has no collection behind the alias '{store.alias}'")
    records = []
    offset = None
    while True:
        page, offset = await store.scroll(collection, limit=_PAGE, offset=offset, with_vectors=True)
        records += page
        if offset is None:
            break
    records.sort(key=lambda r: r.anime_id)
    schema = store.schema
    dense: dict[str, list[np.ndarray]] = {name: [] for name in schema.dense}
    rows: dict[str, list[tuple[int, int]]] = {name: [] for name in schema.dense}
    filled = dict.fromkeys(schema.dense, 0)
    sparse: dict[str, list[SparseVector | None]] = {name: [] for name in schema.sparse}
    for record in records:
        for name in schema.dense:
            value = record.vectors.get(name)
            block = np.zeros((0, schema.dense[name]), np.float32)
            if value is not None:
                block = np.asarray(value, np.float32).reshape(-1, schema.dense[name])
            dense[name].append(block)
            rows[name].append((filled[name], filled[name] + len(block)))
            filled[name] += len(block)
        for name in schema.sparse:
            value = record.vectors.get(name)
            sparse[name].append(value if isinstance(value, SparseVector) else None)
    metadata = {key: value for key in metadata_keys if (value := await store.metadata(key)) is not None}
    return SourceCatalogue(
        schema=schema,
        ids=[r.anime_id for r in records],
        payloads=[r.payload for r in records],
        dense={
            name: np.concatenate(blocks) if blocks else np.zeros((0, schema.dense[name]), np.float32)
            for name, blocks in dense.items()
        },
        rows=rows,
        sparse=sparse,
        metadata=metadata,
    )


def noise_sigma(cosine: float, dim: int) -> float:
    """The per-coordinate sigma that moves a unit vector in `dim` dimensions to about `cosine` of it."""
    if not 0.0 < cosine <= 1.0:
        raise ValueError(f"cosine must be in (0, 1], got {cosine}")
    return math.sqrt((1.0 / cosine**2 - 1.0) / dim)


def _perturbed(vectors: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = vectors + rng.normal(0.0, sigma, vectors.shape).astype(np.float32)
    norms = np.linalg.norm(noisy, axis=-1, keepdims=True)
    return noisy / np.where(norms == 0.0, 1.0, norms)


def _year(year: Any, rng: np.random.Generator) -> Any:
    if not isinstance(year, int):
        return year
    return int(min(2100, max(1900, year + int(rng.integers(-YEAR_JITTER, YEAR_JITTER + 1)))))


def _fewer_terms(vector: SparseVector, rng: np.random.Generator) -> SparseVector:
    if len(vector.indices) <= MIN_TERMS_TO_DROP:
        return vector
    drop = int(rng.integers(len(vector.indices)))
    return SparseVector(
        [i for k, i in enumerate(vector.indices) if k != drop],
        [v for k, v in enumerate(vector.values) if k != drop],
    )


def variant_id(source_id: str, copy: int) -> str:
    return f"{source_id}.v{copy}"


def point(
    source: SourceCatalogue, index: int, *, seed: int = 0, cosine: float = DEFAULT_COSINE
) -> StoredPoint:
    """Point `index` of a synthetic catalogue: the real anime `index` itself below len(source), else a
    variant of real anime `index % len(source)` (module docstring)."""
    real = len(source)
    origin = index % real
    vectors = source.vectors_of(origin)
    if index < real:
        return StoredPoint(source.ids[origin], _as_lists(vectors), source.payloads[origin])
    rng = np.random.default_rng([seed, index])
    changed: dict[str, Any] = {}
    for name, value in vectors.items():
        if isinstance(value, SparseVector):
            changed[name] = _fewer_terms(value, rng)
        else:
            changed[name] = _perturbed(value, noise_sigma(cosine, value.shape[-1]), rng)
    anime_id = variant_id(source.ids[origin], index // real)
    payload = {**source.payloads[origin], "anime_id": anime_id}
    if "year" in payload:
        payload["year"] = _year(payload["year"], rng)
    return StoredPoint(anime_id, _as_lists(changed), payload)


def _as_lists(vectors: Mapping[str, Any]) -> dict[str, Any]:
    """Vectors as the store takes them (lists; a multivector a list of lists)."""
    return {n: v if isinstance(v, SparseVector) else v.tolist() for n, v in vectors.items()}


def points(
    source: SourceCatalogue, size: int, *, seed: int = 0, cosine: float = DEFAULT_COSINE, batch: int = 64
) -> Iterator[list[StoredPoint]]:
    """The catalogue of `size` anime in write batches, made one batch at a time (bounded memory)."""
    for start in range(0, size, batch):
        yield [point(source, i, seed=seed, cosine=cosine) for i in range(start, min(size, start + batch))]


def catalogue_ids(real_ids: Sequence[str], size: int) -> list[str]:
    """The anime ids of the catalogue of `size` over these real ids, in point order (no points made)."""
    real = len(real_ids)
    return [real_ids[i] if i < real else variant_id(real_ids[i % real], i // real) for i in range(size)]


def recall_at_k(found: Sequence[str], exact: Sequence[str], k: int = 10) -> float | None:
    """The share of the exact top-k that the approximate top-k found (None: nothing to find)."""
    truth = set(exact[:k])
    if not truth:
        return None
    return len(truth & set(found[:k])) / len(truth)


# Scores closer than this are one score: float32 sums of the same terms in another order differ ~1e-7.
TIE = 1e-6


def recall_with_ties(
    found: Sequence[tuple[str, float]], exact: Sequence[tuple[str, float]], k: int = 10
) -> float | None:
    """recall@k where points tied at the exact k-th score are interchangeable: every exact neighbour
    scoring above the k-th must be found by id, and the remaining slots may be filled by any point
    scoring the k-th score (within `TIE`). Anime with identical vectors are common here (the `facts`
    text of two TV comedies of one year is the same sentence), and id-set recall would count an
    arbitrary choice among them as a miss. Scores are similarities (higher is better); the graph's are
    exact (no quantization), so a score at the k-th's level is a true one."""
    top = list(exact[:k])
    if not top:
        return None
    kth = top[-1][1]
    above = {i for i, score in top if score > kth + TIE}
    tied_slots = len(top) - len(above)
    found_top = found[:k]
    hits_above = sum(1 for i, _ in found_top if i in above)
    hits_tied = sum(1 for _, score in found_top if abs(score - kth) <= TIE)
    return (hits_above + min(hits_tied, tied_slots)) / len(top)
