"""What the façade caches and when it forgets it.

* Query embeddings: key = model version + the exact normalised input (text, or the picture's base64),
  long TTL: an embedding only changes with the model, and the version is in the key.
* Whole answers: key = endpoint + the canonical request + the catalogue generation, short TTL.
  Every write to the store bumps the generation after it lands, so no answer computed before a write
  can be served after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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
    dense: np.ndarray
    sparse: SparseVector | None = None
    tokens: int = 0
    truncated: bool = False


class SearchCache:
    def __init__(
        self,
        backend: CacheBackend,
        metrics: Metrics,
        *,
        result_ttl_s: float,
        embedding_ttl_s: float,
        enabled: bool = True,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.result_ttl_s = result_ttl_s
        self.embedding_ttl_s = embedding_ttl_s
        self.enabled = enabled

    async def embedding(
        self, model_version: str, query: str, compute: Callable[[], Awaitable[QueryEmbedding]]
    ) -> QueryEmbedding:
        if not self.enabled:
            return await compute()
        key = cache_key("embedding", model_version, query)
        raw = await self.backend.get(key)
        if raw is not None:
            self.metrics.cache_result("embedding", hit=True)
            cached = msgspec.msgpack.decode(raw, type=_Embedding)
            sparse = (
                SparseVector(cached.sparse_indices, cached.sparse_values)
                if cached.sparse_indices is not None and cached.sparse_values is not None
                else None
            )
            return QueryEmbedding(
                np.frombuffer(cached.dense, dtype=np.float32), sparse, cached.tokens, cached.truncated
            )
        self.metrics.cache_result("embedding", hit=False)
        value = await compute()
        entry = _Embedding(
            dense=np.ascontiguousarray(value.dense, dtype=np.float32).tobytes(),
            sparse_indices=value.sparse.indices if value.sparse is not None else None,
            sparse_values=value.sparse.values if value.sparse is not None else None,
            tokens=value.tokens,
            truncated=value.truncated,
        )
        await self.backend.set(key, msgspec.msgpack.encode(entry), self.embedding_ttl_s)
        return value

    async def answer(
        self,
        endpoint: str,
        request: Any,
        kind: type[_S],
        compute: Callable[[], Awaitable[_S]],
        keep: Callable[[_S], bool] = lambda _: True,
    ) -> tuple[_S, bool]:
        """(answer, was_cached). Skips the cache whenever the generation is unknown (backend trouble);
        `keep` decides whether a fresh answer may be stored (degraded answers must not outlive the outage)."""
        if not self.enabled:
            return await compute(), False
        generation = await self.backend.generation(CATALOGUE)
        if not generation_known(generation):
            return await compute(), False
        key = cache_key("answer", endpoint, msgspec.json.encode(request), str(generation))
        raw = await self.backend.get(key)
        if raw is not None:
            self.metrics.cache_result("result", hit=True)
            return msgspec.msgpack.decode(raw, type=kind), True
        self.metrics.cache_result("result", hit=False)
        value = await compute()
        if keep(value):
            await self.backend.set(key, msgspec.msgpack.encode(value), self.result_ttl_s)
        return value, False

    async def invalidate(self) -> None:
        """After a write landed: every cached answer belongs to an older generation from now on."""
        await self.backend.bump(CATALOGUE)

    async def close(self) -> None:
        await self.backend.close()
