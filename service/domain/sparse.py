"""A sparse vector (token ids and weights): what lexical encoders produce and the store's sparse vectors hold.

A value type in the domain so the store can carry sparse vectors without importing an encoder.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]

    def __len__(self) -> int:
        return len(self.indices)
