"""Text encoder: tokenize -> engine -> dense (+ sparse) vectors, the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.encoders.base import InferenceEngine
from service.encoders.sparse import SparseVector, lexical_weights
from service.encoders.tokenization import TextTokenizer
from service.manifest import ModelManifest


@dataclass(frozen=True)
class TextEmbeddings:
    dense: np.ndarray
    sparse: list[SparseVector] | None
    token_counts: list[int]
    truncated: list[bool]


class TextEncoder:
    def __init__(
        self, manifest: ModelManifest, directory: Path, engine: InferenceEngine, max_tokens: int = 0
    ) -> None:
        if manifest.kind != "text" or manifest.tokenizer is None:
            raise ValueError(f"{manifest.role} is not a text model")
        self.manifest = manifest
        self.engine = engine
        self.tokenizer = TextTokenizer(directory, manifest.tokenizer, max_tokens)
        self.dense_output = manifest.dense_output
        self.outputs = [self.dense_output] + (["sparse"] if manifest.has_sparse else [])

    @property
    def role(self) -> str:
        return self.manifest.role

    @property
    def dim(self) -> int:
        return self.manifest.dim

    async def encode(self, texts: list[str]) -> TextEmbeddings:
        """Embed `texts` in engine-sized chunks, grouped by length so padding stays small."""
        if not texts:
            return TextEmbeddings(
                np.zeros((0, self.dim), np.float32), [] if self.manifest.has_sparse else None, [], []
            )
        chunk = max(1, self.engine.max_batch_size(self.role))
        order = (
            sorted(range(len(texts)), key=lambda i: len(texts[i]))
            if len(texts) > chunk
            else list(range(len(texts)))
        )
        dense = np.zeros((len(texts), self.dim), dtype=np.float32)
        sparse: list[SparseVector | None] = [None] * len(texts)
        counts = [0] * len(texts)
        truncated = [False] * len(texts)
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            batch = self.tokenizer.encode([texts[i] for i in rows])
            result = await self.engine.infer(self.role, batch.as_inputs(), self.outputs)
            dense[rows] = result[self.dense_output]
            if self.manifest.has_sparse:
                weights = lexical_weights(
                    batch.input_ids, result["sparse"], batch.attention_mask, self.tokenizer.special_token_ids
                )
                for row, vector in zip(rows, weights, strict=True):
                    sparse[row] = vector
            for position, row in enumerate(rows):
                counts[row] = batch.lengths[position]
                truncated[row] = batch.truncated[position]
        return TextEmbeddings(
            dense=dense,
            sparse=[s for s in sparse if s is not None] if self.manifest.has_sparse else None,
            token_counts=counts,
            truncated=truncated,
        )
