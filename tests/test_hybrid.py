"""Hybrid text search: names and synopses (dense) + the BM25 lexical channel (every model) + BGE-m3's
learned sparse weights (where the model has them), fused by DBSF inside Qdrant; dense is a choice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.catalogue.ingest import ingest
from service.domain.composition import facts_text, lexical_text, synopsis_texts, title_texts
from service.encoders.lexical import LexicalEncoder
from service.runtime import build_runtime
from service.search.text_mode import choose_text_mode
from service.settings import load_settings


@pytest.fixture(scope="module")
def hybrid_index(tiny_repository: Path, bangumi_documents, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hybrid-index")

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=tiny_repository, qdrant_path=folder))
        try:
            await ingest(runtime, bangumi_documents[:60], progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


@pytest.fixture(scope="module")
async def client(tiny_repository: Path, hybrid_index: Path) -> AsyncIterator[AsyncTestClient]:
    settings = load_settings({}, model_repository=tiny_repository, qdrant_path=hybrid_index)
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_lexical_tokenizer_segments_japanese_and_chinese_into_words():
    lexical = LexicalEncoder()
    assert len(lexical.query("進撃の巨人")) == 3  # 進撃 / の / 巨人: a whitespace tokenizer sees one token
    assert len(lexical.query("进击的巨人")) == 3
    assert set(lexical.query("巨人").indices) <= set(lexical.query("進撃の巨人").indices)
    # Queries weigh each term once; documents by saturated term frequency (BM25's TF half).
    assert set(lexical.query("titan titan titans").values) == {1.0}
    once, twice = lexical.documents(["titan", "titan titan"])
    assert twice.values[0] > once.values[0]
    assert len(lexical.query("🎉🎉 !!!")) == 0


def test_hybrid_or_dense_is_decided_by_one_rule():
    """The request's mode, else the deployment's; hybrid only where the collection has the lexical
    channel. Multimodal requests have no mode of their own and pass None."""
    assert choose_text_mode(None, "hybrid", lexical=True) == "hybrid"
    assert choose_text_mode("dense", "hybrid", lexical=True) == "dense"
    assert choose_text_mode("hybrid", "dense", lexical=True) == "hybrid"
    assert choose_text_mode(None, "dense", lexical=True) == "dense"
    assert choose_text_mode("hybrid", "hybrid", lexical=False) == "dense"
    assert choose_text_mode(None, "hybrid", lexical=False) == "dense"


async def test_stored_vectors_hold_each_field(client, bangumi_documents):
    """`title`: one vector per name; `facts`: the facts line; `synopsis`: one per synopsis; `text_lexical`:
    BM25 of all the text; `text_sparse`: learned weights of tokens that occur in the document's own texts."""
    runtime = client.app.state.runtime
    docs = bangumi_documents[:8]
    records = await runtime.store.get_many([d.anime_id for d in docs])
    for doc in docs:
        vectors = records[doc.anime_id].vectors
        assert len(vectors["title"]) == len(title_texts(doc))
        assert ("facts" in vectors) == (facts_text(doc) is not None)
        assert len(vectors.get("facts", [])) in (0, runtime.text.dim)  # one vector, not several
        assert len(vectors.get("synopsis", [])) == len(synopsis_texts(doc))
        assert records[doc.anime_id].payload["synopsis_languages"] == [
            lang for lang, _ in synopsis_texts(doc)
        ]
        expected = runtime.lexical.documents([lexical_text(doc)])[0]
        assert vectors["text_lexical"].indices == expected.indices
        assert vectors["text_lexical"].values == pytest.approx(expected.values)
        texts = [*title_texts(doc), facts_text(doc) or "", *(t for _, t in synopsis_texts(doc))]
        batch = runtime.text.tokenizer.encode([runtime.text.prompt("query") + t for t in texts])
        tokens = (
            set(batch.input_ids[batch.attention_mask > 0].tolist()) - runtime.text.tokenizer.special_token_ids
        )
        sparse = vectors["text_sparse"]
        assert sparse.indices and set(sparse.indices) <= tokens
        assert all(v > 0 for v in sparse.values)


async def test_hybrid_is_the_default_and_dense_is_a_choice(client):
    hybrid = (await client.post("/api/v1/search", json={"query": "giant robot"})).json()
    info = hybrid["query_info"]
    assert info["mode"] == "hybrid" and info["ranking"] == "confident"
    assert info["vectors"] == ["title", "facts", "synopsis", "text_lexical", "text_sparse"]
    dense = (await client.post("/api/v1/search", json={"query": "giant robot", "text_mode": "dense"})).json()
    assert dense["query_info"]["mode"] == "dense"
    assert dense["query_info"]["vectors"] == ["title", "facts", "synopsis"]


async def test_a_word_of_a_native_script_title_finds_it_through_the_lexical_channel(
    client, bangumi_documents
):
    """The tiny test model is random: only BM25 can know that 巨人 is a word of 進撃の巨人."""
    runtime = client.app.state.runtime
    lexical = runtime.lexical
    docs = bangumi_documents[:60]
    # A word of a Japanese title that no other of these 60 anime has anywhere in its text.
    owners: dict[int, set[str]] = {}
    for doc in docs:
        for index in lexical.documents([lexical_text(doc)])[0].indices:
            owners.setdefault(index, set()).add(doc.anime_id)
    for doc in docs:
        text = doc.title_japanese or ""
        words = {text[i:j] for i in range(len(text)) for j in range(i + 2, len(text) + 1)}
        unique = [
            w
            for w in words
            if w != text
            and not any(ch.isspace() for ch in w)
            and len(lexical.query(w)) == 1
            and owners.get(lexical.query(w).indices[0]) == {doc.anime_id}
        ]
        if unique:
            word = sorted(unique, key=lambda w: (len(w), w))[-1]
            break
    else:
        pytest.fail("no Japanese title word unique to one anime among the first 60")
    hybrid = (await client.post("/api/v1/search", json={"query": word, "limit": 3})).json()
    assert doc.anime_id in [r["anime_id"] for r in hybrid["results"]], word


async def test_the_lexical_channel_serves_a_model_without_a_sparse_head(
    minilm_repository, tmp_path, bangumi_documents
):
    settings = load_settings({}, model_repository=minilm_repository, qdrant_path=tmp_path / "q")
    async with AsyncTestClient(create_app(settings)) as client:
        runtime = client.app.state.runtime
        await ingest(runtime, bangumi_documents[:20], progress=False)
        body = (await client.post("/api/v1/search", json={"query": "robot", "text_mode": "hybrid"})).json()
        assert body["query_info"]["mode"] == "hybrid"
        assert body["query_info"]["vectors"] == ["title", "facts", "synopsis", "text_lexical"]
