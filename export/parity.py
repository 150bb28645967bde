"""Parity between the PyTorch module and its ONNX graph run in ONNX Runtime.

An export whose graph disagrees with PyTorch beyond the tolerance is refused: a silently wrong
embedding model is worse than none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


class ParityError(RuntimeError):
    def __init__(self, diffs: Mapping[str, float], tolerance: float) -> None:
        worst = max(diffs, key=lambda k: diffs[k])
        super().__init__(
            f"ONNX output '{worst}' differs from PyTorch by {diffs[worst]:.3e} "
            f"(tolerance {tolerance:.1e}); all outputs: "
            + ", ".join(f"{k}={v:.3e}" for k, v in diffs.items())
        )
        self.diffs = dict(diffs)
        self.tolerance = tolerance


def max_abs_diffs(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], names: Sequence[str]
) -> dict[str, float]:
    diffs: dict[str, float] = {}
    for name, ref, got in zip(names, reference, candidate, strict=True):
        if ref.shape != got.shape:
            raise ParityError({name: float("inf")}, 0.0)
        diffs[name] = (
            float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0
        )
    return diffs


def assert_within(diffs: Mapping[str, float], tolerance: float) -> float:
    worst = max(diffs.values(), default=0.0)
    if not np.isfinite(worst) or worst > tolerance:
        raise ParityError(diffs, tolerance)
    return worst


def measure(
    module: torch.nn.Module,
    onnx_path: Path,
    batches: Sequence[Mapping[str, np.ndarray]],
    output_names: Sequence[str],
) -> dict[str, float]:
    """Worst |torch - onnxruntime| per output over all sample batches."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst: dict[str, float] = dict.fromkeys(output_names, 0.0)
    for batch in batches:
        with torch.no_grad():
            expected = module(*(torch.from_numpy(v) for v in batch.values()))
        if torch.is_tensor(expected):  # single-output modules return the tensor itself
            expected = (expected,)
        expected_np = [t.detach().cpu().numpy() for t in expected]
        got = session.run(list(output_names), dict(batch))
        for name, value in max_abs_diffs(expected_np, got, output_names).items():
            worst[name] = max(worst[name], value)
    return worst
