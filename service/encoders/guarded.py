"""The engine behind circuit breakers: one circuit per model, so one model down does not refuse the others.

Only `infer` goes through a circuit. Health probes (`model_ready`) ask the engine directly: they must
see recovery even while the circuit is open.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.encoders.base import EngineWrapper, InferenceEngine, Outputs, Tensors
from service.platform.resilience import Breakers


class GuardedEngine(EngineWrapper):
    """An engine whose inference calls go through the breaker of their model (`<engine>:<model>`)."""

    def __init__(self, engine: InferenceEngine, breakers: Breakers) -> None:
        super().__init__(engine)
        self.breakers = breakers

    async def infer(self, model: str, inputs: Tensors, outputs: Sequence[str]) -> Outputs:
        return await self.breakers.call(
            f"{self.name}:{model}", self.name, lambda: self.inner.infer(model, inputs, outputs)
        )
