"""A multivector's slots: its rows as a few plain vectors with graphs of their own, which find the
candidates of a MaxSim list on a large catalogue.

An anime's names are one multivector scored by MaxSim (its best name for a one-vector query). HNSW over
MaxSim walks badly and builds slowly: at 200k anime the graph over ~800k names took most of an 81-minute
index build and found 0.68 of the exact top 10 at the default ef (benchmarks/RESULTS.md §6). A single
stand-in per anime (the unit mean of its names) does not find them either: on the 200k catalogue its
shortlist of 800 held 0.88 of the exact top 10, since a query matches one name of about five.

So a collection also stores, per multivector, `slots` plain vectors: slot j is the anime's j-th row,
the last slot the unit mean of the rows from there on (most anime have fewer rows than slots: five
names at the median, eight at the 90th percentile, sixteen at most on the real catalogue). Each slot
has a graph, the multivector none (m=0). Past the exact-scan size a MaxSim list is asked as one Query
API call: a prefetch per slot (the list's depth each, same filter), their union rescored exactly by
MaxSim. For a one-vector query the best slot is the best row wherever the rows fit the slots, so the
union holds the exact answer but for the graphs' own misses; on the 50k catalogue with 6 title slots
the union of exact slot lists held 0.998 of the exact top 10 (4 slots: 0.980). A query of several rows
(an anime's own names, for "more like this") asks the slots with their unit mean. Up to the exact-scan
size a MaxSim list stays an exact scan over every row.

The slots are derived by the store on every write and dropped from every read: nothing above the store
knows them. A collection built before them keeps its multivector graph and is searched as before until
a reindex rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

SEPARATOR = "__slot"

# Slots a multivector gets where the schema does not say (VectorSchema.slots).
DEFAULT_SLOTS = 4


def slot_name(multi_name: str, slot: int) -> str:
    return f"{multi_name}{SEPARATOR}{slot}"


def slot_names(multi_name: str, slots: int) -> list[str]:
    return [slot_name(multi_name, j) for j in range(slots)]


def is_slot(name: str) -> bool:
    return SEPARATOR in name


def unit_mean(rows: Any) -> list[float]:
    """The unit mean of some rows (unit vectors themselves; their mean is not)."""
    matrix = np.asarray(rows, dtype=np.float64).reshape(-1, np.shape(rows)[-1])
    mean = matrix.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    # Opposite rows have no mean direction: the first of them stands in rather than a zero vector.
    return (mean / norm if norm > 1e-12 else matrix[0]).tolist()


def slot_vectors(rows: Any, slots: int) -> list[Any]:
    """A multivector's slots that it fills: its first rows as they are (the write converts them), the
    last slot the unit mean of the rest."""
    listed = list(rows)
    if len(listed) <= slots:
        return listed
    return [*listed[: slots - 1], unit_mean(listed[slots - 1 :])]


def with_slots(vectors: Mapping[str, Any], slots: Mapping[str, int]) -> dict[str, Any]:
    """`vectors` plus the slots of each multivector among them (`slots`: multivector -> how many)."""
    out = dict(vectors)
    for name, count in slots.items():
        rows = vectors.get(name)
        if rows is None or len(rows) == 0:
            continue
        for j, vector in enumerate(slot_vectors(rows, count)):
            out[slot_name(name, j)] = vector
    return out
