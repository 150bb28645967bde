"""Fine-tuning (finetune/): the split keeps evaluated anime out of training, pairs and masks say what is
right, the merged checkpoint is what was trained, and it exports as the next version with its lineage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
import pytest
import torch

from export import triton_config
from export.checkpoint import CheckpointError
from export.cli import main as export_cli
from export.text_export import export_text
from finetune.__main__ import main as finetune_cli
from finetune.pairs import Pair, first_sentences, mine_pairs
from finetune.split import franchise_groups, split_catalogue
from finetune.train import (
    Embedder,
    TrainConfig,
    add_adapters,
    contrastive_loss,
    merge_adapters,
    negatives_mask,
)
from service.domain.manifest import TEXT_EMBEDDER, load_manifest
from tests.builders import STORIES, story_documents


def test_first_sentences_cut_a_description_to_what_a_user_types():
    assert first_sentences("One. Two! Three? Four.") == "One. Two!"
    assert (
        first_sentences("少年驾驶机器人。他的父亲造了它。还有更多。") == "少年驾驶机器人。 他的父亲造了它。"
    )


def test_whole_franchises_are_held_out_and_never_mined_for_training():
    docs = story_documents()
    # Each story's seasons are one franchise; story 0 is a plot-en anime, so all of it is held out.
    franchise_of = {
        d.anime_id: {o.anime_id for o in docs if o.anime_id.split("-")[2] == d.anime_id.split("-")[2]}
        - {d.anime_id}
        for d in docs
    }
    split = split_catalogue(docs, franchise_of, always_held_out=["anime-2-0"], eval_share=0.0)
    assert {f"anime-{i}-0" for i in range(4)} <= split.held_out
    assert not split.train & split.held_out and split.train | split.held_out == {d.anime_id for d in docs}
    pairs = mine_pairs([d for d in docs if d.anime_id in split.train], franchise_of, seed=0)
    mined = {p.anime_id for kind in pairs.values() for p in kind}
    assert mined and not mined & split.held_out
    # The share is a property of the group, not of the seed or the order of the documents.
    again = split_catalogue(list(reversed(docs)), franchise_of, always_held_out=["anime-2-0"], eval_share=0.5)
    once = split_catalogue(docs, franchise_of, always_held_out=["anime-2-0"], eval_share=0.5)
    assert again.held_out == once.held_out


def test_franchise_groups_are_joined_through_chains():
    groups = franchise_groups(["a", "b", "c", "d"], {"a": ["b"], "b": ["c"]})
    assert groups["a"] == groups["c"] == frozenset("abc") and groups["d"] == frozenset("d")


def test_pairs_match_english_plots_to_chinese_ones_and_mark_the_franchise_right():
    docs = story_documents(copies=2)
    franchise_of = {"anime-0-1": frozenset({"anime-1-1"}), "anime-1-1": frozenset({"anime-0-1"})}
    pairs = mine_pairs(docs, franchise_of, seed=0)
    plot = [p for p in pairs["plot"] if p.anime_id == "anime-0-1"]
    assert {p.passage for p in plot} == {STORIES[1][1]}
    assert {p.query for p in plot} == {STORIES[1][0], first_sentences(STORIES[1][0])}
    assert all(p.also_right == {"anime-0-1", "anime-1-1"} for p in plot)
    assert pairs["title"] and all(p.query != p.passage for p in pairs["title"])
    # Names are stored embedded as queries (service/catalogue/writer.py): training must embed them alike.
    assert {p.passage_kind for p in pairs["title"]} == {"query"}
    assert {p.passage_kind for p in pairs["plot"] + pairs["labels"]} == {"document"}
    assert pairs["labels"] and all(p.query.startswith("An anime about") for p in pairs["labels"])


def test_a_sequel_in_the_batch_is_not_taught_as_a_wrong_answer():
    batch = [
        Pair("plot", "q0", "p0", "a", frozenset({"a", "a2"})),
        Pair("plot", "q1", "p1", "a2", frozenset({"a", "a2"})),
        Pair("plot", "q2", "p2", "b", frozenset({"b"})),
    ]
    mask = negatives_mask(batch)
    assert mask.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    # Query 0 lies as near the sequel's passage as its own: unmasked, that costs loss; masked, it does not.
    queries = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    passages = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0]]), dim=1)
    unmasked = contrastive_loss(queries, passages, torch.zeros_like(mask), 0.05)
    assert contrastive_loss(queries, passages, mask, 0.05) < unmasked


def test_merging_the_adapters_keeps_what_was_trained(tiny_checkpoint):
    from transformers import AutoTokenizer

    from export.checkpoint import inspect_text
    from export.text_model import load_text_module

    checkpoint = inspect_text(str(tiny_checkpoint))
    module = load_text_module(checkpoint)
    embed = Embedder(module, AutoTokenizer.from_pretrained(str(tiny_checkpoint)), "query: ", "passage: ")
    texts = [english for english, _ in STORIES]
    with torch.no_grad():
        base = embed(texts, "document", 64)
    add_adapters(module, TrainConfig(rank=4, alpha=8, dropout=0.0))
    # LoRA starts as the identity (B = 0): give it weights as training would.
    torch.manual_seed(0)
    for name, parameter in module.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)
    module.eval()
    with torch.no_grad():
        adapted = embed(texts, "document", 64)
        merge_adapters(module)
        merged = embed(texts, "document", 64)
    assert not torch.allclose(adapted, base, atol=1e-3)
    assert torch.allclose(merged, adapted, atol=1e-5)


def test_a_run_exports_as_the_next_version_with_its_lineage(tiny_checkpoint, tiny_repository, tmp_path: Path):
    documents = tmp_path / "documents.json"
    documents.write_bytes(msgspec.json.encode(story_documents()))
    run = tmp_path / "run"
    code = finetune_cli(
        [
            "text", "--base", str(tiny_checkpoint), "--documents", str(documents), "--out", str(run),
            "--steps", "6", "--batch-size", "4", "--rank", "4", "--alpha", "8", "--eval-share", "0.3",
            "--learning-rate", "0.01",
        ]
    )  # fmt: skip
    assert code == 0
    record = json.loads((run / "run.json").read_text())
    assert len(record["losses"]) == 6 and sum(record["batches_per_kind"].values()) == 6
    assert record["pairs"]["plot"] > 0 and len(record["data_sha256"]) == 64
    held_out = set(json.loads((run / "split.json").read_text())["held_out"])
    assert held_out and record["split"]["train"] == len(story_documents()) - len(held_out)
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"

    repository = tmp_path / "repo"
    shutil.copytree(tiny_repository, repository)
    assert export_cli(["text", str(run / "merged"), "--out", str(repository), "--version", "next"]) == 0
    manifest, directory = load_manifest(repository, TEXT_EMBEDDER)
    base, base_directory = load_manifest(repository, TEXT_EMBEDDER, 1)
    assert directory.name == "2"
    assert manifest.lineage is not None and manifest.lineage.base_version == 1
    assert manifest.lineage.base_model_version == base.model_version
    assert manifest.lineage.run_id == record["run_id"] and manifest.lineage.steps == 6
    assert manifest.source.startswith(base.source) and manifest.has_sparse == base.has_sparse
    # Triton serves both versions side by side, so the façade can pick either per request.
    config = triton_config.read_config(repository / TEXT_EMBEDDER)
    assert list(config.version_policy.specific.versions) == [1, 2]
    # The new version is the trained model: the same text gets another vector.
    ids = np.array([[0, 5, 6, 7, 2]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    old = ort.InferenceSession(str(base_directory / "model.onnx")).run(["dense"], feeds)[0]
    new = ort.InferenceSession(str(directory / "model.onnx")).run(["dense"], feeds)[0]
    assert not np.allclose(old, new, atol=1e-4)


def test_a_version_of_another_width_cannot_join_the_served_ones(tmp_path: Path, tiny_repository):
    from tests.builders import build_tiny_xlmr

    wider = build_tiny_xlmr(tmp_path / "wider", hidden_size=48)
    repository = tmp_path / "repo"
    shutil.copytree(tiny_repository, repository)
    with pytest.raises(CheckpointError, match="one Triton config cannot serve"):
        export_text(str(wider), repository, version="next")
    assert [p.name for p in (repository / TEXT_EMBEDDER).iterdir() if p.is_dir()] == ["1"]
