"""The engine behind circuit breakers: one circuit per model, so one model down does not refuse the others.

Only `infer` goes through a circuit. Health probes (`model_ready`) ask the engine directly: they must
see recovery even while the circuit is open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from service.encoders.base import InferenceEngine
from service.platform.resilience import Breakers


class GuardedEngine(InferenceEngine):
    """An engine whose inference calls go through the breaker of their model (`<engine>:<model>`)."""

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
        return await self.inner.model_ready(model)

    def max_batch_size(self, model: str) -> int:
        return self.inner.max_batch_size(model)

    async def close(self) -> None:
        await self.inner.close()
