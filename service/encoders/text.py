"""Text encoder: tokenize -> engine -> dense (+ sparse) vectors, the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from service.domain.manifest import ModelManifest, model_ref
from service.domain.sparse import SparseVector
from service.encoders.base import InferenceEngine
from service.encoders.manifested import ManifestedEncoder
from service.encoders.sparse import lexical_weights
from service.encoders.tokenization import TextTokenizer

TextKind = Literal["query", "document"]


@dataclass(frozen=True)
class TextEmbeddings:
    dense: np.ndarray
    sparse: list[SparseVector] | None
    token_counts: list[int]
    truncated: list[bool]


class TextEncoder(ManifestedEncoder):
    def __init__(
        self,
        manifest: ModelManifest,
        directory: Path,
        engine: InferenceEngine,
        max_tokens: int = 0,
        *,
        version: int | None = None,
    ) -> None:
        """`version`: which version of the role the engine runs (None: the one it serves)."""
        if manifest.kind != "text" or manifest.tokenizer is None:
            raise ValueError(f"{manifest.role} is not a text model")
        super().__init__(manifest)
        self.model = model_ref(manifest.role, version)
        self.engine = engine
        self.tokenizer = TextTokenizer(directory, manifest.tokenizer, max_tokens)
        self.dense_output = manifest.dense_output
        self.outputs = [self.dense_output] + (["sparse"] if manifest.has_sparse else [])

    def prompt(self, kind: TextKind) -> str:
        return self.manifest.prompts.query if kind == "query" else self.manifest.prompts.document

    async def encode(
        self, texts: list[str], *, kind: TextKind, memo: EmbeddingMemo | None = None
    ) -> TextEmbeddings:
        """Embed `texts` as queries or as documents, in engine-sized chunks grouped by length.

        `kind` has no default on purpose: models such as E5 are trained with a different prompt for
        each side, and a text embedded with the wrong one ranks worse without any error. A text that
        repeats (here, or in `memo` from earlier calls of one ingest) is embedded once.
        """
        prompted = [self.prompt(kind) + text for text in texts]
        rows: dict[str, int] = {}
        remembered: dict[str, _Embedded] = {}
        for text in prompted:
            if text in rows or text in remembered:
                continue
            if memo is not None and text in memo:
                # Taken now: storing this call's fresh texts below may push it out of the memo.
                remembered[text] = memo.get(text)
            else:
                rows[text] = len(rows)
        fresh = await self._encode(list(rows))
        dense = np.zeros((len(texts), self.dim), dtype=np.float32)
        sparse: list[SparseVector] = []
        counts: list[int] = []
        truncated: list[bool] = []
        for position, text in enumerate(prompted):
            if text in rows:
                row = rows[text]
                found = _Embedded(
                    fresh.dense[row],
                    fresh.sparse[row] if fresh.sparse is not None else None,
                    fresh.token_counts[row],
                    fresh.truncated[row],
                )
                if memo is not None:
                    memo.put(text, found)
            else:
                found = remembered[text]
            dense[position] = found.dense
            if found.sparse is not None:
                sparse.append(found.sparse)
            counts.append(found.tokens)
            truncated.append(found.truncated)
        return TextEmbeddings(dense, sparse if self.manifest.has_sparse else None, counts, truncated)

    async def _encode(self, texts: list[str]) -> TextEmbeddings:
        if not texts:
            return TextEmbeddings(
                np.zeros((0, self.dim), np.float32), [] if self.manifest.has_sparse else None, [], []
            )
        chunk = max(1, self.engine.max_batch_size(self.model))
        encodings = self.tokenizer.tokenize(texts)
        # Chunks of similar token counts: each is padded to its longest text only.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        dense = np.zeros((len(texts), self.dim), dtype=np.float32)
        sparse: list[SparseVector | None] = [None] * len(texts)
        counts = [0] * len(texts)
        truncated = [False] * len(texts)
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            batch = self.tokenizer.pad([encodings[i] for i in rows])
            result = await self.engine.infer(self.model, batch.as_inputs(), self.outputs)
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


@dataclass(frozen=True)
class _Embedded:
    dense: np.ndarray
    sparse: SparseVector | None
    tokens: int
    truncated: bool


class EmbeddingMemo:
    """Embeddings of prompted texts already computed in one ingest run (a name shared by a franchise's
    seasons, the calibration's sample synopses), keyed by the exact text the model saw. Bounded: past
    `max_entries` the oldest half is forgotten."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._items: dict[str, _Embedded] = {}
        self.hits = 0

    def __contains__(self, text: str) -> bool:
        return text in self._items

    def get(self, text: str) -> _Embedded:
        self.hits += 1
        return self._items[text]

    def put(self, text: str, embedded: _Embedded) -> None:
        if len(self._items) >= self.max_entries:
            for key in list(self._items)[: self.max_entries // 2]:
                del self._items[key]
        self._items[text] = embedded
