"""What the admin endpoints show of the store: the live collection's configuration and its contents.

Read-only views, assembled from the collection's description, its recorded settings and counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from qdrant_client import models

from service.store import schema_check
from service.store.backend import Backend
from service.store.collection import Collection
from service.store.guard import StoreGuard
from service.store.reads import Reads


@dataclass(eq=False)
class Overview:
    _backend: Backend
    _guard: StoreGuard
    _collection: Collection
    _reads: Reads

    async def collection_info(self, collection: str | None = None) -> dict[str, Any]:
        alias = self._collection.alias
        name = collection or await self._collection.live()
        if name is None:
            return {"alias": alias, "collection": None}
        info = await self._collection.read(name)
        params = info.config.params
        vectors = params.vectors if isinstance(params.vectors, dict) else {"": params.vectors}
        return {
            "alias": alias,
            "collection": name,
            "engine": self._backend.engine,
            "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "optimizer_status": str(info.optimizer_status),
            "points": info.points_count,
            "indexed_vectors": info.indexed_vectors_count,
            "segments": info.segments_count,
            "vectors": {
                name: {
                    "size": v.size,
                    "distance": str(v.distance.value),
                    "on_disk": v.on_disk,
                    # Several vectors per anime, scored by the best match (MaxSim).
                    "multivector": v.multivector_config is not None,
                }
                for name, v in vectors.items()
            },
            "sparse_vectors": sorted(params.sparse_vectors or {}),
            "idf": sorted(
                name
                for name, sparse in (params.sparse_vectors or {}).items()
                if sparse.modifier == models.Modifier.IDF
            ),
            "calibration": msgspec.to_builtins(await self._collection.calibration(name)) if name else None,
            "shards": params.shard_number,
            "replicas": params.replication_factor,
            "on_disk_payload": params.on_disk_payload,
            "hnsw": info.config.hnsw_config.model_dump(exclude_none=True),
            "quantization": (
                info.config.quantization_config.model_dump(exclude_none=True)
                if info.config.quantization_config
                else None
            ),
            # What this collection was built with (its record), not what the environment says now;
            # query-time settings as searches send them.
            "configured": msgspec.to_builtins(self._collection.params_of(info)),
            "configured_from": "collection" if schema_check.recorded_params(info) is not None else "settings",
            "note": (
                "local mode searches exactly (brute force); HNSW and quantization apply on a Qdrant server"
                if self._backend.is_local
                else None
            ),
        }

    async def stats(self) -> dict[str, Any]:
        await self._collection.ensure_ready()
        alias = self._collection.alias
        collection = await self._collection.live()
        total = await self._reads.count()
        per_vector = {}
        schema = self._collection.schema
        for name in [*schema.dense, *schema.sparse]:
            condition = models.Filter(must=[models.HasVectorCondition(has_vector=name)])
            per_vector[name] = await self._reads.count(count_filter=condition)
        facet = await self._guard.call(
            self._backend.client.facet(alias, key="model_version", limit=100, exact=True), "facet"
        )
        if self._backend.is_local:
            indexes: dict[str, Any] | str = "local mode keeps no payload indexes (it scans)"
        else:
            info = await self._guard.call(
                self._backend.client.get_collection(collection or alias), "reading collection"
            )
            indexes = {
                key: {"type": str(field.data_type.value), "points": field.points}
                for key, field in (info.payload_schema or {}).items()
            }
        return {
            "alias": alias,
            "collection": collection,
            "store": self._backend.engine,
            "points": total,
            "vectors": per_vector,
            "payload_indexes": indexes,
            "model_versions": {str(hit.value): hit.count for hit in facet.hits},
        }
