"""Pure parts: length buckets, lexical weights, filters, text composition, settings, documents."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from qdrant_client import models

from service.domain.composition import compose_text, normalize_query
from service.domain.documents import AnimeDocument, decode_documents, point_id, to_payload
from service.encoders.sparse import lexical_weights
from service.encoders.tokenization import bucket_length
from service.schemas import SearchFilters, SearchRequest
from service.settings import SettingsError, load_settings
from service.store.filters import build_filter


@given(st.integers(min_value=1, max_value=8192), st.sampled_from([128, 256, 512, 8192]))
def test_bucket_covers_the_length_and_never_exceeds_the_window(length, window):
    length = min(length, window)
    bucket = bucket_length(length, window)
    assert length <= bucket <= window
    # A power of two up to 64 (what queries take), then a multiple of 32, unless capped by the window.
    assert bucket == window or (bucket & (bucket - 1) == 0 if bucket <= 64 else bucket % 32 == 0)
    assert bucket - length < max(16, 32 if length > 64 else length)  # padding wastes little


def test_query_lengths_share_a_few_buckets_so_concurrent_queries_can_share_a_batch():
    assert {bucket_length(n, 512) for n in range(1, 65)} == {16, 32, 64}
    assert bucket_length(140, 512) == 160 and bucket_length(140, 128) == 140  # documents: little padding


def test_lexical_weights_max_pool_per_token_and_drop_special_masked_and_zero():
    ids = np.array([[0, 7, 9, 7, 2, 1], [0, 5, 2, 1, 1, 1]])
    weights = np.array([[0.9, 0.2, 0.0, 0.6, 0.8, 0.5], [0.9, 0.3, 0.8, 0.0, 0.0, 0.0]], dtype=np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])
    first, second = lexical_weights(ids, weights, mask, special_token_ids={0, 1, 2, 3})
    assert first.indices == [7]  # 9 had weight 0, 0/2 are special, the padded 1 is masked
    assert first.values == pytest.approx([0.6])
    assert second.indices == [5] and second.values == pytest.approx([0.3])


def test_filters_translate_to_fixed_keys_with_user_values_only_as_values():
    filters = SearchFilters(
        genres=["Mecha", "Sci-Fi"],
        themes=["Space"],
        year_min=1990,
        year_max=1999,
        type="TV",
        status=["FINISHED"],
    )
    built = build_filter(filters)
    assert built is not None
    keys = [c.key for c in built.must]  # type: ignore[union-attr]
    assert keys == ["genres", "themes", "year", "type", "status"]
    assert built.must[0].match == models.MatchAny(any=["Mecha", "Sci-Fi"])  # type: ignore[index,union-attr]
    assert built.must[1].match == models.MatchValue(value="Space")  # type: ignore[index,union-attr]
    assert built.must[2].range == models.Range(gte=1990, lte=1999)  # type: ignore[index,union-attr]
    assert built.must_not is None  # a type filter says what it wants: nothing else is hidden
    # Without one, entries that are not anime are left out (a search for anime should not answer them).
    for unfiltered in (build_filter(None), build_filter(SearchFilters())):
        assert unfiltered is not None and unfiltered.must is None
        assert unfiltered.must_not == [
            models.FieldCondition(key="type", match=models.MatchValue(value="LIVE_ACTION"))
        ]
    assert build_filter(None, hidden_types=()) is None


def test_year_range_must_be_ordered():
    with pytest.raises(msgspec.ValidationError, match="year_min"):
        msgspec.json.decode(
            b'{"query": "x", "filters": {"year_min": 2000, "year_max": 1990}}', type=SearchRequest
        )


def _doc(**overrides) -> AnimeDocument:
    base = dict(
        anime_id="a1",
        title="Neon Genesis Evangelion",
        title_japanese="新世紀エヴァンゲリオン",
        synonyms=["EVA", "Evangelion", "eva"],
        genres=["Sci-Fi"],
        themes=["Mecha"],
        type="TV",
        year=1995,
        season="FALL",
        synopsis="Teenagers   pilot giant\nbio-machines.",
    )
    base.update(overrides)
    return AnimeDocument(**base)  # type: ignore[arg-type]


def test_composed_text_puts_titles_first_facts_next_and_synopsis_last():
    text = compose_text(_doc())
    lines = text.splitlines()
    assert lines[0] == "Neon Genesis Evangelion / 新世紀エヴァンゲリオン."
    assert lines[1] == "Also known as: EVA, Evangelion."  # case-insensitive duplicates dropped
    assert lines[2] == "TV series from fall 1995."
    assert "Genres: Sci-Fi." in lines and "Themes: Mecha." in lines
    assert lines[-1] == "Teenagers pilot giant bio-machines."


def test_a_long_synopsis_cannot_push_the_title_out_of_the_token_window():
    text = compose_text(_doc(synopsis="word " * 5000))
    assert text.startswith("Neon Genesis Evangelion")
    assert text.index("Genres:") < text.index("word")


@given(st.text(max_size=200))
def test_normalized_queries_have_no_control_characters_or_edge_whitespace(text):
    out = normalize_query(text)
    assert out == out.strip()
    assert all(ch.isprintable() for ch in out)
    assert "  " not in out


def test_point_ids_are_deterministic_uuids_per_anime_id():
    assert point_id("bangumi-265") == point_id("bangumi-265")
    assert point_id("bangumi-265") != point_id("bangumi-266")
    assert len(point_id("x")) == 36


def test_payload_keeps_every_field_for_filters():
    payload = to_payload(_doc())
    assert payload["anime_id"] == "a1" and payload["status"] == "UNKNOWN" and payload["studios"] == []


def test_documents_accept_a_json_list_or_a_wrapped_list_and_reject_unknown_fields():
    one = b'[{"anime_id": "a", "title": "A"}]'
    assert decode_documents(one)[0].title == "A"
    assert decode_documents(b'{"documents": [{"anime_id": "b", "title": "B"}]}')[0].anime_id == "b"
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode_documents(b'[{"anime_id": "a", "title": "A", "rating": 5}]')
    with pytest.raises(msgspec.ValidationError):
        decode_documents(b'[{"anime_id": "bad id with spaces", "title": "A"}]')


def test_settings_read_typed_values_from_the_environment():
    settings = load_settings(
        {"SERVICE_PORT": "9001", "ENCODER_ENGINE": "triton", "MODEL_REPOSITORY": "/models", "QDRANT_URL": ""}
    )
    assert settings.service_port == 9001
    assert settings.encoder_engine == "triton"
    assert settings.model_repository == Path("/models")
    assert settings.qdrant_url is None and settings.store_engine == "qdrant-edge"
    assert load_settings({"QDRANT_EMBEDDED_ENGINE": "local"}).store_engine == "qdrant-local"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SERVICE_PORT", "eighty"), ("ENCODER_ENGINE", "tensorflow"), ("TRITON_TIMEOUT_S", "-1")],
)
def test_bad_settings_name_the_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})
