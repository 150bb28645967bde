"""Cache backends for embeddings and whole search results: in-process LRU, shared Redis, fail-open wrapper.

Two kinds of entries share one backend:

* embeddings: key = ``cache_key(model_version, normalised_input)``, value = the vector's bytes;
* search results: key = ``cache_key(request_bytes, str(generation))``. Every catalogue write (upsert,
  delete, reindex) calls ``bump(namespace)`` *after* it lands, so results computed before the write live
  under an old generation and can never be read again; they simply age out through their TTL.

Correctness rules the façade must follow (and that the backends are built around):

* A negative generation means "unknown" (see :func:`generation_known`). Do not read or write the
  result cache with it. :class:`FailOpenCache` also returns a *fresh random* negative number on each
  failure, so a caller that forgets the check still builds a key that nobody else will ever build:
  a miss by construction, never a stale hit.
* Generations must never go backwards. The memory backend never evicts them; in Redis they have no TTL,
  so run Redis with ``maxmemory-policy`` ``volatile-lru``/``volatile-ttl``/``noeviction`` (never an
  ``allkeys-*`` policy, which could evict a generation key, restart it at 1 and resurrect old results).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from service.platform.logs import get_logger
from service.platform.resilience import CLOSED, OPENED, Circuit, CircuitOpen

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "CacheBackend",
    "FailOpenCache",
    "MemoryCache",
    "RedisCache",
    "build_cache",
    "cache_key",
    "generation_known",
]

_T = TypeVar("_T")
_log = get_logger("service.cache.backends")


@runtime_checkable
class CacheBackend(Protocol):
    """What the façade needs from a cache. Values are opaque bytes; keys are short ASCII strings."""

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def generation(self, namespace: str) -> int: ...

    async def bump(self, namespace: str) -> int: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def cache_key(*parts: str | bytes) -> str:
    """Stable sha256 hex digest of ``parts``.

    Encoding (a contract: changing it silently invalidates every shared Redis entry): each part is
    UTF-8 encoded if it is a ``str``, then written as its byte length (8 bytes, big-endian) followed by
    its bytes. Length prefixes make the encoding injective, so ``("ab", "c")`` and ``("a", "bc")``
    differ, and no separator character has to be escaped. ``str`` and ``bytes`` with the same UTF-8
    bytes give the same key on purpose: the key is about content, not Python types.
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def generation_known(generation: int) -> bool:
    """False for the "unknown generation" values a fail-open cache returns: skip the result cache then."""
    return generation >= 0


def _unknown_generation() -> int:
    # Random rather than a constant -1: two replicas that both lost Redis must not meet on the same
    # "-1" key once Redis is back, because a result stored under it may predate a write.
    return -1 - secrets.randbits(62)


# --------------------------------------------------------------------------------------------------
# In-process LRU
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float
    size: int


class MemoryCache:
    """In-process LRU bounded by entry count and by bytes, with a per-entry TTL.

    Every operation is O(1): an ``OrderedDict`` keeps recency order, expired entries are dropped when
    read or when they reach the LRU end. An entry's size is ``len(key) + len(value)``, so many tiny
    values under long keys still count. Generations live in a separate dict that is never evicted:
    forgetting one would restart it at 0 and could revive results cached before a write.

    Not thread-safe; it is meant to be used from one event loop, where there is no await between the
    read and the write of ``bump`` and so it is atomic.
    """

    name = "memory"

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._generations: dict[str, int] = {}
        self._evictions = 0
        self._expirations = 0

    @property
    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "bytes": self._bytes,
            "evictions": self._evictions,
            "expirations": self._expirations,
        }

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._remove(key, entry)
            self._expirations += 1
            return None
        self._entries.move_to_end(key)
        return entry.value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        # A non-positive TTL means "do not cache"; storing it would only cost an eviction.
        if ttl_s <= 0:
            return
        value = bytes(value)  # bytearray/memoryview: take an immutable copy the caller cannot mutate
        size = len(key) + len(value)
        old = self._entries.get(key)
        if old is not None:
            self._remove(key, old)
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        self._entries[key] = _Entry(value, self._clock() + ttl_s, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, lru = self._entries.popitem(last=False)
            self._bytes -= lru.size
            if lru.expires_at <= self._clock():
                self._expirations += 1
            else:
                self._evictions += 1

    async def generation(self, namespace: str) -> int:
        return self._generations.get(namespace, 0)

    async def bump(self, namespace: str) -> int:
        value = self._generations.get(namespace, 0) + 1
        self._generations[namespace] = value
        return value

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _remove(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        self._bytes -= entry.size


# --------------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------------


class RedisCache:
    """Shared cache in Redis (redis.asyncio), so every replica sees the same entries and generations.

    Keys: ``<prefix>v:<key>`` for values (``SET ... PX``), ``<prefix>g:<namespace>`` for generations
    (``INCR``, no TTL). The ``v:``/``g:`` split keeps a value key from ever colliding with a generation.

    Every command is bounded by ``timeout_s`` end to end (pool, connect, write, read) and is never
    retried: a cache lookup that waits longer than the work it saves is worse than a miss. Errors are
    raised; wrap this in :class:`FailOpenCache` to turn them into misses.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "avs:",
        timeout_s: float = 0.25,
        max_value_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        # Imported here so that deployments without REDIS_URL never load redis-py.
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.max_value_bytes = max_value_bytes
        self.oversized = 0  # values refused because of max_value_bytes
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # redis-py >= 6 retries 3 times with backoff by default: that would triple the worst case.
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
            decode_responses=False,
        )

    def _value_key(self, key: str) -> str:
        return f"{self.prefix}v:{key}"

    def _generation_key(self, namespace: str) -> str:
        return f"{self.prefix}g:{namespace}"

    async def _bounded(self, awaitable: Awaitable[_T]) -> _T:
        # Socket timeouts alone bound each syscall, not the sum of connect + write + read.
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(self.timeout_s):
                return await awaitable
        return await asyncio.wait_for(awaitable, self.timeout_s)

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._bounded(self._client.get(self._value_key(key)))
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        if len(value) > self.max_value_bytes:
            # One huge value would hold a connection for long and push many small useful ones out.
            self.oversized += 1
            return
        # Round up: PX 0 is an error in Redis, and a TTL shorter than asked is worse than a bit longer.
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        await self._bounded(self._client.set(self._value_key(key), bytes(value), px=ttl_ms))

    async def generation(self, namespace: str) -> int:
        raw: bytes | None = await self._bounded(self._client.get(self._generation_key(namespace)))
        return 0 if raw is None else int(raw)

    async def bump(self, namespace: str) -> int:
        # INCR is atomic in Redis: concurrent writers on every replica each get a distinct new value.
        value: int = await self._bounded(self._client.incr(self._generation_key(namespace)))
        return value

    async def ping(self) -> bool:
        return bool(await self._bounded(self._client.ping()))

    async def close(self) -> None:
        await self._client.aclose()


# --------------------------------------------------------------------------------------------------
# Fail-open wrapper with a circuit breaker
# --------------------------------------------------------------------------------------------------


class FailOpenCache:
    """Wraps a backend so that its failures cost hit rate, never requests or correctness.

    * ``get`` -> ``None``, ``set`` -> nothing, on any error or timeout.
    * ``generation`` -> a fresh negative number (see :func:`generation_known`), never the last value
      seen: another replica may have bumped since, and a stale generation would serve stale results.
    * ``bump`` -> a negative number on failure, and the bump is remembered and replayed before any
      other call reaches the backend again. Until it lands, ``generation`` of that namespace is unknown.
      Replaying a bump that had in fact reached Redis (a timeout after the write) costs only misses.
    * Circuit (the platform's breaker, :class:`~service.platform.resilience.Circuit`): after
      ``failure_threshold`` consecutive failures the backend is skipped for ``cooldown_s``; then a
      single probe call goes through while the others keep skipping. Success closes the circuit,
      failure reopens it. ``ping`` always goes through, so health checks report the truth.
    * Logs the first failure and then one line per ``log_every`` failures, so an outage does not
      flood the logs at request rate.
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 5.0,
        log_every: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.log_every = max(1, log_every)
        self.circuit = Circuit(
            f"cache:{backend.name}",
            threshold=failure_threshold,
            reset_s=cooldown_s,
            # A skipped lookup costs one miss; a crowd of probes into a struggling Redis costs latency.
            single_probe=True,
            clock=clock,
            on_change=self._circuit_changed,
        )
        self.errors = 0  # every failed call to the backend
        self.skipped = 0  # calls answered without the backend because the circuit was open
        self._consecutive = 0  # failures since the last success, for health and the logs
        # namespace -> token of its latest failed or in-flight bump (see bump()).
        self._pending_bumps: dict[str, int] = {}
        self._bump_seq = 0

    @property
    def healthy(self) -> bool:
        return self._consecutive == 0 and not self._pending_bumps

    @property
    def circuit_open(self) -> bool:
        """Opened or half-opened: not yet closed again by a successful call."""
        return self.circuit.state != CLOSED

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "healthy": self.healthy,
            "circuit_open": self.circuit_open,
            "errors": self.errors,
            "skipped": self.skipped,
            "consecutive_failures": self._consecutive,
            "pending_bumps": len(self._pending_bumps),
        }

    async def get(self, key: str) -> bytes | None:
        ok, value = await self._call("get", lambda: self.backend.get(key))
        return value if ok else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._call("set", lambda: self.backend.set(key, value, ttl_s))

    async def generation(self, namespace: str) -> int:
        ok, value = await self._call("generation", lambda: self.backend.generation(namespace))
        if not ok or value is None or namespace in self._pending_bumps:
            return _unknown_generation()
        return value

    async def bump(self, namespace: str) -> int:
        # Recorded before trying, so that a failure (or a skip while the circuit is open) leaves it to
        # be replayed. The new token also stops a concurrent, older replay from clearing it: that
        # replay's INCR may have reached Redis before this write landed, so it does not cover it.
        self._bump_seq += 1
        self._pending_bumps[namespace] = self._bump_seq
        ok, values = await self._call("bump", self._replay_bumps, replay_first=False)
        if not ok or values is None or namespace not in values:
            return _unknown_generation()
        return values[namespace]

    async def ping(self) -> bool:
        ok, value = await self._call("ping", self.backend.ping, bypass_circuit=True)
        return ok and bool(value)

    async def close(self) -> None:
        try:
            await self.backend.close()
        except Exception as exc:  # closing a broken connection must not fail shutdown
            _log.warning("cache_close_failed", backend=self.name, error=f"{type(exc).__name__}: {exc}")

    async def _replay_bumps(self) -> dict[str, int]:
        done: dict[str, int] = {}
        for namespace, token in list(self._pending_bumps.items()):
            done[namespace] = await self.backend.bump(namespace)
            if self._pending_bumps.get(namespace) == token:
                del self._pending_bumps[namespace]
        return done

    async def _call(
        self,
        op: str,
        call: Callable[[], Awaitable[_T]],
        *,
        bypass_circuit: bool = False,
        replay_first: bool = True,
    ) -> tuple[bool, _T | None]:
        async def attempt() -> _T:
            if replay_first and self._pending_bumps:
                await self._replay_bumps()
            return await call()

        try:
            result = await self.circuit.call(attempt, bypass=bypass_circuit)
        except CircuitOpen:
            self.skipped += 1
            return False, None
        except Exception as exc:  # fail open on any backend error (CancelledError is no Exception)
            self._on_failure(op, exc)
            return False, None
        self._consecutive = 0
        return True, result

    def _circuit_changed(self, before: str, after: str) -> None:
        if before == CLOSED and after == OPENED:
            _log.warning("cache_circuit_open", backend=self.name, cooldown_s=self.cooldown_s)
        elif after == CLOSED:
            _log.info("cache_recovered", backend=self.name, errors=self.errors, skipped=self.skipped)

    def _on_failure(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        self._consecutive += 1
        if self.errors % self.log_every == 1 or self.log_every == 1:
            _log.warning(
                "cache_backend_error",
                backend=self.name,
                op=op,
                error=f"{type(exc).__name__}: {exc}",
                errors=self.errors,
                consecutive=self._consecutive,
            )


def build_cache(
    redis_url: str | None, *, max_entries: int, max_bytes: int, prefix: str = "avs:"
) -> CacheBackend:
    """MemoryCache for one replica; Redis (shared by all replicas) behind FailOpenCache when configured."""
    if not redis_url:
        return MemoryCache(max_entries=max_entries, max_bytes=max_bytes)
    return FailOpenCache(RedisCache(redis_url, prefix=prefix))
