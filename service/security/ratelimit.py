"""Token-bucket rate limits, in memory or shared by every replica through Redis.

A bucket holds up to `burst` tokens and refills at `rate` tokens per second; each request takes one.
Redis keeps the bucket in a hash updated by one Lua script (atomic, and timed by Redis' own clock so
replicas agree). If Redis fails, limits fall back to this replica's memory rather than to none.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from service.platform.logs import get_logger

log = get_logger("service.ratelimit")


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: int

    @classmethod
    def parse(cls, text: str | None) -> Limit | None:
        """`"50/100"`: 50 requests per second, bursts of 100; `"50"`: burst = rate; empty: no limit."""
        if not text or not text.strip():
            return None
        rate_text, _, burst_text = text.strip().partition("/")
        try:
            rate = float(rate_text)
            burst = int(burst_text) if burst_text else max(1, math.ceil(rate))
        except ValueError as exc:
            raise ValueError(f"rate limit {text!r} is not '<per second>/<burst>'") from exc
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate limit {text!r}: rate and burst must be positive")
        return cls(rate, burst)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: float


class Buckets(Protocol):
    async def take(self, key: str, limit: Limit) -> Decision: ...

    async def close(self) -> None: ...


class MemoryBuckets:
    def __init__(self, max_keys: int = 100_000, clock=time.monotonic) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    async def take(self, key: str, limit: Limit) -> Decision:
        now = self._clock()
        tokens, updated = self._buckets.pop(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - updated) * limit.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            decision = Decision(True, int(tokens), 0.0)
        else:
            decision = Decision(False, 0, (1.0 - tokens) / limit.rate)
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:  # forget the least recently seen clients first
            self._buckets.popitem(last=False)
        return decision

    async def close(self) -> None:
        self._buckets.clear()


_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisBuckets:
    def __init__(self, url: str, prefix: str = "avs:rl:", timeout_s: float = 0.25) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._script = self._redis.register_script(_TOKEN_BUCKET)
        self._prefix = prefix
        self._fallback = MemoryBuckets()
        self._failing = False

    async def take(self, key: str, limit: Limit) -> Decision:
        try:
            allowed, tokens_text = await self._script(
                keys=[self._prefix + key], args=[limit.rate, limit.burst]
            )
        except Exception as exc:  # Redis down or slow: keep limiting, per replica
            if not self._failing:
                log.warning("rate_limit_redis_unavailable", error=str(exc))
            self._failing = True
            return await self._fallback.take(key, limit)
        if self._failing:
            log.info("rate_limit_redis_recovered")
            self._failing = False
        tokens = float(tokens_text)
        if int(allowed):
            return Decision(True, int(tokens), 0.0)
        return Decision(False, 0, (1.0 - tokens) / limit.rate)

    async def close(self) -> None:
        await self._redis.aclose()


def build_buckets(redis_url: str | None) -> Buckets:
    return RedisBuckets(redis_url) if redis_url else MemoryBuckets()
