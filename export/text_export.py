"""Export a text encoder checkpoint as the `text_embedder` Triton model entry."""

from __future__ import annotations

import datetime as dt
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from export import onnx_graph, parity, triton_config
from export.checkpoint import CheckpointError, Pooling, TextCheckpoint, inspect_text
from export.repository import staged_version
from export.text_model import load_text_module
from service.domain.manifest import (
    TEXT_EMBEDDER,
    TOKENIZER_DIR,
    Lineage,
    ManifestError,
    ModelManifest,
    Prompts,
    Quantization,
    ReferenceParity,
    TensorSpec,
    TokenizerSpec,
    load_manifest,
    version_dirs,
    write_manifest,
)
from service.platform.progress import steps

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
    version: int | Literal["next"] = 1,
    revision: str | None = None,
    pooling: Pooling | str = "auto",
    max_length: int | None = None,
    sparse: bool | None = None,
    opset: int = 17,
    tolerance: float = 1e-4,
    batching: triton_config.BatchingOptions | None = None,
    external_data: bool | None = None,
    license_name: str | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    quantize: str | None = None,
    serve_versions: Sequence[int] | None = None,
) -> TextExportResult:
    """Export `source` as `<repository>/<role>/<version>`; nothing is written unless every check passes.

    Prompts default to the checkpoint's own (sentence-transformers config); `quantize="int8"` replaces
    the fp32 graph by ONNX Runtime's dynamic int8 quantization of it, with its cosine to fp32 recorded.

    `version="next"` writes the version after the role's newest (a fine-tune beside its base). Triton
    then serves `serve_versions`, by default every version of the role: the façade picks one per
    request, so each must stay loadable until it is removed on purpose.
    """
    from transformers import AutoTokenizer

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    batching = batching or triton_config.BatchingOptions()
    # Reading the checkpoint (a Hub download shows its own progress) decides which steps follow.
    ckpt = inspect_text(source, revision, pooling=pooling, max_length=max_length, sparse=sparse)  # type: ignore[arg-type]
    existing = version_dirs(repository / role)
    if version == "next":
        version = (existing[-1] + 1) if existing else 1
    lineage = _lineage(ckpt, repository, role, [v for v in existing if v != version])
    served = sorted(set(serve_versions if serve_versions else [*existing, version]))
    if version not in served:
        raise ValueError(f"serve_versions {served} leaves out the version being exported ({version})")
    prompts = Prompts(
        query=ckpt.query_prompt if query_prompt is None else query_prompt,
        document=ckpt.document_prompt if document_prompt is None else document_prompt,
    )
    has_reference = ckpt.provenance is not None and ckpt.provenance.reference_engine is not None
    with steps(f"export {role}", total=5 + has_reference + (quantize is not None)) as step:
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
            tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
            reference = None
            if has_reference:
                step(f"checking parity with {ckpt.provenance.reference_engine}'s own engine")  # type: ignore[union-attr]
                reference = reference_parity(onnx_path, staging / TOKENIZER_DIR / "tokenizer.json", prompts)
            quantization = None
            if quantize == "int8":
                step("quantizing to int8")
                quantization = quantize_int8(onnx_path, tokenizer, prompts)
                print(
                    f"int8 {role}: cosine to fp32 min {quantization.min_cosine_to_fp32:.4f}, "
                    f"mean {quantization.mean_cosine_to_fp32:.4f}",
                    flush=True,
                )
            step("writing manifest and config.pbtxt")
            inputs_io, outputs_io = onnx_graph.graph_io(onnx_path)
            manifest = ModelManifest(
                role=role,
                kind="text",
                source=ckpt.source,
                source_revision=revision,
                upstream=ckpt.provenance.upstream if ckpt.provenance else None,
                weights_note=ckpt.provenance.weights_note if ckpt.provenance else None,
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
                license=license_name or (ckpt.provenance.license if ckpt.provenance else None),
                reference_parity=reference,
                prompts=prompts,
                precision="int8" if quantization else "fp32",
                quantization=quantization,
                lineage=lineage,
            )
            _check_side_by_side(repository, role, manifest, [v for v in served if v != version])
            write_manifest(staging, manifest)
            config = text_triton_config(
                role, manifest.dim, manifest.has_sparse, batching, served if len(served) > 1 else None
            )
            triton_config.write_config(repository / role, config)
        step("done")
    return TextExportResult(repository / role / str(version), manifest)


def reference_parity(onnx_path: Path, tokenizer_json: Path, prompts: Prompts) -> ReferenceParity:
    """Our graph + tokenizer against the package's engine; refused below the bar (ParityError)."""
    from export.reference_parity import MIN_COSINE, measure_reference

    result = measure_reference(onnx_path, tokenizer_json, (prompts.query, prompts.document))
    ids = {True: "identical", False: "DIFFERENT", None: "not compared"}[result.token_ids_identical]
    print(
        f"parity with {result.engine}: {result.texts} texts, token ids {ids}, cosine min "
        f"{result.min_cosine:.5f} mean {result.mean_cosine:.5f} (bar {MIN_COSINE})",
        flush=True,
    )
    if result.token_ids_identical is False or result.min_cosine < MIN_COSINE:
        raise parity.ParityError({"reference_cosine_gap": 1.0 - result.min_cosine}, 1.0 - MIN_COSINE)
    return result


def quantize_int8(onnx_path: Path, tokenizer, prompts: Prompts) -> Quantization:
    """Replace the fp32 graph at `onnx_path` by its dynamic int8 quantization; measure what it costs.

    ONNX Runtime's dynamic quantization: int8 weights for MatMul/Gather, activations quantized per
    batch at run time (no calibration set needed, and VNNI CPUs run the int8 products natively).
    """
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_fingerprint = onnx_graph.fingerprint(onnx_path)
    quantized = onnx_path.with_name("model.int8.onnx")
    # The quantizer logs a line per tensor on the root logger (and suggests a pre-processing step that
    # only matters for static quantization): keep the export's own progress readable.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(onnx_path),
            str(quantized),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gather"],
            per_channel=True,
        )
    finally:
        root.setLevel(level)
    texts = [prompts.query + t for t in PARITY_TEXTS] + [prompts.document + t for t in PARITY_TEXTS]
    cosines: list[float] = []
    options = ort.SessionOptions()
    before = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])
    for text in texts:
        enc = tokenizer([text], return_tensors="np")
        feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        a = before.run(["dense"], feed)[0][0]
        b = after.run(["dense"], feed)[0][0]
        cosines.append(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))))
    del before, after
    for stale in (onnx_path, onnx_path.with_name(onnx_path.name + ".data")):
        stale.unlink(missing_ok=True)
    quantized.rename(onnx_path)
    return Quantization(
        method="onnxruntime dynamic int8 (MatMul, Gather; per-channel weights)",
        min_cosine_to_fp32=min(cosines),
        mean_cosine_to_fp32=float(np.mean(cosines)),
        fp32_fingerprint=fp32_fingerprint,
    )


def _lineage(ckpt: TextCheckpoint, repository: Path, role: str, others: Sequence[int]) -> Lineage | None:
    """The checkpoint's lineage.json as the manifest's Lineage, with the base's version in this
    repository: the newest other version exported from the same source."""
    record = ckpt.lineage
    if not record:
        return None
    base_version = base_model_version = None
    for candidate in sorted(others, reverse=True):
        try:
            other, _ = load_manifest(repository, role, candidate)
        except ManifestError:
            continue
        if other.source == record["base_source"]:
            base_version, base_model_version = candidate, other.model_version
            break
    return Lineage(
        base_source=str(record["base_source"]),
        base_version=base_version,
        base_model_version=base_model_version,
        run_id=str(record["run_id"]),
        method=str(record["method"]),
        data_sha256=str(record["data_sha256"]),
        steps=int(record["steps"]),
    )


def _check_side_by_side(repository: Path, role: str, manifest: ModelManifest, others: Sequence[int]) -> None:
    """Versions one config.pbtxt serves share its inputs and outputs: same width, same sparse head."""
    for other_version in others:
        other, _ = load_manifest(repository, role, other_version)
        if (other.dim, other.has_sparse) != (manifest.dim, manifest.has_sparse):
            raise CheckpointError(
                f"{role} version {other_version} has dim {other.dim} (sparse={other.has_sparse}), this "
                f"export dim {manifest.dim} (sparse={manifest.has_sparse}): one Triton config cannot serve "
                "both; "
                "export to another role or pass serve_versions without it"
            )


def text_triton_config(
    role: str,
    dim: int,
    has_sparse: bool,
    batching: triton_config.BatchingOptions,
    versions: Sequence[int] | None = None,
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
        versions=versions,
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
