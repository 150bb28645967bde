"""Triton Python-backend model that runs the entry's model.onnx with ONNX Runtime on the CPU.

The tritonserver inside `nvidia-pytriton` carries only the Python backend, so the local launcher
serves each ONNX entry through this file. Triton's scheduler still forms the dynamic batches; this
model receives them as a list of requests, runs them as one ONNX batch and splits the answer.
A GPU deployment uses Triton's onnxruntime backend on the same model.onnx instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


def _parameter(config: dict, key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default) or default)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        threads = int(_parameter(config, "ORT_INTRA_OP_THREADS", "0"))
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(version_dir / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [item["name"] for item in config["input"]]
        self.output_names = [item["name"] for item in config["output"]]

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        arrays: list[dict[str, np.ndarray]] = []
        for index, request in enumerate(requests):
            tensors = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
            arrays.append(tensors)
            # Triton batches only equal shapes, but grouping keeps this correct for any scheduler.
            key = tuple(tensors[n].shape[1:] for n in self.input_names)
            groups.setdefault(key, []).append(index)
        for members in groups.values():
            try:
                feed = {n: np.concatenate([arrays[i][n] for i in members]) for n in self.input_names}
                results = self.session.run(self.output_names, feed)
            except Exception as exc:  # report per request; never take the server down
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"onnxruntime: {exc}")
                    )
                continue
            offset = 0
            for i in members:
                rows = arrays[i][self.input_names[0]].shape[0]
                outputs = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value[offset : offset + rows]))
                    for name, value in zip(self.output_names, results, strict=True)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=outputs)
                offset += rows
        return responses

    def finalize(self) -> None:
        self.session = None
