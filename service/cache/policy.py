"""What the façade caches and when it forgets it.

* Query embeddings: key = model version + the exact normalised input (text, or the picture's base64),
  long TTL: an embedding only changes with the model, and the version is in the key.
  `CachedQueryEncoder` wraps any query encoder from outside (same interface), so an encoder never
  knows it is cached.
* Whole answers: key = endpoint + the canonical request + the catalogue generation, short TTL.
  Every write to the store bumps the generation after it lands, so no answer computed before a write
  can be served after it. `SearchCache` only reads and writes these entries; the wrapper that puts it
  around a use case is `service/search/cached_answers.py` (it knows the answers' shape, this module
  does not).

This module may import the cache backends, the encoders' value types and the metrics; nothing above.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import numpy as np

from service.cache.backends import CacheBackend, cache_key, generation_known
from service.domain.sparse import SparseVector
from service.platform.metrics import Metrics

CATALOGUE = "catalogue"
_S = TypeVar("_S")


class _Embedding(msgspec.Struct, array_like=True):
    dense: bytes
    sparse_indices: list[int] | None = None
    sparse_values: list[float] | None = None
    tokens: int = 0
    truncated: bool = False


@dataclass(frozen=True)
class QueryEmbedding:
    """One query's vectors, and what the text encoder noticed on the way (tokens, truncation)."""

    dense: np.ndarray
    sparse: SparseVector | None = None
    tokens: int = 0
    truncated: bool = False


class QueryEncoder(Protocol):
    """Anything that turns one query (a text, or a picture's base64) into its embedding."""

    @property
    def model_version(self) -> str: ...

    async def embed(self, query: str) -> QueryEmbedding: ...


@dataclass(eq=False)
class SearchCache:
    """The two kinds of entries on one backend; counts hits and misses; a no-op when disabled."""

    backend: CacheBackend
    metrics: Metrics
    _: KW_ONLY
    result_ttl_s: float
    embedding_ttl_s: float
    enabled: bool = True

    # -- embeddings -------------------------------------------------------------------------------

    async def embedding(self, model_version: str, query: str) -> QueryEmbedding | None:
        """The cached embedding, or None (a miss, or the cache is off: then nothing is counted)."""
        if not self.enabled:
            return None
        raw = await self.backend.get(cache_key("embedding", model_version, query))
        self.metrics.cache_result("embedding", hit=raw is not None)
        if raw is None:
            return None
        cached = msgspec.msgpack.decode(raw, type=_Embedding)
        sparse = (
            SparseVector(cached.sparse_indices, cached.sparse_values)
            if cached.sparse_indices is not None and cached.sparse_values is not None
            else None
        )
        return QueryEmbedding(
            np.frombuffer(cached.dense, dtype=np.float32), sparse, cached.tokens, cached.truncated
        )

    async def keep_embedding(self, model_version: str, query: str, value: QueryEmbedding) -> None:
        if not self.enabled:
            return
        entry = _Embedding(
            dense=np.ascontiguousarray(value.dense, dtype=np.float32).tobytes(),
            sparse_indices=value.sparse.indices if value.sparse is not None else None,
            sparse_values=value.sparse.values if value.sparse is not None else None,
            tokens=value.tokens,
            truncated=value.truncated,
        )
        key = cache_key("embedding", model_version, query)
        await self.backend.set(key, msgspec.msgpack.encode(entry), self.embedding_ttl_s)

    # -- answers ----------------------------------------------------------------------------------

    async def answer_key(self, endpoint: str, request: Any) -> str | None:
        """The key of this question's answer in the current catalogue generation; None when answers
        must not be cached now (the cache is off, or the generation is unknown: backend trouble)."""
        if not self.enabled:
            return None
        generation = await self.backend.generation(CATALOGUE)
        if not generation_known(generation):
            return None
        return cache_key("answer", endpoint, msgspec.json.encode(request), str(generation))

    async def answer(self, key: str, kind: type[_S]) -> _S | None:
        raw = await self.backend.get(key)
        self.metrics.cache_result("result", hit=raw is not None)
        return None if raw is None else msgspec.msgpack.decode(raw, type=kind)

    async def keep_answer(self, key: str, value: Any) -> None:
        await self.backend.set(key, msgspec.msgpack.encode(value), self.result_ttl_s)

    # -- lifecycle --------------------------------------------------------------------------------

    async def invalidate(self) -> None:
        """After a write landed: every cached answer belongs to an older generation from now on."""
        await self.backend.bump(CATALOGUE)

    async def close(self) -> None:
        await self.backend.close()


class CachedQueryEncoder:
    """A query encoder behind the embedding cache, with the encoder's own interface.

    The work the inner encoder does (decoding a picture included) only happens on a miss."""

    def __init__(self, inner: QueryEncoder, cache: SearchCache) -> None:
        self.inner = inner
        self.cache = cache

    @property
    def model_version(self) -> str:
        return self.inner.model_version

    async def embed(self, query: str) -> QueryEmbedding:
        cached = await self.cache.embedding(self.model_version, query)
        if cached is not None:
            return cached
        value = await self.inner.embed(query)
        await self.cache.keep_embedding(self.model_version, query, value)
        return value
