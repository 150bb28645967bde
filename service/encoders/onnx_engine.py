"""In-process ONNX Runtime engine: the embedded default, same graphs as Triton serves."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.platform.errors import DependencyUnavailable

# Bounds the memory of one run; callers split larger batches. The exporter's default Triton
# max_batch_size too: an int8 graph quantizes activations per batch (dynamic quantization), so a text's
# vector depends a little on its batch mates (cosine ~0.999), and equal chunks keep both engines equal.
_MAX_BATCH = 32


class OnnxRuntimeEngine:
    name = "onnx"

    def __init__(
        self, graphs: Mapping[str, Path], threads: int = 0, providers: Sequence[str] | None = None
    ) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        chosen = [
            p for p in (providers or ("CUDAExecutionProvider", "CPUExecutionProvider")) if p in available
        ]
        self._sessions = {
            model: ort.InferenceSession(str(path), sess_options=options, providers=chosen)
            for model, path in graphs.items()
        }
        # One run at a time: each run already uses every core (intra-op threads); concurrent runs
        # would only contend for them. Queued requests wait here like they would in Triton's queue.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        self.providers = chosen

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        session = self._sessions.get(model)
        if session is None:
            raise DependencyUnavailable("onnxruntime", f"model '{model}' is not loaded")
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, session.run, list(outputs), dict(inputs))
        return dict(zip(outputs, results, strict=True))

    async def model_ready(self, model: str) -> bool:
        return model in self._sessions

    def max_batch_size(self, model: str) -> int:
        return _MAX_BATCH

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
        self._sessions.clear()
