"""Prompts are part of a model: recorded at export, applied by the façade to queries and documents alike.

A wrong prompt raises no error and costs relevance silently, so these tests pin where each one goes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from export.cli import main as export_cli
from export.text_export import export_text
from service.catalogue.writer import embed_documents
from service.domain.composition import facts_text, synopsis_texts, title_texts
from service.domain.documents import AnimeDocument
from service.domain.manifest import TEXT_EMBEDDER, load_manifest
from service.runtime import build_runtime
from service.search.search_service import SearchService
from service.settings import load_settings

QUERY = "search: "
DOCUMENT = "doc: "


@pytest.fixture(scope="module")
def prompted_checkpoint(tiny_checkpoint: Path, tmp_path_factory) -> Path:
    """The tiny checkpoint with sentence-transformers prompts, as an E5-style checkpoint declares them."""
    folder = tmp_path_factory.mktemp("prompted") / "tiny-prompted"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": QUERY, "passage": DOCUMENT}, "default_prompt_name": None})
    )
    return folder


@pytest.fixture(scope="module")
def prompted_repository(prompted_checkpoint: Path, tmp_path_factory) -> Path:
    repository = tmp_path_factory.mktemp("prompted-repo")
    export_text(str(prompted_checkpoint), repository)
    return repository


def _raw_embedding(repository: Path, text: str) -> np.ndarray:
    """The graph's vector of exactly `text`, tokenized with the export's tokenizer: no prompt added."""
    _, directory = load_manifest(repository, TEXT_EMBEDDER)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer" / "tokenizer.json"))
    tokenizer.no_padding()
    ids = tokenizer.encode(text).ids
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
    return session.run(["dense"], feed)[0][0]


def test_export_records_the_checkpoints_prompts_and_the_cli_overrides_them(
    prompted_checkpoint, prompted_repository, tmp_path
):
    manifest, _ = load_manifest(prompted_repository, TEXT_EMBEDDER)
    assert (manifest.prompts.query, manifest.prompts.document) == (QUERY, DOCUMENT)
    assert manifest.source == "local:tiny-prompted"  # a folder's name, never this machine's path
    code = export_cli(
        [
            "text",
            str(prompted_checkpoint),
            "--out",
            str(tmp_path),
            "--query-prompt",
            "",
            "--document-prompt",
            "d ",
        ]
    )
    assert code == 0
    overridden, _ = load_manifest(tmp_path, TEXT_EMBEDDER)
    assert (overridden.prompts.query, overridden.prompts.document) == ("", "d ")


def test_a_checkpoint_without_prompts_gets_none(tiny_repository):
    manifest, _ = load_manifest(tiny_repository, TEXT_EMBEDDER)
    assert (manifest.prompts.query, manifest.prompts.document) == ("", "")


async def test_searches_embed_the_query_with_the_query_prompt(prompted_repository, tmp_path):
    runtime = await build_runtime(
        load_settings({}, model_repository=prompted_repository, qdrant_path=tmp_path)
    )
    try:
        embedding = await SearchService(runtime).embed_text("giant robot")
    finally:
        await runtime.close()
    np.testing.assert_allclose(
        embedding.dense, _raw_embedding(prompted_repository, QUERY + "giant robot"), atol=1e-5
    )
    assert not np.allclose(embedding.dense, _raw_embedding(prompted_repository, "giant robot"), atol=1e-3)


async def test_ingest_embeds_names_as_queries_and_facts_and_synopses_as_documents(
    prompted_repository, bangumi_documents: list[AnimeDocument], tmp_path
):
    """Names are matched against names (a symmetric task: E5's query prompt on both sides); facts and
    synopses are documents that queries look for (the document prompt)."""
    doc = next(d for d in bangumi_documents if d.synopsis and d.genres and len(title_texts(d)) > 1)
    runtime = await build_runtime(
        load_settings({}, model_repository=prompted_repository, qdrant_path=tmp_path)
    )
    try:
        (point,) = await embed_documents(runtime, [doc], calibrations={})
    finally:
        await runtime.close()
    names = title_texts(doc)
    stored = np.asarray(point.vectors["title"])
    for row, name in enumerate(names):
        np.testing.assert_allclose(stored[row], _raw_embedding(prompted_repository, QUERY + name), atol=1e-5)
    assert len(stored) == len(names)
    np.testing.assert_allclose(
        point.vectors["facts"], _raw_embedding(prompted_repository, DOCUMENT + facts_text(doc)), atol=1e-5
    )
    (_, synopsis), *_ = synopsis_texts(doc)
    np.testing.assert_allclose(
        point.vectors["synopsis"][0], _raw_embedding(prompted_repository, DOCUMENT + synopsis), atol=1e-5
    )


async def test_the_ingest_memo_reuses_embeddings_even_when_full(prompted_repository, tmp_path):
    """A memo at its bound forgets old entries while a call stores new ones: a text found in the memo at
    the start of that call must still get its vector (the whole-catalogue ingest once died of it)."""
    from service.encoders.text import EmbeddingMemo

    runtime = await build_runtime(
        load_settings({}, model_repository=prompted_repository, qdrant_path=tmp_path)
    )
    try:
        memo = EmbeddingMemo(max_entries=4)
        old = ["first synopsis", "second synopsis", "third synopsis"]
        await runtime.text.encode(old, kind="document", memo=memo)
        mixed = ["first synopsis", *(f"new synopsis {i}" for i in range(6)), "third synopsis"]
        remembered = await runtime.text.encode(mixed, kind="document", memo=memo)
        fresh = await runtime.text.encode(mixed, kind="document")
    finally:
        await runtime.close()
    assert memo.hits == 2
    np.testing.assert_allclose(remembered.dense, fresh.dense, atol=1e-5)
