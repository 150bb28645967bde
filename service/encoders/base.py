"""The engine interface: run a named model on named numpy tensors.

Engines know nothing about tokens or pixels (that is the encoders' job), so the same pre/post
code serves Triton and in-process ONNX Runtime, and tests swap engines, not mocks.

The wrappers around an engine (`guarded.GuardedEngine`: circuit breakers; `instrumented.InstrumentedEngine`:
metrics) subclass `EngineWrapper`, which writes out every method of the interface as a plain call to
the wrapped engine, so a reader and a type checker see the whole interface; nothing reaches the
wrapped engine by attribute forwarding, and a wrapper overrides only the method it changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

#: A model's named input tensors, and the named outputs one call returns.
Tensors = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@runtime_checkable
class InferenceEngine(Protocol):
    #: "onnx" or "triton": reported in service info and query_info.
    name: str

    async def infer(self, model: str, inputs: Tensors, outputs: Sequence[str]) -> Outputs:
        """Run `model` once; raise DependencyUnavailable when the engine cannot answer."""
        ...

    async def model_ready(self, model: str) -> bool: ...

    def max_batch_size(self, model: str) -> int:
        """Largest batch one call may carry (Triton's max_batch_size; a memory bound in-process)."""
        ...

    async def close(self) -> None: ...


class EngineWrapper(InferenceEngine):
    """An engine around another one, under its name: every call goes to the wrapped engine unchanged
    until a subclass overrides it."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.inner = engine
        self.name = engine.name

    async def infer(self, model: str, inputs: Tensors, outputs: Sequence[str]) -> Outputs:
        return await self.inner.infer(model, inputs, outputs)

    async def model_ready(self, model: str) -> bool:
        return await self.inner.model_ready(model)

    def max_batch_size(self, model: str) -> int:
        return self.inner.max_batch_size(model)

    async def close(self) -> None:
        await self.inner.close()
