"""Export a text encoder checkpoint as the `text_embedder` Triton model entry."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export import onnx_graph, parity, triton_config
from export.checkpoint import Pooling, inspect_text
from export.repository import staged_version
from export.text_model import load_text_module
from service.manifest import (
    TEXT_EMBEDDER,
    TOKENIZER_DIR,
    ModelManifest,
    TensorSpec,
    TokenizerSpec,
    write_manifest,
)
from service.progress import steps

# Multilingual, mixed-length samples: parity must hold for padding, CJK and long inputs alike.
PARITY_TEXTS = (
    "A boy pilots a giant robot to fight mysterious angels.",
    "新世紀エヴァンゲリオン",
    "Space bounty hunters drift through the solar system in 2071, chasing their pasts.",
    "校园 恋爱 日常",
    "x",
)
PARITY_LONG_TOKENS = 1024


@dataclass(frozen=True)
class TextExportResult:
    directory: Path
    manifest: ModelManifest


def parity_batches(tokenizer, max_length: int) -> list[dict[str, np.ndarray]]:
    def encode(texts: list[str], length: int) -> dict[str, np.ndarray]:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=length, return_tensors="np")
        return {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        }

    long_length = min(max_length, PARITY_LONG_TOKENS)
    long_text = " ".join([PARITY_TEXTS[2]] * (long_length // 8 + 8))
    return [
        encode(list(PARITY_TEXTS), max_length),
        encode([long_text, PARITY_TEXTS[0]], long_length),
        encode([PARITY_TEXTS[3]], max_length),
    ]


def export_text(
    source: str,
    repository: Path,
    *,
    role: str = TEXT_EMBEDDER,
    version: int = 1,
    revision: str | None = None,
    pooling: Pooling | str = "auto",
    max_length: int | None = None,
    sparse: bool | None = None,
    opset: int = 17,
    tolerance: float = 1e-4,
    batching: triton_config.BatchingOptions | None = None,
    external_data: bool | None = None,
    license_name: str | None = None,
) -> TextExportResult:
    from transformers import AutoTokenizer

    batching = batching or triton_config.BatchingOptions()
    with steps(f"export {role}", total=6) as step:
        step("reading checkpoint")
        ckpt = inspect_text(source, revision, pooling=pooling, max_length=max_length, sparse=sparse)  # type: ignore[arg-type]
        step(f"loading {ckpt.model_type} ({ckpt.pooling} pooling, sparse={ckpt.sparse_head is not None})")
        tokenizer = AutoTokenizer.from_pretrained(str(ckpt.path), use_fast=True)
        if not getattr(tokenizer, "is_fast", False):
            raise RuntimeError(f"{source}: no fast tokenizer; the façade needs tokenizer.json")
        module = load_text_module(ckpt)
        outputs = ["dense"] + (["sparse"] if ckpt.sparse_head is not None else [])
        with staged_version(repository, role, version) as staging:
            step("tracing to ONNX")
            example = tokenizer(
                ["hello world", "a longer example sentence"], padding=True, return_tensors="pt"
            )
            with torch.no_grad():
                dim = int(module(example["input_ids"], example["attention_mask"])[0].shape[-1])
            onnx_path = onnx_graph.export_module(
                module,
                {
                    "input_ids": example["input_ids"].to(torch.int64),
                    "attention_mask": example["attention_mask"].to(torch.int64),
                },
                outputs,
                {
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "dense": {0: "batch"},
                    "sparse": {0: "batch", 1: "sequence"},
                },
                staging / "model.onnx",
                opset=opset,
                external_data=external_data,
                static_output_dims={"dense": {1: dim}},
            )
            step("checking parity with PyTorch")
            diffs = parity.measure(module, onnx_path, parity_batches(tokenizer, ckpt.max_length), outputs)
            worst = parity.assert_within(diffs, tolerance)
            print(
                f"parity {role}: max |torch - onnxruntime| = {worst:.3e} (tolerance {tolerance:.0e}); "
                + ", ".join(f"{k}={v:.3e}" for k, v in diffs.items()),
                flush=True,
            )
            step("writing tokenizer, manifest and config.pbtxt")
            tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
            inputs_io, outputs_io = onnx_graph.graph_io(onnx_path)
            manifest = ModelManifest(
                role=role,
                kind="text",
                source=source,
                source_revision=revision,
                architecture=ckpt.model_type,
                dim=dim,
                pooling=ckpt.pooling,
                normalized=True,
                has_sparse=ckpt.sparse_head is not None,
                tokenizer=tokenizer_spec(tokenizer, ckpt.max_length),
                opset=opset,
                inputs=[TensorSpec(n, "int64", s) for n, s in inputs_io.items()],
                outputs=[TensorSpec(n, "float32", s) for n, s in outputs_io.items()],
                parity_max_abs_diff=worst,
                parity_tolerance=tolerance,
                fingerprint=onnx_graph.fingerprint(onnx_path),
                exported_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                exporter=exporter_versions(),
                license=license_name,
            )
            write_manifest(staging, manifest)
            config = text_triton_config(role, manifest.dim, manifest.has_sparse, batching)
            triton_config.write_config(repository / role, config)
        step("done")
    return TextExportResult(repository / role / str(version), manifest)


def text_triton_config(
    role: str, dim: int, has_sparse: bool, batching: triton_config.BatchingOptions
) -> triton_config.mc.ModelConfig:
    io = triton_config.TensorIO
    outputs = [io("dense", "float32", [dim])]
    if has_sparse:
        outputs.append(io("sparse", "float32", [-1]))
    return triton_config.build_config(
        role,
        [io("input_ids", "int64", [-1]), io("attention_mask", "int64", [-1])],
        outputs,
        batching,
    )


def tokenizer_spec(tokenizer, max_length: int) -> TokenizerSpec:
    return TokenizerSpec(
        directory=TOKENIZER_DIR,
        pad_token_id=int(tokenizer.pad_token_id),
        max_length=max_length,
        special_token_ids=sorted(int(i) for i in tokenizer.all_special_ids),
    )


def exporter_versions() -> dict[str, str]:
    return {
        "torch": str(torch.__version__),
        "transformers": _version("transformers"),
        "onnx": _version("onnx"),
        "python": platform.python_version(),
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
