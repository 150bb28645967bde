"""Qdrant index settings: applied when a collection is created (start-up or reindex) and at search time."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from qdrant_client import models

Quantization = Literal["none", "scalar", "binary"]

# Settings Qdrant takes with each query rather than at collection creation. They belong to the running
# service (its environment, or the last reindex request), never to a collection's record, so an
# operator tunes them with a restart, not a rebuild.
QUERY_TIME_FIELDS = ("search_ef", "exact_search_up_to", "quantization_rescore", "quantization_oversampling")


class IndexParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    hnsw_m: Annotated[int, msgspec.Meta(ge=4, le=128, description="HNSW graph degree")] = 16
    hnsw_ef_construct: Annotated[int, msgspec.Meta(ge=4, le=2000)] = 100
    search_ef: Annotated[int, msgspec.Meta(ge=1, le=10_000, description="HNSW ef at query time")] | None = (
        None
    )
    # HNSW over e5's narrow cosine range, and over multivectors (MaxSim) most of all, misses real
    # neighbours: on the bangumi catalogue (8.7k anime) the default ef found 0.87 of the exact top-10
    # names and dropped "Cowboy Bebop" for the query "Cowboy Bebop" under a filter, while a brute-force
    # scan of that size costs about what the graph walk does. So a catalogue up to this many anime is
    # searched exactly, and the graph serves the larger ones (0: always the graph).
    exact_search_up_to: Annotated[
        int, msgspec.Meta(ge=0, le=10_000_000, description="anime up to which a search scans exactly")
    ] = 20_000
    quantization: Quantization = "none"
    quantization_rescore: bool = True
    quantization_oversampling: Annotated[float, msgspec.Meta(ge=1.0, le=16.0)] = 2.0
    on_disk_payload: bool = False
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    replicas: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1

    def merged(self, overrides: dict[str, Any] | None) -> IndexParams:
        """These params with some fields replaced (validated like a request body)."""
        if not overrides:
            return self
        return msgspec.convert(msgspec.structs.asdict(self) | overrides, IndexParams)

    def with_query_time_of(self, other: IndexParams) -> IndexParams:
        """These build-time settings with `other`'s query-time ones."""
        return msgspec.structs.replace(self, **{f: getattr(other, f) for f in QUERY_TIME_FIELDS})

    def hnsw(self) -> models.HnswConfigDiff:
        return models.HnswConfigDiff(m=self.hnsw_m, ef_construct=self.hnsw_ef_construct)

    def quantization_config(self) -> models.QuantizationConfig | None:
        if self.quantization == "scalar":
            return models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                )
            )
        if self.quantization == "binary":
            return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
        return None

    def search_params(self, points: int | None = None) -> models.SearchParams | None:
        """What every query sends: an exact scan for a collection of `points` up to
        `exact_search_up_to` (on the original vectors), else ef and rescoring when quantized."""
        if points is not None and 0 < self.exact_search_up_to >= points:
            ignore = models.QuantizationSearchParams(ignore=True) if self.quantization != "none" else None
            return models.SearchParams(exact=True, quantization=ignore)
        quantization = (
            models.QuantizationSearchParams(
                rescore=self.quantization_rescore, oversampling=self.quantization_oversampling
            )
            if self.quantization != "none"
            else None
        )
        if self.search_ef is None and quantization is None:
            return None
        return models.SearchParams(hnsw_ef=self.search_ef, quantization=quantization)
