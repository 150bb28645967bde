"""The engine with metrics: every inference call timed, counted and sized per engine, model and version.

The series are the platform's (`service.platform.metrics.Metrics`); what a model reference means
(`text_embedder:2` is role and version) is the domain's, so the wrapper lives here, between the two.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from service.domain.manifest import split_ref
from service.encoders.base import EngineWrapper, InferenceEngine, Outputs, Tensors
from service.platform.errors import DependencyUnavailable
from service.platform.metrics import Metrics


class InstrumentedEngine(EngineWrapper):
    """Wraps any engine: same interface, every `infer` observed in the encoder metrics."""

    def __init__(self, engine: InferenceEngine, metrics: Metrics) -> None:
        super().__init__(engine)
        self.metrics = metrics

    async def infer(self, model: str, inputs: Tensors, outputs: Sequence[str]) -> Outputs:
        started = time.perf_counter()
        role, version = split_ref(model)
        tag = str(version or "")
        try:
            result = await self.inner.infer(model, inputs, outputs)
        except DependencyUnavailable as exc:
            self.metrics.encoder_errors.labels(self.name, role, tag, exc.code).inc()
            raise
        finally:
            self.metrics.encoder_duration.labels(self.name, role, tag).observe(time.perf_counter() - started)
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        self.metrics.encoder_batch.labels(self.name, role, tag).observe(rows)
        return result
