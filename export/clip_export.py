"""Export a CLIP-style checkpoint as two Triton entries in one space: image_embedder, clip_text_embedder."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export import onnx_graph, parity, triton_config
from export.checkpoint import CheckpointError, describe_source, resolve
from export.clip_model import ImageTower, TextTower, image_spec
from export.repository import staged_version
from export.text_export import exporter_versions, parity_batches, tokenizer_spec
from service.domain.manifest import (
    CLIP_TEXT_EMBEDDER,
    IMAGE_EMBEDDER,
    TOKENIZER_DIR,
    ModelManifest,
    TensorSpec,
    write_manifest,
)
from service.platform.progress import steps


@dataclass(frozen=True)
class ClipExportResult:
    image: ModelManifest
    text: ModelManifest
    directories: tuple[Path, Path]


def _max_text_length(tokenizer, config) -> int:
    text_config = getattr(config, "text_config", None)
    positions = getattr(text_config, "max_position_embeddings", None)
    declared = getattr(tokenizer, "model_max_length", None)
    candidates = [int(v) for v in (declared, positions) if isinstance(v, int) and 0 < v < 1_000_000]
    return min(candidates) if candidates else 77


def _image_parity_batches(height: int, width: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    # Normalised pixels of real photos sit roughly in [-2, 2.5]; cover that range and a batch of one.
    return [
        {"pixel_values": rng.uniform(-2.0, 2.5, size=(3, 3, height, width)).astype(np.float32)},
        {"pixel_values": rng.normal(0.0, 1.0, size=(1, 3, height, width)).astype(np.float32)},
    ]


def export_clip(
    source: str,
    repository: Path,
    *,
    dim: int | None = None,
    version: int = 1,
    revision: str | None = None,
    trust_remote_code: bool = False,
    opset: int = 17,
    tolerance: float = 1e-4,
    batching: triton_config.BatchingOptions | None = None,
    image_role: str = IMAGE_EMBEDDER,
    text_role: str = CLIP_TEXT_EMBEDDER,
    license_name: str | None = None,
    external_data: bool | None = None,
) -> ClipExportResult:
    from transformers import AutoModel, AutoTokenizer

    batching = batching or triton_config.BatchingOptions()
    with steps(f"export {image_role}+{text_role}", total=7) as step:
        step("reading checkpoint")
        path = resolve(source, revision)
        step("loading model and tokenizer")
        model = AutoModel.from_pretrained(str(path), trust_remote_code=trust_remote_code).eval()
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise CheckpointError(f"{source} is not CLIP-style: no get_image_features/get_text_features")
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, use_fast=True
        )
        if not getattr(tokenizer, "is_fast", False):
            raise CheckpointError(f"{source}: no fast tokenizer; the façade needs tokenizer.json")
        spec = image_spec(path, model.config)
        probe = torch.zeros(1, 3, spec.height, spec.width)
        with torch.no_grad():
            full_dim = int(ImageTower(model, 1_000_000)(probe).shape[-1])
        dim = dim or full_dim
        if not 0 < dim <= full_dim:
            raise CheckpointError(f"--dim {dim} is outside 1..{full_dim} (the checkpoint's embedding width)")
        image_tower = ImageTower(model, dim).eval()
        try:
            text_tower = TextTower(model, dim, tokenizer.pad_token_id).eval()
        except ValueError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
        max_length = _max_text_length(tokenizer, model.config)
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

        with staged_version(repository, image_role, version) as image_dir:
            step("tracing the image tower")
            image_path = onnx_graph.export_module(
                image_tower,
                {"pixel_values": torch.zeros(2, 3, spec.height, spec.width)},
                ["embeds"],
                {"pixel_values": {0: "batch"}, "embeds": {0: "batch"}},
                image_dir / "model.onnx",
                opset=opset,
                external_data=external_data,
                static_output_dims={"embeds": {1: dim}},
            )
            image_diffs = parity.measure(
                image_tower, image_path, _image_parity_batches(spec.height, spec.width), ["embeds"]
            )
            image_worst = parity.assert_within(image_diffs, tolerance)
            space = f"{describe_source(source, path)}#{onnx_graph.fingerprint(image_path)[:12]}:{dim}"

            with staged_version(repository, text_role, version) as text_dir:
                step("tracing the text tower")
                example = tokenizer(
                    ["a photo of a cat", "anime key visual"], padding=True, return_tensors="pt"
                )
                text_path = onnx_graph.export_module(
                    text_tower,
                    {
                        "input_ids": example["input_ids"].to(torch.int64),
                        "attention_mask": example["attention_mask"].to(torch.int64),
                    },
                    ["embeds"],
                    {
                        "input_ids": {0: "batch", 1: "sequence"},
                        "attention_mask": {0: "batch", 1: "sequence"},
                        "embeds": {0: "batch"},
                    },
                    text_dir / "model.onnx",
                    opset=opset,
                    external_data=external_data,
                    static_output_dims={"embeds": {1: dim}},
                )
                step("checking parity with PyTorch")
                text_diffs = parity.measure(
                    text_tower, text_path, parity_batches(tokenizer, max_length), ["embeds"]
                )
                text_worst = parity.assert_within(text_diffs, tolerance)
                print(
                    f"parity {image_role}: {image_worst:.3e}, {text_role}: {text_worst:.3e} "
                    f"(tolerance {tolerance:.0e})",
                    flush=True,
                )
                step("writing manifests and config.pbtxt")
                tokenizer.save_pretrained(str(text_dir / TOKENIZER_DIR))
                common = {
                    "source": describe_source(source, path),
                    "source_revision": revision,
                    "architecture": str(getattr(model.config, "model_type", "clip")),
                    "dim": dim,
                    "full_dim": full_dim,
                    "matryoshka": dim < full_dim,
                    "pooling": "model",
                    "normalized": True,
                    "embedding_space": space,
                    "opset": opset,
                    "parity_tolerance": tolerance,
                    "exported_at": stamp,
                    "exporter": exporter_versions(),
                    "license": license_name,
                }
                image_manifest = ModelManifest(
                    role=image_role,
                    kind="image",
                    image=spec,
                    inputs=[TensorSpec("pixel_values", "float32", ["batch", 3, spec.height, spec.width])],
                    outputs=[TensorSpec("embeds", "float32", ["batch", dim])],
                    parity_max_abs_diff=image_worst,
                    fingerprint=onnx_graph.fingerprint(image_path),
                    **common,  # type: ignore[arg-type]
                )
                text_manifest = ModelManifest(
                    role=text_role,
                    kind="text",
                    tokenizer=tokenizer_spec(tokenizer, max_length),
                    inputs=[
                        TensorSpec("input_ids", "int64", ["batch", "sequence"]),
                        TensorSpec("attention_mask", "int64", ["batch", "sequence"]),
                    ],
                    outputs=[TensorSpec("embeds", "float32", ["batch", dim])],
                    parity_max_abs_diff=text_worst,
                    fingerprint=onnx_graph.fingerprint(text_path),
                    **common,  # type: ignore[arg-type]
                )
                write_manifest(image_dir, image_manifest)
                write_manifest(text_dir, text_manifest)
                triton_config.write_config(
                    repository / image_role,
                    image_triton_config(image_role, spec.height, spec.width, dim, batching),
                )
                triton_config.write_config(
                    repository / text_role, clip_text_triton_config(text_role, dim, batching)
                )
        step("done")
    return ClipExportResult(
        image_manifest,
        text_manifest,
        (repository / image_role / str(version), repository / text_role / str(version)),
    )


def image_triton_config(
    role: str, height: int, width: int, dim: int, batching: triton_config.BatchingOptions
) -> triton_config.mc.ModelConfig:
    io = triton_config.TensorIO
    return triton_config.build_config(
        role, [io("pixel_values", "float32", [3, height, width])], [io("embeds", "float32", [dim])], batching
    )


def clip_text_triton_config(
    role: str, dim: int, batching: triton_config.BatchingOptions
) -> triton_config.mc.ModelConfig:
    io = triton_config.TensorIO
    return triton_config.build_config(
        role,
        [io("input_ids", "int64", [-1]), io("attention_mask", "int64", [-1])],
        [io("embeds", "float32", [dim])],
        batching,
    )
