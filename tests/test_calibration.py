"""Language centring and hub correction: the pure functions behind synopsis vectors and their queries."""

from __future__ import annotations

import numpy as np
import pytest

from service.domain.calibration import (
    MIN_SAMPLES,
    Calibration,
    build_calibration,
    center_documents,
    center_query,
    hub_share,
    hubness,
    normalize,
    sample_by_language,
)
from service.domain.languages import detect_language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("進撃の巨人", "ja"),
        ("进击的巨人", "zh"),
        ("龙猫", "zh"),
        ("Attack on Titan", "en"),
        ("shingeki no kyojin", "en"),
        ("귀멸의 칼날", "ko"),
        ("🎉🎉!!", "und"),
        # A Chinese synopsis quoting a Japanese name in kana is still Chinese.
        ("少女八神ジュン驾驶宇宙飞船前去寻找失踪多时的父亲，途中遭遇宇宙风暴而漂流到了星球", "zh"),
        ("東京の下町で暮らす少年が、ある日不思議な猫と出会う", "ja"),
    ],
)
def test_language_is_told_by_script(text, language):
    assert detect_language(text) == language


def _clusters(rng: np.random.Generator, languages: dict[str, int], dim: int = 16) -> tuple[np.ndarray, list]:
    """Unit vectors around a per-language offset: what a multilingual encoder's space looks like."""
    vectors, labels = [], []
    for language, count in languages.items():
        offset = rng.normal(size=dim) * 2.0
        vectors.append(normalize(rng.normal(size=(count, dim)) + offset))
        labels += [language] * count
    return np.concatenate(vectors), labels


def test_centring_removes_each_languages_mean():
    rng = np.random.default_rng(0)
    vectors, languages = _clusters(rng, {"zh": 200, "en": 120})
    by_language = {lang: vectors[[x == lang for x in languages]] for lang in ("zh", "en")}
    calibration = build_calibration("m:1", by_language, by_language)
    centred = center_documents(vectors, languages, calibration)
    assert np.allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)
    for lang in ("zh", "en"):
        mean = centred[[x == lang for x in languages]].mean(axis=0)
        # Before: each language's vectors share a direction (mean norm near 1); after: they do not.
        assert np.linalg.norm(by_language[lang].mean(axis=0)) > 0.8
        assert np.linalg.norm(mean) < 0.2
    # Across languages, the same story (same noise, other offset) is now nearer than any other story.
    query = center_query(vectors[0], "zh", calibration)
    assert int(np.argmax(centred @ query)) == 0


def test_a_language_without_samples_is_centred_by_the_others_mean():
    calibration = Calibration(
        text_model="m:1",
        document_means={"zh": [1.0, 0.0], "en": [0.0, 1.0]},
        query_means={"zh": [1.0, 0.0], "en": [0.0, 1.0]},
        samples={"zh": 10, "en": 10},
    )
    assert np.allclose(calibration.query_center("ko"), [0.5, 0.5])
    assert np.allclose(calibration.document_center("en"), [0.0, 1.0])


def test_calibration_id_follows_the_means_in_any_key_order():
    means = {"zh": [0.1, 0.2]}
    two = Calibration(text_model="m:1", document_means={"zh": [1.0], "en": [2.0]}, query_means={}, samples={})
    swapped = Calibration(
        text_model="m:1", document_means={"en": [2.0], "zh": [1.0]}, query_means={}, samples={}
    )
    assert two.id == swapped.id
    a = Calibration(text_model="m:1", document_means=means, query_means=means, samples={"zh": 9})
    b = Calibration(text_model="m:1", document_means=means, query_means=means, samples={"zh": 9}, hub_k=5)
    c = Calibration(text_model="m:2", document_means=means, query_means=means, samples={"zh": 9})
    assert a.id == b.id != c.id
    assert len(a.id) == 12


def test_hubness_is_highest_for_the_vector_near_every_reference():
    rng = np.random.default_rng(1)
    # References share a direction, as English texts do even after centring; the hub sits in its middle.
    direction = rng.normal(size=8)
    reference = normalize(direction + rng.normal(size=(50, 8)))
    hub = normalize(direction[None, :])
    loners = normalize(rng.normal(size=(20, 8)))
    vectors = np.concatenate([hub, loners])
    owners = ["hub"] + [f"a{i}" for i in range(20)]
    scores = hubness(vectors, owners, reference, k=10)
    assert max(scores, key=scores.get) == "hub"
    assert scores["hub"] > np.mean([v for k, v in scores.items() if k != "hub"]) + 0.2


def test_hubness_does_not_count_a_vector_as_its_own_neighbour():
    rng = np.random.default_rng(2)
    reference = normalize(rng.normal(size=(30, 8)))
    with_self = hubness(reference[:1], ["a"], reference, k=3)["a"]
    without_self = hubness(reference[:1], ["a"], reference[1:], k=3)["a"]
    assert with_self == pytest.approx(without_self)


def test_hubness_takes_the_largest_over_an_animes_vectors_and_is_zero_without_references():
    rng = np.random.default_rng(3)
    reference = normalize(rng.normal(size=(40, 8)))
    vectors = normalize(rng.normal(size=(3, 8)))
    each = [hubness(vectors[i : i + 1], ["x"], reference, k=5)["x"] for i in range(3)]
    assert hubness(vectors, ["x", "x", "x"], reference, k=5)["x"] == pytest.approx(max(each))
    assert hubness(vectors, ["x", "y", "z"], reference[:5], k=5) == {"x": 0.0, "y": 0.0, "z": 0.0}


def test_samples_are_capped_spread_and_deterministic():
    texts = [(f"bangumi-{i:04d}", "zh", f"text {i}") for i in range(1000)]
    texts += [(f"bangumi-{i:04d}", "en", f"en {i}") for i in range(MIN_SAMPLES - 1)]
    picked = sample_by_language(reversed(texts), per_language=100)
    assert set(picked) == {"zh"}  # too few English texts to stand for English
    assert len(picked["zh"]) == 100
    assert picked["zh"][0] == "text 0" and picked["zh"][-1] == "text 990"  # spread over all keys
    assert picked == sample_by_language(texts, per_language=100)


def test_hub_share_names_the_anime_answering_most_queries_first():
    assert hub_share(["a", "b", "a", "c"]) == (0.5, "a")
    assert hub_share([]) == (0.0, None)


# -- in the store: what ingest writes and what a search asks --------------------------------------


@pytest.fixture(scope="module")
def calibrated_index(tiny_repository, bangumi_documents, tmp_path_factory):
    import asyncio

    from service.catalogue.ingest import ingest
    from service.runtime import build_runtime
    from service.settings import load_settings

    folder = tmp_path_factory.mktemp("calibrated") / "q"

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=tiny_repository, qdrant_path=folder))
        try:
            await ingest(runtime, bangumi_documents[:80], progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


async def test_ingest_calibrates_centres_synopses_and_records_hubness(
    tiny_repository, calibrated_index, bangumi_documents, tmp_path
):
    from service.catalogue.writer import embed_documents
    from service.domain.composition import synopsis_texts
    from service.runtime import build_runtime
    from service.settings import load_settings
    from tests.conftest import copy_index

    folder = copy_index(calibrated_index, tmp_path / "q")
    runtime = await build_runtime(load_settings({}, model_repository=tiny_repository, qdrant_path=folder))
    try:
        calibration = await runtime.store.calibration()
        assert calibration is not None and calibration.text_model == runtime.text.manifest.model_version
        assert set(calibration.document_means) == set(calibration.query_means) and calibration.samples
        docs = [d for d in bangumi_documents[:80] if synopsis_texts(d)][:5]
        stored = await runtime.store.get_many([d.anime_id for d in docs])
        raw = await embed_documents(runtime, docs, calibrations={})
        for doc, point in zip(docs, raw, strict=True):
            record = stored[doc.anime_id]
            languages = [lang for lang, _ in synopsis_texts(doc)]
            expected = center_documents(np.asarray(point.vectors["synopsis"]), languages, calibration)
            np.testing.assert_allclose(record.vectors["synopsis"], expected, atol=1e-5)
            assert record.payload["synopsis_languages"] == languages
            assert isinstance(record.payload["hubness"], float)
            assert record.payload["model_versions"]["calibration"] == calibration.id
    finally:
        await runtime.close()


async def test_a_search_centres_its_synopsis_query_and_subtracts_hubness(
    tiny_repository, calibrated_index, tmp_path
):
    from service.runtime import build_runtime
    from service.search.search_service import SearchService
    from service.settings import load_settings
    from service.store.types import ScorePenalty
    from tests.conftest import copy_index

    folder = copy_index(calibrated_index, tmp_path / "q")
    runtime = await build_runtime(load_settings({}, model_repository=tiny_repository, qdrant_path=folder))
    try:
        search = SearchService(runtime)
        calibration = await runtime.store.calibration()
        for query, language in (("校园 恋爱", "zh"), ("a summer festival", "en")):
            embedding = await search.embed_text(query)
            lists = {q.using: q for q in await search.text_queries(query, embedding, None, "hybrid")}
            title, synopsis = lists["title"], lists["synopsis"]
            np.testing.assert_allclose(title.vector, embedding.dense, atol=1e-6)  # names: as embedded
            expected = center_query(embedding.dense, language, calibration)
            np.testing.assert_allclose(synopsis.vector, expected, atol=1e-6)
            assert synopsis.penalty == ScorePenalty("hubness", calibration.hub_weight)
            # In the store, the penalty is the formula's: similarity minus hubness.
            (penalised,) = await runtime.store.search_many([synopsis])
            (plain,) = await runtime.store.search_many(
                [synopsis.__class__(synopsis.using, synopsis.vector, 100)]
            )
            hubs = {h.anime_id: h.payload.get("hubness", 0.0) for h in plain}
            by_id = {h.anime_id: h.score for h in plain}
            for hit in penalised[:10]:
                assert hit.score == pytest.approx(by_id[hit.anime_id] - hubs[hit.anime_id], abs=1e-5)
        without = SearchService(runtime, hub_correction=False)
        embedding = await without.embed_text("校园 恋爱")
        lists = {q.using: q for q in await without.text_queries("校园 恋爱", embedding, None, "dense")}
        assert lists["synopsis"].penalty is None
    finally:
        await runtime.close()
