"""Export of CLIP-style checkpoints: two graphs in one space, preprocessing read from the checkpoint."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export import onnx_graph, triton_config
from export.checkpoint import CheckpointError
from export.clip_export import export_clip
from service.images import preprocess_batch
from service.manifest import CLIP_TEXT_EMBEDDER, IMAGE_EMBEDDER, load_manifest
from tests.builders import synthetic_cover


@pytest.fixture(scope="module")
def clip_repository(clip_checkpoint, tmp_path_factory):
    repository = tmp_path_factory.mktemp("clip-repo")
    export_clip(str(clip_checkpoint), repository, license_name="mit")
    return repository


def _run(repository, role, feed):
    _, directory = load_manifest(repository, role)
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["embeds"], feed)[0]


def test_manifests_share_a_space_and_carry_the_checkpoints_preprocessing(clip_repository):
    image, _ = load_manifest(clip_repository, IMAGE_EMBEDDER)
    text, _ = load_manifest(clip_repository, CLIP_TEXT_EMBEDDER)
    assert image.kind == "image" and text.kind == "text"
    assert image.dim == text.dim == 64
    assert image.embedding_space == text.embedding_space is not None
    assert image.image is not None
    assert (image.image.height, image.image.width) == (64, 64)
    assert image.image.resize == "shortest_edge_center_crop" and image.image.resample == "bicubic"
    assert image.image.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert text.tokenizer is not None and text.tokenizer.max_length == 77
    assert max(image.parity_max_abs_diff, text.parity_max_abs_diff) <= 1e-4
    assert image.license == "mit"


def test_image_graph_with_our_preprocessing_matches_transformers_end_to_end(clip_repository, clip_checkpoint):
    from transformers import CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(str(clip_checkpoint)).eval()
    processor = CLIPImageProcessorPil.from_pretrained(str(clip_checkpoint))
    covers = [synthetic_cover(i, size=(200 + 30 * i, 300)) for i in range(3)]
    manifest, _ = load_manifest(clip_repository, IMAGE_EMBEDDER)
    ours = _run(clip_repository, IMAGE_EMBEDDER, {"pixel_values": preprocess_batch(covers, manifest.image)})
    pixels = processor(images=covers, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = torch.nn.functional.normalize(
            model.get_image_features(pixel_values=pixels).pooler_output, dim=-1
        )
    np.testing.assert_allclose(ours, reference.numpy(), atol=1e-4)


def test_text_graph_matches_get_text_features(clip_repository, clip_checkpoint):
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(str(clip_checkpoint)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(clip_checkpoint))
    enc = tokenizer(["a girl with a sword", "robots", "校园"], padding=True, return_tensors="pt")
    ours = _run(clip_repository, CLIP_TEXT_EMBEDDER, {k: v.numpy().astype(np.int64) for k, v in enc.items()})
    with torch.no_grad():
        out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    np.testing.assert_allclose(
        ours, torch.nn.functional.normalize(out.pooler_output, dim=-1).numpy(), atol=1e-4
    )


def test_matryoshka_dim_truncates_then_normalises(clip_repository, clip_checkpoint, tmp_path):
    export_clip(str(clip_checkpoint), tmp_path, dim=32)
    pixels = {"pixel_values": np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)}
    short = _run(tmp_path, IMAGE_EMBEDDER, pixels)
    full = _run(clip_repository, IMAGE_EMBEDDER, pixels)
    assert short.shape == (2, 32)
    truncated = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(short, truncated, atol=1e-5)
    with pytest.raises(CheckpointError, match="outside"):
        export_clip(str(clip_checkpoint), tmp_path / "too-wide", dim=65)


def test_triton_configs_match_the_graphs(clip_repository):
    for role in (IMAGE_EMBEDDER, CLIP_TEXT_EMBEDDER):
        config = triton_config.read_config(clip_repository / role)
        _, directory = load_manifest(clip_repository, role)
        inputs, outputs = onnx_graph.graph_io(directory / "model.onnx")
        assert [t.name for t in config.input] == list(inputs)
        assert [t.name for t in config.output] == list(outputs) == ["embeds"]
        for tensor in (*config.input, *config.output):
            shape = {**inputs, **outputs}[tensor.name]
            assert list(tensor.dims) == [-1 if isinstance(d, str) else d for d in shape[1:]]
    image = triton_config.read_config(clip_repository / IMAGE_EMBEDDER)
    assert list(image.input[0].dims) == [3, 64, 64]
    assert list(image.output[0].dims) == [64]
