"""Tokenizing for the text encoders with the `tokenizers` library and the tokenizer.json of the export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from service.domain.manifest import TokenizerSpec

_MIN_BUCKET = 16


_POW2_UP_TO = 64
_LONG_STEP = 32


def bucket_length(length: int, max_length: int) -> int:
    """Pad to the next power of two (16, 32, 64), then to the next multiple of 32; capped at max_length.

    Triton's dynamic batcher only merges requests whose shapes match: a few buckets for the short texts
    concurrent queries are lets them share a batch. Long texts (documents at ingest) come in batches
    already, and a power of two would pad a 140-token synopsis to 256; multiples of 32 waste at most
    31 tokens. Masked padding does not change the pooled embedding.
    """
    if length > _POW2_UP_TO:
        target = -(-length // _LONG_STEP) * _LONG_STEP
    else:
        target = _MIN_BUCKET
        while target < length:
            target *= 2
    return max(min(target, max_length), length)


@dataclass(frozen=True)
class TokenBatch:
    input_ids: np.ndarray
    attention_mask: np.ndarray
    lengths: list[int]
    truncated: list[bool]

    def as_inputs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


class TextTokenizer:
    def __init__(self, directory: Path, spec: TokenizerSpec, max_tokens: int = 0) -> None:
        path = directory / spec.directory / "tokenizer.json"
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self.max_length = min(spec.max_length, max_tokens) if max_tokens else spec.max_length
        self._tokenizer.enable_truncation(self.max_length)
        self.pad_token_id = spec.pad_token_id
        self.special_token_ids = frozenset(spec.special_token_ids)

    def encode(self, texts: list[str]) -> TokenBatch:
        return self.pad(self.tokenize(texts))

    def tokenize(self, texts: list[str]) -> list[Encoding]:
        """Token ids of each text (truncated to the window), unpadded: `pad` batches them."""
        return self._tokenizer.encode_batch(texts)

    def pad(self, encodings: list[Encoding]) -> TokenBatch:
        lengths = [len(e.ids) for e in encodings]
        width = bucket_length(max(lengths, default=1), self.max_length)
        ids = np.full((len(encodings), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : lengths[row]] = encoding.ids
            mask[row, : lengths[row]] = 1
        truncated = [bool(e.overflowing) for e in encodings]
        return TokenBatch(ids, mask, lengths, truncated)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)
