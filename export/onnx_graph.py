"""Trace a PyTorch module to ONNX, check the graph, and store it the way Triton and ORT load it."""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import torch

# Protobuf cannot serialise a message past 2 GiB (BGE-m3 in fp32 is ~2.2 GB): keep a margin.
_EXTERNAL_THRESHOLD = int(1.8 * 2**30)


def export_module(
    module: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    destination: Path,
    opset: int,
    external_data: bool | None = None,
    static_output_dims: Mapping[str, Mapping[int, int]] | None = None,
) -> Path:
    """Write `destination` (and `destination`.data when large); returns the .onnx path.

    The TorchScript exporter is used: it handles BERT/XLM-R/CLIP graphs with dynamic batch and
    sequence axes without the version-converter gaps the dynamo exporter still shows at opset 17.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(example_inputs.values()),
                str(raw),
                input_names=list(example_inputs),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        model = onnx.load(str(raw), load_external_data=True)
        # The tracer leaves computed dims symbolic (e.g. after L2 normalisation); pin the ones we know
        # so Triton, TensorRT and readers of the graph see the real embedding width.
        for output in model.graph.output:
            for axis, size in (static_output_dims or {}).get(output.name, {}).items():
                output.type.tensor_type.shape.dim[axis].dim_value = size
        size = sum(t.ByteSize() for t in model.graph.initializer)
        use_external = external_data if external_data is not None else size > _EXTERNAL_THRESHOLD
        for stale in (destination, destination.with_name(destination.name + ".data")):
            stale.unlink(missing_ok=True)
        if use_external:
            onnx.save_model(
                model,
                str(destination),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=destination.name + ".data",
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(destination))
    onnx.checker.check_model(str(destination))
    return destination


def graph_io(path: Path) -> tuple[dict[str, list[int | str]], dict[str, list[int | str]]]:
    """Input and output shapes as the graph declares them (symbolic dims by name)."""
    model = onnx.load(str(path), load_external_data=False)

    def shape(value: onnx.ValueInfoProto) -> list[int | str]:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_param if d.dim_param else d.dim_value for d in dims]

    initializers = {i.name for i in model.graph.initializer}
    inputs = {v.name: shape(v) for v in model.graph.input if v.name not in initializers}
    outputs = {v.name: shape(v) for v in model.graph.output}
    return inputs, outputs


def graph_dtypes(path: Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    names = {}
    for value in [*model.graph.input, *model.graph.output]:
        names[value.name] = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    return names


def fingerprint(path: Path) -> str:
    """sha256 of the graph and its external data: what `model_version` is derived from."""
    digest = hashlib.sha256()
    for part in (path, path.with_name(path.name + ".data")):
        if part.is_file():
            with part.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()
