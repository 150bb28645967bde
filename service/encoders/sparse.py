"""BGE-m3 lexical weights: per-token weights from the graph, max-pooled per token id."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

from service.domain.sparse import SparseVector


def lexical_weights(
    input_ids: np.ndarray,
    token_weights: np.ndarray,
    attention_mask: np.ndarray,
    special_token_ids: Collection[int],
) -> list[SparseVector]:
    """One sparse vector per row: for each distinct token id, its largest weight; zeros dropped.

    Special tokens (CLS, EOS, PAD, UNK) are removed as in BGE-m3's reference implementation: they
    occur in every text and would match everything.
    """
    special = np.fromiter(special_token_ids, dtype=np.int64) if special_token_ids else np.empty(0, np.int64)
    vectors: list[SparseVector] = []
    for ids, weights, mask in zip(input_ids, token_weights, attention_mask, strict=True):
        keep = (mask > 0) & (weights > 0) & ~np.isin(ids, special)
        ids_kept = ids[keep]
        weights_kept = weights[keep].astype(np.float32)
        if ids_kept.size == 0:
            vectors.append(SparseVector([], []))
            continue
        unique, inverse = np.unique(ids_kept, return_inverse=True)
        pooled = np.zeros(unique.shape[0], dtype=np.float32)
        np.maximum.at(pooled, inverse, weights_kept)
        vectors.append(SparseVector(unique.tolist(), pooled.tolist()))
    return vectors


def merge_max(vectors: Iterable[SparseVector]) -> SparseVector:
    """One sparse vector from several: each token id keeps its largest weight (BGE-m3's own pooling,
    applied across the texts of one document as within one text)."""
    pooled: dict[int, float] = {}
    for vector in vectors:
        for index, value in zip(vector.indices, vector.values, strict=True):
            if value > pooled.get(index, 0.0):
                pooled[index] = value
    indices = sorted(pooled)
    return SparseVector(indices, [pooled[i] for i in indices])
