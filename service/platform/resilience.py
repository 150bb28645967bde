"""Circuit breakers (purgatory) around the encoder engine and the store.

After `threshold` consecutive outages of a dependency its circuit opens: calls fail at once with a
503 naming the dependency, instead of each waiting for a timeout. After `reset_s` one request is let
through (half-open); if it succeeds the circuit closes and traffic resumes, with no restart. Only
outages count: a 4xx-worthy request or an upstream error about one request does not open anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from service.encoders.base import InferenceEngine
from service.platform.errors import DependencyUnavailable

_T = TypeVar("_T")


def _is_outage(exc: BaseException) -> bool:
    # UpstreamError subclasses DependencyUnavailable but is about one request, not the dependency.
    return isinstance(exc, DependencyUnavailable) and exc.status_code == 503


class Breakers:
    def __init__(self, threshold: int = 5, reset_s: float = 5.0) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=reset_s,
            exclude=[(asyncio.CancelledError, lambda _: True), (Exception, lambda exc: not _is_outage(exc))],
        )
        self._known: dict[str, str] = {}

    def _open(self, circuit: str, dependency: str) -> DependencyUnavailable:
        return DependencyUnavailable(
            dependency,
            f"circuit '{circuit}' is open after {self.threshold} consecutive failures; "
            f"the next try goes through within {self.reset_s:g}s",
            circuit=circuit,
        )

    async def call(self, circuit: str, dependency: str, run: Callable[[], Awaitable[_T]]) -> _T:
        self._known[circuit] = dependency
        breaker = await self._factory.get_breaker(circuit)
        try:
            async with breaker:
                return await run()
        except OpenedState as exc:
            raise self._open(circuit, dependency) from exc

    async def refuse_if_open(self, circuit: str) -> None:
        """Raise the open circuit's 503 now, before work that would be wasted on the way to it (a
        query's encoding when the store is down). Leaves the half-open probe to `call`."""
        dependency = self._known.get(circuit)
        if dependency is None:
            return
        context = (await self._factory.get_breaker(circuit)).context
        opened_at = context.opened_at
        if context.state == "opened" and opened_at is not None and time.time() <= opened_at + context.ttl:
            raise self._open(circuit, dependency)

    async def states(self) -> dict[str, str]:
        """circuit -> closed | opened | half-opened, for the circuits used so far."""
        out = {}
        for circuit in self._known:
            breaker = await self._factory.get_breaker(circuit)
            out[circuit] = str(breaker.context.state)
        return out


class GuardedEngine:
    """An engine whose calls go through one circuit per model."""

    def __init__(self, engine: InferenceEngine, breakers: Breakers) -> None:
        self.inner = engine
        self.breakers = breakers
        self.name = engine.name

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        return await self.breakers.call(
            f"{self.name}:{model}", self.name, lambda: self.inner.infer(model, inputs, outputs)
        )

    async def model_ready(self, model: str) -> bool:
        # Health probes ask the engine directly: they must see recovery even while the circuit is open.
        return await self.inner.model_ready(model)

    def max_batch_size(self, model: str) -> int:
        return self.inner.max_batch_size(model)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
