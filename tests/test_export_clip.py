"""Export of CLIP-style checkpoints: two graphs in one space, preprocessing read from the checkpoint."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
import pytest
import torch

from export import onnx_graph, triton_config
from export.checkpoint import CheckpointError
from export.clip_export import export_clip
from service.domain.manifest import (
    CLIP_TEXT_EMBEDDER,
    IMAGE_EMBEDDER,
    MANIFEST_FILE,
    ManifestError,
    load_manifest,
)
from service.images.preprocessing import preprocess_batch
from tests.builders import synthetic_cover


@pytest.fixture(scope="module")
def clip_repository(clip_checkpoint, tmp_path_factory):
    repository = tmp_path_factory.mktemp("clip-repo")
    export_clip(str(clip_checkpoint), repository, license_name="mit")
    return repository


@pytest.fixture(scope="module")
def matryoshka_repository(clip_checkpoint, tiny_repository, tmp_path_factory):
    """A whole deployable repository (text_embedder too) whose CLIP towers keep 32 of 64 dims."""
    repository = tmp_path_factory.mktemp("matryoshka") / "repo"
    shutil.copytree(tiny_repository, repository)
    export_clip(str(clip_checkpoint), repository, dim=32)
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


def test_matryoshka_dim_truncates_then_normalises(
    clip_repository, clip_checkpoint, matryoshka_repository, tmp_path
):
    pixels = {"pixel_values": np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)}
    short = _run(matryoshka_repository, IMAGE_EMBEDDER, pixels)
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


def test_manifests_record_the_chosen_dim_and_the_models_full_width(clip_repository, matryoshka_repository):
    for role in (IMAGE_EMBEDDER, CLIP_TEXT_EMBEDDER):
        full, _ = load_manifest(clip_repository, role)
        assert (full.dim, full.full_dim, full.matryoshka) == (64, 64, False)
        short, directory = load_manifest(matryoshka_repository, role)
        assert (short.dim, short.full_dim, short.matryoshka) == (32, 64, True)
        # Operators read the file itself: the fields are there by name, not only as defaults.
        raw = json.loads((directory / MANIFEST_FILE).read_text())
        assert (raw["dim"], raw["full_dim"], raw["matryoshka"]) == (32, 64, True)
        assert short.outputs[0].shape == ["batch", 32]
        assert short.embedding_space is not None and short.embedding_space.endswith(":32")
    triton = triton_config.read_config(matryoshka_repository / IMAGE_EMBEDDER)
    assert list(triton.output[0].dims) == [32]


async def test_the_facade_serves_the_truncated_dim(matryoshka_repository, tmp_path):
    from litestar.testing import AsyncTestClient

    from service.app import create_app
    from service.domain.vectors import IMAGE_VECTORS
    from service.settings import load_settings

    settings = load_settings({}, model_repository=matryoshka_repository, qdrant_path=tmp_path / "q")
    async with AsyncTestClient(create_app(settings)) as client:
        info = (await client.get("/")).json()
        dims = {m["role"]: m["dim"] for m in info["models"]}
        assert dims[IMAGE_EMBEDDER] == dims[CLIP_TEXT_EMBEDDER] == 32
        runtime = client.app.state.runtime
        assert {runtime.store.schema.dense[name] for name in IMAGE_VECTORS} == {32}
        vectors = await runtime.image.encode([synthetic_cover(0), synthetic_cover(1)])
        assert vectors.shape == (2, 32)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def _copy_role(source: Path, destination: Path, role: str, edit) -> Path:
    """`role` copied into a fresh repository with its manifest JSON passed through `edit`."""
    _, directory = load_manifest(source, role)
    target = destination / role / directory.name
    shutil.copytree(directory, target)
    raw = json.loads((target / MANIFEST_FILE).read_text())
    (target / MANIFEST_FILE).write_text(json.dumps(edit(raw)))
    return destination


def test_manifests_from_before_matryoshka_fields_still_load(clip_repository, tmp_path):
    def strip(raw: dict) -> dict:
        raw.pop("full_dim")
        raw.pop("matryoshka")
        return raw

    old = _copy_role(clip_repository, tmp_path / "old", IMAGE_EMBEDDER, strip)
    manifest, _ = load_manifest(old, IMAGE_EMBEDDER)
    assert (manifest.dim, manifest.full_dim, manifest.matryoshka) == (64, None, False)
    current, _ = load_manifest(clip_repository, IMAGE_EMBEDDER)
    assert msgspec.structs.replace(manifest, full_dim=64) == current


@pytest.mark.parametrize(
    "change",
    [{"full_dim": 16}, {"matryoshka": True, "full_dim": None}, {"matryoshka": True}, {"dim": 0}],
    ids=["dim-wider-than-full", "matryoshka-without-full", "matryoshka-not-truncated", "zero-dim"],
)
def test_inconsistent_dims_fail_at_load(clip_repository, tmp_path, change):
    broken = _copy_role(clip_repository, tmp_path, IMAGE_EMBEDDER, lambda raw: raw | change)
    with pytest.raises(ManifestError, match="not a valid manifest"):
        load_manifest(broken, IMAGE_EMBEDDER)


_REMOTE_MODELLING = '''
"""A JinaCLIP-shaped model for `trust_remote_code`: its own config class and model type, and
get_text_features(input_ids) without an attention mask, returning plain tensors."""

import torch
from transformers import CLIPConfig, CLIPModel


class JinaLikeConfig(CLIPConfig):
    model_type = "jina_like_clip"


class JinaLikeModel(CLIPModel):
    config_class = JinaLikeConfig

    def get_text_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Like JinaCLIP: the model finds the padding itself.
        mask = (input_ids != self.config.text_config.pad_token_id).long()
        return super().get_text_features(input_ids=input_ids, attention_mask=mask).pooler_output

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().get_image_features(pixel_values=pixel_values).pooler_output
'''


@pytest.fixture(scope="module")
def remote_code_checkpoint(clip_checkpoint, tmp_path_factory) -> Path:
    """The tiny CLIP's weights behind a config whose auto_map names a modelling file in the folder.

    transformers only loads it with trust_remote_code=True, as for jinaai/jina-clip-v2; everything is
    local, so the path is exercised offline.
    """
    folder = tmp_path_factory.mktemp("remote") / "jina_like_clip"
    shutil.copytree(clip_checkpoint, folder)
    (folder / "modeling_jina_like.py").write_text(textwrap.dedent(_REMOTE_MODELLING))
    config = json.loads((folder / "config.json").read_text())
    config |= {
        "model_type": "jina_like_clip",
        "architectures": ["JinaLikeModel"],
        "auto_map": {
            "AutoConfig": "modeling_jina_like.JinaLikeConfig",
            "AutoModel": "modeling_jina_like.JinaLikeModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_checkpoints_need_trust_remote_code(remote_code_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        export_clip(str(remote_code_checkpoint), tmp_path)
    assert not list(tmp_path.rglob(MANIFEST_FILE))  # nothing half-exported


def test_a_jinaclip_shaped_remote_code_checkpoint_exports_offline(
    remote_code_checkpoint, clip_checkpoint, clip_repository, tmp_path
):
    from transformers import AutoModel, AutoTokenizer

    result = export_clip(str(remote_code_checkpoint), tmp_path, dim=48, trust_remote_code=True)
    image, text = result.image, result.text
    assert image.architecture == "jina_like_clip"
    assert (image.dim, image.full_dim, image.matryoshka) == (48, 64, True)
    assert image.embedding_space == text.embedding_space

    model = AutoModel.from_pretrained(str(remote_code_checkpoint), trust_remote_code=True).eval()
    assert type(model).__name__ == "JinaLikeModel"  # the folder's code ran, not transformers' CLIP
    tokenizer = AutoTokenizer.from_pretrained(str(remote_code_checkpoint))
    enc = tokenizer(["a girl with a sword", "robots in space"], padding=True, return_tensors="pt")
    feed = {k: v.numpy().astype(np.int64) for k, v in enc.items()}
    ours = _run(tmp_path, CLIP_TEXT_EMBEDDER, feed)
    with torch.no_grad():
        reference = model.get_text_features(input_ids=enc["input_ids"])[:, :48]
    np.testing.assert_allclose(ours, torch.nn.functional.normalize(reference, dim=-1).numpy(), atol=1e-4)
    # The graph still takes the mask (the façade and Triton always send it) and it is the one source
    # of truth: whatever sits under a zero mask is padding, as for towers that take the mask.
    _, directory = load_manifest(tmp_path, CLIP_TEXT_EMBEDDER)
    inputs, _ = onnx_graph.graph_io(directory / "model.onnx")
    assert list(inputs) == ["input_ids", "attention_mask"]
    garbage = feed | {"input_ids": np.where(feed["attention_mask"] == 1, feed["input_ids"], 7)}
    assert (garbage["input_ids"] != feed["input_ids"]).any()
    np.testing.assert_allclose(_run(tmp_path, CLIP_TEXT_EMBEDDER, garbage), ours, atol=1e-5)
    alone = tokenizer(["robots in space"], return_tensors="np")
    unpadded = _run(tmp_path, CLIP_TEXT_EMBEDDER, {k: v.astype(np.int64) for k, v in alone.items()})
    np.testing.assert_allclose(unpadded[0], ours[1], atol=1e-5)
    # Same weights as the plain tiny CLIP: the image graph is its full export's prefix, re-normalised.
    pixels = {"pixel_values": np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)}
    full = _run(clip_repository, IMAGE_EMBEDDER, pixels)[:, :48]
    np.testing.assert_allclose(
        _run(tmp_path, IMAGE_EMBEDDER, pixels), full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5
    )
