"""Whether a collection fits the deployed models, and how to build one that does (pure).

Reads a collection's description (`models.CollectionInfo`) against the `VectorSchema` the models
produce: which vectors are missing or have another size, kind or metric, which optional ones it lacks,
and the index settings it recorded when it was built. Also the vector configuration a new collection
gets, so that what is created and what is checked are written once.
"""

from __future__ import annotations

from typing import Any

import msgspec
from qdrant_client import models

from service.store.params import IndexParams
from service.store.slots import slot_names
from service.store.types import VectorSchema

_DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}

# The index settings a collection was built with, kept in its metadata: a server reports HNSW and
# quantization itself, but local mode forgets them, neither keeps the query-time ones, and after a
# restart the environment's settings may no longer be those the live collection was built with.
PARAMS_METADATA_KEY = "avs_index_params"


def distance_of(schema: VectorSchema, name: str) -> models.Distance:
    """Multivectors are always cosine: their entries are centred and re-normalised unit vectors, and
    MaxSim over a distance (lower is better) would pick the worst match. QDRANT_DISTANCE sets the rest."""
    return models.Distance.COSINE if name in schema.multi else _DISTANCES[schema.distance]


def vectors_config(schema: VectorSchema) -> dict[str, models.VectorParams]:
    """The dense vectors of a new collection of `schema`: a multivector without a graph of its own, and
    beside it its slots with one each (service/store/slots.py)."""
    max_sim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    config: dict[str, models.VectorParams] = {}
    for vector, dim in schema.dense.items():
        if vector in schema.multi:
            config[vector] = models.VectorParams(
                size=dim,
                distance=distance_of(schema, vector),
                multivector_config=max_sim,
                hnsw_config=models.HnswConfigDiff(m=0),
            )
            for slot in slot_names(vector, schema.slots[vector]):
                config[slot] = models.VectorParams(size=dim, distance=models.Distance.COSINE)
        else:
            config[vector] = models.VectorParams(size=dim, distance=distance_of(schema, vector))
    return config


def slotted(info: models.CollectionInfo, schema: VectorSchema) -> frozenset[str]:
    """The schema's multivectors whose slots the collection stores (none: built before them)."""
    vectors = info.config.params.vectors
    existing = set(vectors) if isinstance(vectors, dict) else set()
    return frozenset(name for name, count in schema.slots.items() if set(slot_names(name, count)) <= existing)


def sparse_vectors_config(schema: VectorSchema) -> dict[str, models.SparseVectorParams] | None:
    """The sparse vectors of a new collection of `schema` (None: it has none)."""
    return {
        vector: models.SparseVectorParams(modifier=models.Modifier.IDF if vector in schema.idf else None)
        for vector in schema.sparse
    } or None


def missing_optional(info: models.CollectionInfo, schema: VectorSchema) -> frozenset[str]:
    """The schema's optional vectors the collection does not have (a version exported after it)."""
    vectors = info.config.params.vectors
    existing = set(vectors if isinstance(vectors, dict) else {"": vectors})
    existing |= set(info.config.params.sparse_vectors or {})
    return frozenset(name for name in schema.optional if name not in existing)


def problems(info: models.CollectionInfo, schema: VectorSchema) -> tuple[list[str], list[str]]:
    """What keeps a collection from serving the deployed models: (vectors, metric) problems. Optional
    vectors it lacks are not problems (`missing_optional`)."""
    vectors = info.config.params.vectors
    existing = vectors if isinstance(vectors, dict) else {"": vectors}
    sparse_existing = info.config.params.sparse_vectors or {}
    shape: list[str] = []
    distance: list[str] = []
    for name, dim in schema.dense.items():
        params = existing.get(name)
        if params is None:
            if name not in schema.optional:
                shape.append(f"vector '{name}' is missing")
            continue
        if params.size != dim:
            shape.append(f"vector '{name}' has {params.size} dims, the model gives {dim}")
        if (params.multivector_config is not None) != (name in schema.multi):
            kind = "several vectors per anime (MaxSim)" if name in schema.multi else "one vector per anime"
            shape.append(f"vector '{name}' should hold {kind}")
            continue
        if params.distance != distance_of(schema, name):
            # Scores would be read in the wrong metric (e.g. a distance taken for a similarity).
            distance.append(
                f"vector '{name}' uses {params.distance.value} distance, QDRANT_DISTANCE is {schema.distance}"
            )
    for name in schema.sparse:
        if name not in sparse_existing:
            if name not in schema.optional:
                shape.append(f"sparse vector '{name}' is missing")
        elif (sparse_existing[name].modifier == models.Modifier.IDF) != (name in schema.idf):
            shape.append(
                f"sparse vector '{name}' should {'' if name in schema.idf else 'not '}use the IDF modifier"
            )
    return shape, distance


def metadata_of(info: models.CollectionInfo) -> dict[str, Any]:
    """A collection's metadata (empty where the engine or an older Qdrant keeps none)."""
    return dict(getattr(info.config, "metadata", None) or {})


def recorded_params(info: models.CollectionInfo) -> IndexParams | None:
    """The settings recorded at creation; None for a collection made elsewhere or before they were."""
    recorded = metadata_of(info).get(PARAMS_METADATA_KEY)
    if recorded is None:
        return None
    try:
        return msgspec.convert(recorded, IndexParams)
    except msgspec.ValidationError:
        return None  # written by another version of the service: fall back like an unrecorded one
