"""Cache backends: the in-process LRU, Redis against a real redis-server, the fail-open wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import service.cache.backends as cache_module
from service.cache.backends import (
    CacheBackend,
    FailOpenCache,
    MemoryCache,
    RedisCache,
    build_cache,
    cache_key,
    generation_known,
)
from tests.processes import RedisServer

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Tests that are not about deadlines give Redis one a loaded 2-core CI machine never reaches (the
# default 0.25 s has been spent on a local connect there, and 5 s on 200 concurrent INCRs while other
# test runs shared the cores).
PATIENT_S = 30.0


@pytest.fixture
def prefix() -> str:
    # Tests share one server; a fresh prefix per test keeps their keys apart.
    return f"test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def redis_cache(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis_server.url, prefix=prefix, timeout_s=PATIENT_S)
    yield cache
    await cache.close()


class FlakyBackend:
    """A MemoryCache that fails on demand and counts the calls that reached it."""

    name = "flaky"

    def __init__(self) -> None:
        self.inner = MemoryCache()
        self.fail = False
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None  # when set, calls wait for it (a slow backend)

    async def _enter(self, op: str) -> None:
        self.calls.append(op)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError(f"{op}: backend down")

    async def get(self, key: str) -> bytes | None:
        await self._enter("get")
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._enter("set")
        await self.inner.set(key, value, ttl_s)

    async def generation(self, namespace: str) -> int:
        await self._enter("generation")
        return await self.inner.generation(namespace)

    async def bump(self, namespace: str) -> int:
        await self._enter("bump")
        return await self.inner.bump(namespace)

    async def ping(self) -> bool:
        await self._enter("ping")
        return True

    async def close(self) -> None:
        await self._enter("close")


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = _record

    def named(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == event]


# --------------------------------------------------------------------------------------------------
# cache_key
# --------------------------------------------------------------------------------------------------


def _documented_encoding(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def test_cache_key_follows_the_documented_encoding_and_is_stable() -> None:
    parts: tuple[str | bytes, ...] = ("model-v1", "naruto")
    assert cache_key(*parts) == cache_key(*parts) == _documented_encoding(*parts)
    # Pinned literal: the key is shared through Redis by replicas of different releases.
    assert cache_key(*parts) == "893d184349f5e15e031c6ea799e1537638ab9593b803c3a9d08f32ab1e648ad0"
    mixed: tuple[str | bytes, ...] = ("進撃の巨人", b"\x00\xff\x00", "")
    assert cache_key(*mixed) == _documented_encoding(*mixed)
    assert cache_key() == hashlib.sha256(b"").hexdigest()


def test_cache_key_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = "from service.cache.backends import cache_key; print(cache_key('model-v1', 'naruto', b'\\x01'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=30
    )
    assert out.stdout.strip() == cache_key("model-v1", "naruto", b"\x01")


def test_cache_key_separates_parts_unambiguously() -> None:
    assert cache_key("ab", "c") != cache_key("a", "bc")
    assert cache_key("a") != cache_key("a", "")
    assert cache_key("a", "b") != cache_key("b", "a")
    # str and bytes with the same UTF-8 content are the same part, on purpose.
    assert cache_key("é") == cache_key("é".encode())


# --------------------------------------------------------------------------------------------------
# MemoryCache
# --------------------------------------------------------------------------------------------------


async def test_memory_get_set_overwrite_and_copy() -> None:
    cache = MemoryCache()
    assert isinstance(cache, CacheBackend)
    assert await cache.get("missing") is None
    await cache.set("k", b"v1", 60)
    assert await cache.get("k") == b"v1"
    await cache.set("k", b"value-2", 60)
    assert await cache.get("k") == b"value-2"
    assert cache.stats["entries"] == 1
    assert cache.stats["bytes"] == len("k") + len(b"value-2")
    buf = bytearray(b"abc")
    await cache.set("buf", buf, 60)  # type: ignore[arg-type]
    buf[0] = ord("X")  # the caller's later mutation must not reach the cache
    assert await cache.get("buf") == b"abc"
    await cache.set("no-ttl", b"x", 0)
    assert await cache.get("no-ttl") is None
    assert await cache.ping() is True


async def test_memory_ttl_expires_with_the_injected_clock() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    await cache.set("short", b"s", 10)
    await cache.set("long", b"l", 100)
    clock.advance(9.9)
    assert await cache.get("short") == b"s"
    clock.advance(0.2)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"l"
    assert cache.stats == {"entries": 1, "bytes": len("long") + 1, "evictions": 0, "expirations": 1}
    clock.advance(100)
    assert await cache.get("long") is None
    assert cache.stats["expirations"] == 2


async def test_memory_lru_evicts_the_least_recently_used_by_entry_count() -> None:
    cache = MemoryCache(max_entries=3)
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), 60)
    assert await cache.get("a") == b"a"  # "a" is now the most recent, "b" the least
    await cache.set("d", b"d", 60)
    assert await cache.get("b") is None
    assert [await cache.get(k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]
    assert cache.stats["entries"] == 3
    assert cache.stats["evictions"] == 1


async def test_memory_lru_evicts_by_bytes_and_refuses_an_item_bigger_than_the_budget() -> None:
    cache = MemoryCache(max_bytes=100)
    for i in range(3):
        await cache.set(f"k{i}", bytes(30), 60)  # 32 bytes each with the key
    assert cache.stats["bytes"] == 96
    await cache.get("k0")
    await cache.set("k3", bytes(30), 60)  # 128 > 100: the least recent ("k1") goes
    assert await cache.get("k1") is None
    assert cache.stats["bytes"] == 96
    assert cache.stats["evictions"] == 1
    await cache.set("k4", bytes(60), 60)  # needs two evictions: k2, then k0
    assert await cache.get("k2") is None
    assert await cache.get("k0") is None
    assert cache.stats["bytes"] == 32 + 62
    assert cache.stats["evictions"] == 3

    await cache.set("big", bytes(98), 60)  # 101 bytes: not stored, and nothing evicted for it
    assert await cache.get("big") is None
    assert cache.stats["entries"] == 2
    assert cache.stats["evictions"] == 3
    assert await cache.get("k3") is not None


async def test_memory_eviction_of_an_expired_entry_counts_as_an_expiration() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_entries=1, clock=clock)
    await cache.set("old", b"x", 1)
    clock.advance(2)
    await cache.set("new", b"y", 1)
    assert cache.stats["expirations"] == 1
    assert cache.stats["evictions"] == 0


async def test_memory_generations_bump_and_are_never_evicted() -> None:
    cache = MemoryCache(max_entries=1, max_bytes=10)
    assert await cache.generation("results") == 0
    assert await cache.bump("results") == 1
    assert await cache.bump("results") == 2
    assert await cache.generation("other") == 0
    values = await asyncio.gather(*(cache.bump("results") for _ in range(50)))
    assert sorted(values) == list(range(3, 53))
    for i in range(20):
        await cache.set(f"k{i}", b"v", 60)
    assert await cache.generation("results") == 52


# --------------------------------------------------------------------------------------------------
# RedisCache against a real redis-server
# --------------------------------------------------------------------------------------------------


async def test_redis_round_trips_binary_values(redis_cache: RedisCache) -> None:
    assert isinstance(redis_cache, CacheBackend)
    assert await redis_cache.ping() is True
    value = bytes(range(256)) * 16 + b"\r\n\x00"
    assert await redis_cache.get("k") is None
    await redis_cache.set("k", value, 60)
    assert await redis_cache.get("k") == value
    await redis_cache.set("empty", b"", 60)
    assert await redis_cache.get("empty") == b""


async def test_redis_ttl_expires_and_generation_keys_have_none(
    redis_server: RedisServer, redis_cache: RedisCache, prefix: str
) -> None:
    from redis.asyncio import Redis

    ttl_s = 0.5
    await redis_cache.set("long", b"l", 60)
    await redis_cache.bump("results")
    raw = Redis.from_url(redis_server.url)
    try:
        assert await raw.ttl(f"{prefix}g:results") == -1  # a generation must outlive every result
        assert await redis_cache.get("long") == b"l"
        assert 0 < await raw.pttl(f"{prefix}v:long") <= 60_000  # PX, in milliseconds
        # Every check on the short key is bounded by when it was set, not by how fast this machine
        # is: it holds a millisecond TTL no longer than asked, is never gone before that TTL, and goes
        # (a generous deadline: a loaded machine may be slow to look, Redis is not slow to expire).
        set_at = time.monotonic()
        await redis_cache.set("short", b"s", ttl_s)
        pttl = await raw.pttl(f"{prefix}v:short")
        assert 0 < pttl <= ttl_s * 1000 or (pttl == -2 and time.monotonic() - set_at >= ttl_s), pttl
        while (value := await redis_cache.get("short")) is not None:
            assert value == b"s"
            assert time.monotonic() - set_at < 30, "PX TTL did not expire"
            await asyncio.sleep(0.02)
        assert time.monotonic() - set_at >= ttl_s, "the key went before its TTL"
        assert await redis_cache.get("long") == b"l"
    finally:
        await raw.aclose()
    assert await redis_cache.get("long") == b"l"


async def test_redis_bump_is_atomic_across_clients(redis_server: RedisServer, prefix: str) -> None:
    first = RedisCache(redis_server.url, prefix=prefix, timeout_s=PATIENT_S)
    second = RedisCache(redis_server.url, prefix=prefix, timeout_s=PATIENT_S)
    try:
        assert await first.generation("results") == 0
        values = await asyncio.gather(
            *(cache.bump("results") for _ in range(100) for cache in (first, second))
        )
        # INCR hands out each value once: no lost update, no duplicate.
        assert sorted(values) == list(range(1, 201))
        assert await first.generation("results") == await second.generation("results") == 200
    finally:
        await first.close()
        await second.close()


async def test_redis_prefixes_isolate_instances(redis_server: RedisServer, prefix: str) -> None:
    a = RedisCache(redis_server.url, prefix=f"{prefix}a:", timeout_s=PATIENT_S)
    b = RedisCache(redis_server.url, prefix=f"{prefix}b:", timeout_s=PATIENT_S)
    try:
        await a.set("k", b"from-a", 60)
        assert await b.get("k") is None
        await b.set("k", b"from-b", 60)
        assert await a.get("k") == b"from-a"
        assert await b.get("k") == b"from-b"
        assert await a.bump("results") == 1
        assert await b.generation("results") == 0
    finally:
        await a.close()
        await b.close()


async def test_redis_refuses_values_over_max_value_bytes(redis_server: RedisServer, prefix: str) -> None:
    cache = RedisCache(redis_server.url, prefix=prefix, max_value_bytes=1024, timeout_s=PATIENT_S)
    try:
        await cache.set("fits", bytes(1024), 60)
        await cache.set("too-big", bytes(1025), 60)
        assert await cache.get("fits") == bytes(1024)
        assert await cache.get("too-big") is None
        assert cache.oversized == 1
    finally:
        await cache.close()


async def test_redis_call_is_bounded_by_timeout_when_the_server_hangs() -> None:
    import redis.exceptions as redis_exceptions

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # accept the connection, never answer
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", timeout_s=0.1)
    wrapped = FailOpenCache(cache)
    try:
        # The server never answers: only the cache's own 0.1 s deadline can end these calls. The outer
        # 30 s bound turns a missing deadline into a failure instead of a hang; how close to 0.1 s
        # they end depends on the machine and is not asserted.
        async with asyncio.timeout(30):
            with pytest.raises((TimeoutError, asyncio.TimeoutError, redis_exceptions.TimeoutError)):
                await cache.get("k")
            assert await wrapped.get("k") is None
        assert wrapped.errors == 1
    finally:
        await wrapped.close()
        server.close()
        await server.wait_closed()


async def _answered(cache: RedisCache, key: str, tries: int = 20) -> bytes | None:
    """`cache.get(key)`, tried again when its short deadline passes on a busy machine: what matters
    below is which value comes back, never that one call was slow."""
    for _ in range(tries - 1):
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            return await cache.get(key)
    return await cache.get(key)


async def test_redis_late_reply_of_a_timed_out_command_never_answers_the_next_one(
    redis_server: RedisServer, prefix: str
) -> None:
    # The deadline cancels a command mid-flight; if its connection went back to the pool, the next
    # command would read the late reply and return another key's value.
    delay_s = {"now": 0.0}

    async def slow_proxy(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", redis_server.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delayed: bool) -> None:
            while data := await src.read(65536):
                if delayed and delay_s["now"]:
                    await asyncio.sleep(delay_s["now"])
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(client_r, upstream_w, False), pipe(upstream_r, client_w, True), return_exceptions=True
        )

    proxy = await asyncio.start_server(slow_proxy, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    direct = RedisCache(redis_server.url, prefix=prefix, timeout_s=PATIENT_S)
    # The deadline leaves room for a connect through the proxy on a loaded machine; the delay is
    # well past it, so the reply surely arrives late.
    deadline_s = 0.5
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", prefix=prefix, timeout_s=deadline_s)
    try:
        await direct.set("a", b"A", 60)
        await direct.set("b", b"B", 60)
        assert await _answered(cache, "a") == b"A"  # a pooled connection now exists
        delay_s["now"] = 3 * deadline_s
        with pytest.raises((TimeoutError, asyncio.TimeoutError)):
            await cache.get("a")
        delay_s["now"] = 0.0
        await asyncio.sleep(4 * deadline_s)  # the late "A" has arrived by now
        assert await _answered(cache, "b") == b"B"
    finally:
        await cache.close()
        await direct.close()
        proxy.close()
        await proxy.wait_closed()


# --------------------------------------------------------------------------------------------------
# FailOpenCache: the circuit, the generation sentinel, pending bumps (deterministic, fake backend)
# --------------------------------------------------------------------------------------------------


async def test_failopen_passes_through_while_healthy() -> None:
    backend = FlakyBackend()
    cache = FailOpenCache(backend)
    await cache.set("k", b"v", 60)
    assert await cache.get("k") == b"v"
    assert await cache.bump("results") == 1
    assert await cache.generation("results") == 1
    assert generation_known(1) and generation_known(0)
    assert cache.healthy
    assert cache.stats["errors"] == 0


async def test_failopen_circuit_opens_after_five_failures_then_probes_once_per_cooldown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = RecordingLog()
    monkeypatch.setattr(cache_module, "_log", log)
    clock = FakeClock()
    backend = FlakyBackend()
    cache = FailOpenCache(backend, cooldown_s=5, clock=clock)
    backend.fail = True
    for _ in range(10):
        assert await cache.get("k") is None
    await cache.set("k", b"v", 60)  # must not raise
    assert len(backend.calls) == 5  # the other six never reached the backend
    assert cache.stats["errors"] == 5
    assert cache.stats["skipped"] == 6
    assert not cache.healthy
    assert cache.circuit_open
    assert len(log.named("cache_circuit_open")) == 1

    clock.advance(5)  # cooldown over, still failing: one probe, then open again
    assert await cache.get("k") is None
    assert await cache.get("k") is None
    assert len(backend.calls) == 6
    assert cache.circuit_open

    backend.fail = False
    clock.advance(4.9)
    assert await cache.get("k") is None
    assert len(backend.calls) == 6  # still cooling down
    clock.advance(0.1)
    await cache.set("k", b"v", 60)  # the probe succeeds and closes the circuit
    assert await cache.get("k") == b"v"
    assert cache.healthy
    assert not cache.circuit_open
    assert len(log.named("cache_recovered")) == 1


async def test_failopen_half_open_lets_a_single_probe_through() -> None:
    clock = FakeClock()
    backend = FlakyBackend()
    cache = FailOpenCache(backend, failure_threshold=1, cooldown_s=1, clock=clock)
    backend.fail = True
    await cache.get("k")
    clock.advance(1)
    backend.fail = False
    backend.gate = asyncio.Event()
    probe = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0)  # the probe is now waiting inside the backend
    assert await cache.get("k") is None  # skipped, not a second probe
    assert backend.calls == ["get", "get"]
    backend.gate.set()
    await probe
    assert cache.healthy


async def test_failopen_generation_under_failure_forces_a_miss() -> None:
    backend = FlakyBackend()
    cache = FailOpenCache(backend, failure_threshold=100)
    await backend.inner.bump("results")
    backend.fail = True
    first = await cache.generation("results")
    second = await cache.generation("results")
    # Never the last known value (1): another replica may have bumped since.
    assert not generation_known(first) and not generation_known(second)
    # Fresh each time, so a key built from it can never be shared with another failing caller.
    assert first != second
    backend.fail = False
    assert await cache.generation("results") == 1


async def test_failopen_failed_bump_is_replayed_before_anything_else() -> None:
    backend = FlakyBackend()
    cache = FailOpenCache(backend, failure_threshold=100)
    assert await cache.bump("results") == 1
    backend.fail = True
    assert not generation_known(await cache.bump("results"))
    assert not cache.healthy
    backend.fail = False
    backend.calls.clear()
    # The write that bumped did land: the next reader must see a generation after it.
    assert await cache.generation("results") == 2
    assert backend.calls == ["bump", "generation"]
    assert cache.healthy
    assert await cache.generation("results") == 2  # replayed once only


async def test_failopen_bump_skipped_by_open_circuit_is_replayed_on_recovery() -> None:
    clock = FakeClock()
    backend = FlakyBackend()
    cache = FailOpenCache(backend, failure_threshold=1, cooldown_s=1, clock=clock)
    backend.fail = True
    await cache.get("k")
    assert not generation_known(await cache.bump("results"))  # skipped: circuit open
    assert backend.calls == ["get"]
    backend.fail = False
    clock.advance(1)
    assert await cache.get("k") is None
    assert await backend.inner.generation("results") == 1


async def test_failopen_logs_once_per_n_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    log = RecordingLog()
    monkeypatch.setattr(cache_module, "_log", log)
    backend = FlakyBackend()
    backend.fail = True
    cache = FailOpenCache(backend, failure_threshold=1000, log_every=3)
    for _ in range(7):
        await cache.get("k")
    errors = log.named("cache_backend_error")
    assert [e["errors"] for e in errors] == [1, 4, 7]
    assert errors[0]["op"] == "get"
    assert "backend down" in errors[0]["error"]


async def test_failopen_ping_bypasses_the_open_circuit() -> None:
    clock = FakeClock()
    backend = FlakyBackend()
    cache = FailOpenCache(backend, failure_threshold=1, cooldown_s=60, clock=clock)
    backend.fail = True
    assert await cache.ping() is False
    assert cache.circuit_open
    backend.fail = False
    assert await cache.ping() is True  # a health check sees the truth, not the circuit
    assert cache.healthy


# --------------------------------------------------------------------------------------------------
# FailOpenCache over real Redis: down from the start, then up, killed, restarted
# --------------------------------------------------------------------------------------------------


async def _until_healthy(cache: FailOpenCache, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        await cache.set("probe", b"p", 60)
        if cache.healthy and await cache.get("probe") == b"p":
            return
        assert time.monotonic() < deadline, f"did not recover: {cache.stats}"
        await asyncio.sleep(0.05)


async def test_failopen_redis_down_then_recovers_by_itself(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path / "redis")  # not started: nothing listens yet
    cache = FailOpenCache(RedisCache(server.url, timeout_s=0.2), cooldown_s=0.5)
    try:
        async with asyncio.timeout(30):  # refused connections: a miss each, never a wait
            for _ in range(10):
                assert await cache.get("k") is None
        await cache.set("k", b"v", 60)
        assert not generation_known(await cache.generation("results"))
        assert not cache.healthy
        assert cache.stats["errors"] >= 5
        assert cache.stats["skipped"] >= 1

        await asyncio.to_thread(server.start)
        await _until_healthy(cache, timeout_s=10)
        assert await cache.bump("results") == 1
        assert await cache.generation("results") == 1

        await asyncio.to_thread(server.stop, kill=True)  # crash while in use
        assert await cache.get("probe") is None
        assert not generation_known(await cache.generation("results"))
        assert not cache.healthy

        await asyncio.to_thread(server.start)  # same port, empty (no persistence)
        await _until_healthy(cache, timeout_s=10)
        await cache.set("k", b"\x00after\xff", 60)
        assert await cache.get("k") == b"\x00after\xff"
        assert await cache.ping() is True
    finally:
        await cache.close()
        await asyncio.to_thread(server.stop)


# --------------------------------------------------------------------------------------------------
# build_cache
# --------------------------------------------------------------------------------------------------


async def test_build_cache_picks_memory_or_fail_open_redis() -> None:
    memory = build_cache(None, max_entries=5, max_bytes=1000)
    assert isinstance(memory, MemoryCache)
    assert (memory.name, memory.max_entries, memory.max_bytes) == ("memory", 5, 1000)
    assert isinstance(build_cache("", max_entries=5, max_bytes=1000), MemoryCache)

    shared = build_cache("redis://127.0.0.1:1/0", max_entries=5, max_bytes=1000, prefix="x:")
    try:
        assert isinstance(shared, FailOpenCache)
        assert shared.name == "redis"
        assert isinstance(shared.backend, RedisCache)
        assert shared.backend.prefix == "x:"
        assert isinstance(shared, CacheBackend)
    finally:
        await shared.close()
