"""The engine's and the store's circuits (service/platform/resilience.py), on a fake clock.

The end-to-end outages are in test_resilience.py; here each rule of the breaker is checked by its
state and by how many calls reached the dependency, with no sleeps.
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext

import pytest

from service.encoders.guarded import GuardedEngine
from service.platform.errors import DependencyUnavailable, InvalidInput
from service.platform.resilience import Breakers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Dependency:
    """Answers, or fails with `error`, and counts the calls that reached it."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "ok"


def outage() -> DependencyUnavailable:
    return DependencyUnavailable("qdrant", "connection refused")


async def test_outages_open_the_circuit_and_it_refuses_without_calling() -> None:
    clock, store = FakeClock(), Dependency()
    breakers = Breakers(threshold=3, reset_s=5, clock=clock)
    store.error = outage()
    for _ in range(3):
        with pytest.raises(DependencyUnavailable, match="connection refused"):
            await breakers.call("qdrant", "qdrant", store)
    assert await breakers.states() == {"qdrant": "opened"}
    with pytest.raises(DependencyUnavailable, match="circuit 'qdrant' is open") as refused:
        await breakers.call("qdrant", "qdrant", store)
    assert refused.value.details["circuit"] == "qdrant"
    with pytest.raises(DependencyUnavailable, match="circuit 'qdrant' is open"):
        await breakers.refuse_if_open("qdrant")
    assert store.calls == 3


async def test_errors_about_one_request_never_open_it_and_a_success_resets_the_count() -> None:
    store = Dependency()
    breakers = Breakers(threshold=2, reset_s=5, clock=FakeClock())
    for error in (InvalidInput("empty"), outage(), None, outage(), ValueError("bad row")):
        store.error = error
        with pytest.raises(type(error)) if error else nullcontext():
            await breakers.call("qdrant", "qdrant", store)
    assert await breakers.states() == {"qdrant": "closed"}
    assert store.calls == 5


async def test_after_the_reset_time_it_half_opens_and_one_success_closes_it() -> None:
    clock, store = FakeClock(), Dependency()
    breakers = Breakers(threshold=1, reset_s=5, clock=clock)
    store.error = outage()
    with pytest.raises(DependencyUnavailable):
        await breakers.call("qdrant", "qdrant", store)
    clock.now += 4.9
    with pytest.raises(DependencyUnavailable, match="is open"):
        await breakers.refuse_if_open("qdrant")
    clock.now += 0.1
    await breakers.refuse_if_open("qdrant")  # the next call may go through now
    with pytest.raises(DependencyUnavailable, match="connection refused"):
        await breakers.call("qdrant", "qdrant", store)  # the probe fails: open again, for 5 s more
    assert await breakers.states() == {"qdrant": "opened"}
    clock.now += 5
    store.error = None
    assert await breakers.call("qdrant", "qdrant", store) == "ok"
    assert await breakers.states() == {"qdrant": "closed"}
    assert store.calls == 3


async def test_half_open_lets_concurrent_calls_through() -> None:
    # The engine's and store's circuits keep purgatory's rule: every call tries once it half-opens.
    clock, store = FakeClock(), Dependency()
    breakers = Breakers(threshold=1, reset_s=1, clock=clock)
    store.error = outage()
    with pytest.raises(DependencyUnavailable):
        await breakers.call("qdrant", "qdrant", store)
    clock.now += 1
    store.error = None
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return await store()

    first = asyncio.create_task(breakers.call("qdrant", "qdrant", slow))
    await asyncio.sleep(0)
    second = asyncio.create_task(breakers.call("qdrant", "qdrant", slow))
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(first, second) == ["ok", "ok"]
    assert await breakers.states() == {"qdrant": "closed"}


async def test_a_cancelled_call_says_nothing_about_the_dependency() -> None:
    store = Dependency()
    breakers = Breakers(threshold=2, reset_s=5, clock=FakeClock())
    store.error = outage()
    with pytest.raises(DependencyUnavailable):
        await breakers.call("qdrant", "qdrant", store)
    hung = asyncio.create_task(breakers.call("qdrant", "qdrant", asyncio.Event().wait))
    await asyncio.sleep(0)
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    with pytest.raises(DependencyUnavailable):
        await breakers.call("qdrant", "qdrant", store)  # second consecutive outage: opens
    assert await breakers.states() == {"qdrant": "opened"}


class DownEngine:
    name = "triton"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def infer(self, model, inputs, outputs):
        self.calls.append(model)
        raise DependencyUnavailable("triton", f"{model} unreachable")

    async def model_ready(self, model: str) -> bool:
        return False

    def max_batch_size(self, model: str) -> int:
        return 8

    async def close(self) -> None:
        pass


async def test_the_guarded_engine_has_one_circuit_per_model() -> None:
    inner = DownEngine()
    engine = GuardedEngine(inner, Breakers(threshold=2, reset_s=5, clock=FakeClock()))
    for _ in range(3):
        with pytest.raises(DependencyUnavailable):
            await engine.infer("text_embedder:1", {}, ["embedding"])
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        await engine.infer("image_embedder", {}, ["embedding"])  # another model: its own circuit
    assert inner.calls == ["text_embedder:1", "text_embedder:1", "image_embedder"]
    assert await engine.breakers.states() == {
        "triton:text_embedder:1": "opened",
        "triton:image_embedder": "closed",
    }
    assert await engine.model_ready("text_embedder:1") is False  # asked directly, circuit or not
    assert engine.max_batch_size("text_embedder:1") == 8
