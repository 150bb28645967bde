"""Triton `config.pbtxt` written through Triton's own protobuf definitions (shipped in tritonclient).

Building the message, not a string template, means a field name or enum typo fails here, at export,
instead of at model load on a production server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

InstanceKind = Literal["auto", "cpu", "gpu"]

_DTYPES = {
    "int64": mc.TYPE_INT64,
    "int32": mc.TYPE_INT32,
    "float32": mc.TYPE_FP32,
    "float16": mc.TYPE_FP16,
}
_KINDS = {
    "auto": mc.ModelInstanceGroup.KIND_AUTO,
    "cpu": mc.ModelInstanceGroup.KIND_CPU,
    "gpu": mc.ModelInstanceGroup.KIND_GPU,
}


@dataclass(frozen=True)
class TensorIO:
    name: str
    dtype: str
    # Dims without the batch dim; -1 for dynamic.
    dims: Sequence[int]


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 32
    preferred_batch_sizes: Sequence[int] = (8, 16, 32)
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    instance_kind: InstanceKind = "auto"
    tensorrt_fp16: bool = False
    extra_parameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if any(s < 1 or s > self.max_batch_size for s in self.preferred_batch_sizes):
            raise ValueError("preferred batch sizes must lie in 1..max_batch_size")
        if self.max_queue_delay_us < 0 or self.instance_count < 1:
            raise ValueError("queue delay must be >= 0 and instance count >= 1")


def build_config(
    name: str,
    inputs: Sequence[TensorIO],
    outputs: Sequence[TensorIO],
    options: BatchingOptions,
    backend: str = "onnxruntime",
    versions: Sequence[int] | None = None,
) -> mc.ModelConfig:
    """`versions`: the version folders Triton serves side by side (A/B); None serves the latest only."""
    config = mc.ModelConfig(name=name, backend=backend, max_batch_size=options.max_batch_size)
    for spec in inputs:
        config.input.add(name=spec.name, data_type=_DTYPES[spec.dtype], dims=list(spec.dims))
    for spec in outputs:
        config.output.add(name=spec.name, data_type=_DTYPES[spec.dtype], dims=list(spec.dims))
    batching = config.dynamic_batching
    batching.preferred_batch_size.extend(sorted(set(options.preferred_batch_sizes)))
    batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.instance_group.add(count=options.instance_count, kind=_KINDS[options.instance_kind])
    if versions:
        config.version_policy.specific.versions.extend(sorted(set(versions)))
    else:
        config.version_policy.latest.num_versions = 1
    if options.tensorrt_fp16:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name="tensorrt"
        )
        accelerator.parameters["precision_mode"] = "FP16"
        accelerator.parameters["max_workspace_size_bytes"] = str(4 << 30)
        accelerator.parameters["trt_engine_cache_enable"] = "1"
        accelerator.parameters["trt_engine_cache_path"] = f"/tmp/trt_cache/{name}"
    for key, value in options.extra_parameters.items():
        config.parameters[key].string_value = value
    return config


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def write_config(model_dir: Path, config: mc.ModelConfig) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(render(config), encoding="utf-8")
    return path


def read_config(model_dir: Path) -> mc.ModelConfig:
    return parse((model_dir / "config.pbtxt").read_text(encoding="utf-8"))
