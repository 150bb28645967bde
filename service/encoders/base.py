"""The engine interface: run a named model on named numpy tensors.

Engines know nothing about tokens or pixels (that is the encoders' job), so the same pre/post
code serves Triton and in-process ONNX Runtime, and tests swap engines, not mocks.

The wrappers around an engine (`guarded.GuardedEngine`: circuit breakers; `instrumented.InstrumentedEngine`:
metrics) subclass this protocol and write out every method, so a reader and a type checker see the
whole interface; nothing reaches the wrapped engine by attribute forwarding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class InferenceEngine(Protocol):
    #: "onnx" or "triton": reported in service info and query_info.
    name: str

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run `model` once; raise DependencyUnavailable when the engine cannot answer."""
        ...

    async def model_ready(self, model: str) -> bool: ...

    def max_batch_size(self, model: str) -> int:
        """Largest batch one call may carry (Triton's max_batch_size; a memory bound in-process)."""
        ...

    async def close(self) -> None: ...
