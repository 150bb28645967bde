"""The bangumi dataset adapter: npm fetching/caching, the tag vocabulary, the mapping, and the real data."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.error import URLError

import msgspec
import pytest

from service.datasets import vocabulary
from service.datasets.bangumi import (
    MAX_SYNONYMS,
    MAX_TAGS,
    BangumiDataItem,
    BgmdEntry,
    SiteMeta,
    UnmappableEntry,
    chinese_titles,
    is_date_tag,
    load_bangumi,
    map_entries,
    parse_bangumi_data,
    parse_bgmd,
    pick_item,
    to_document,
)
from service.datasets.npm import DatasetFetchError, NpmPackage, fetch_package
from service.domain.documents import AnimeDocument
from tests.conftest import DATASET_NOW, dataset_cache

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
REPO_ROOT = Path(__file__).resolve().parents[1]

SITE_META = {
    "bangumi": SiteMeta(url_template="https://bangumi.tv/subject/{{id}}", type="info"),
    "mal": SiteMeta(url_template="https://myanimelist.net/anime/{{id}}", type="info"),
    "anidb": SiteMeta(url_template="https://anidb.net/anime/{{id}}", type="info"),
    "tmdb": SiteMeta(url_template="https://www.themoviedb.org/{{id}}", type="info"),
    "bilibili": SiteMeta(url_template="https://www.bilibili.com/bangumi/media/md{{id}}/", type="onair"),
}


def make_entry(**fields: Any) -> BgmdEntry:
    record: dict[str, Any] = {
        "id": 1000,
        "name": "テスト",
        "alias": [],
        "summary": "",
        "type": "tv",
        "air_date": "2015-04-05",
        "bangumi": {"name_cn": "", "images": {"small": "", "large": ""}, "tags": []},
    }
    record.update(fields)
    return msgspec.convert(record, BgmdEntry)


def make_item(**fields: Any) -> BangumiDataItem:
    record: dict[str, Any] = {
        "title": "テスト",
        "titleTranslate": {},
        "type": "tv",
        "begin": "2015-04-04T15:00:00.000Z",
        "end": "2015-06-20T15:30:00.000Z",
        "sites": [{"site": "bangumi", "id": "1000"}],
    }
    record.update(fields)
    return msgspec.convert(record, BangumiDataItem)


def document(entry: BgmdEntry, item: BangumiDataItem | None = None, now: datetime = NOW) -> AnimeDocument:
    return to_document(entry, item, SITE_META, now=now)


# --- (1) mapping


@pytest.mark.parametrize(
    ("bgmd_type", "expected"),
    [("tv", "TV"), ("web", "ONA"), ("movie", "MOVIE"), ("ova", "OVA"), ("special", "UNKNOWN")],
)
def test_type(bgmd_type: str, expected: str) -> None:
    assert document(make_entry(type=bgmd_type)).type == expected


@pytest.mark.parametrize(
    ("bgmd_type", "begin", "end", "expected"),
    [
        ("tv", "2026-04-01T15:00:00.000Z", "", "UPCOMING"),
        ("movie", "2026-02-01T00:00:00.000Z", "2026-02-01T02:00:00.000Z", "UPCOMING"),
        ("movie", "2025-06-01T00:00:00.000Z", "", "FINISHED"),
        ("tv", "2025-04-01T15:00:00.000Z", "2025-06-20T15:30:00.000Z", "FINISHED"),
        ("tv", "2025-10-01T15:00:00.000Z", "", "ONGOING"),
        ("tv", "2025-10-01T15:00:00.000Z", "2026-03-20T15:30:00.000Z", "ONGOING"),
        ("tv", "", "", "UNKNOWN"),
    ],
)
def test_status_from_broadcast_schedule(bgmd_type: str, begin: str, end: str, expected: str) -> None:
    item = make_item(type=bgmd_type, begin=begin, end=end)
    assert document(make_entry(type=bgmd_type), item).status == expected


@pytest.mark.parametrize(
    ("bgmd_type", "air_date", "expected"),
    [("tv", "2026-03-01", "UPCOMING"), ("movie", "2001-07-20", "FINISHED"), ("tv", "2001-07-20", "UNKNOWN")],
)
def test_status_without_bangumi_data(bgmd_type: str, air_date: str, expected: str) -> None:
    # Only the premiere is known: an old TV show may or may not have ended, so it must not read ONGOING.
    assert document(make_entry(type=bgmd_type, air_date=air_date)).status == expected


def test_status_treats_naive_now_as_utc() -> None:
    item = make_item(begin="2025-10-01T15:00:00.000Z", end="")
    assert document(make_entry(), item, now=datetime(2026, 1, 1)).status == "ONGOING"


@pytest.mark.parametrize(
    ("air_date", "year", "season"),
    [
        ("1995-10-04", 1995, "FALL"),
        ("2015-03-31", 2015, "WINTER"),
        ("2015-04-01", 2015, "SPRING"),
        ("2015-09-30", 2015, "SUMMER"),
        ("2015-12-31", 2015, "FALL"),
        ("2016-01-01", 2016, "WINTER"),
    ],
)
def test_year_and_season_from_air_date(air_date: str, year: int, season: str) -> None:
    doc = document(make_entry(air_date=air_date))
    assert (doc.year, doc.season) == (year, season)


def test_year_and_season_fall_back_to_begin_in_japan_time() -> None:
    # 2015-12-31T15:30Z is 00:30 on 1 January 2016 in Tokyo: a winter 2016 premiere, not fall 2015.
    item = make_item(begin="2015-12-31T15:30:00.000Z")
    doc = document(make_entry(air_date=""), item)
    assert (doc.year, doc.season) == (2016, "WINTER")
    assert document(make_entry(air_date="0000-00-00")).year is None


def test_title_prefers_english_translation() -> None:
    entry = make_entry(name="新世紀エヴァンゲリオン", alias=["EVA", "Shin Seiki Evangerion"])
    item = make_item(titleTranslate={"en": ["Neon Genesis Evangelion"], "zh-Hans": ["新世纪福音战士"]})
    doc = document(entry, item)
    assert doc.title == "Neon Genesis Evangelion"
    assert doc.title_english == "Neon Genesis Evangelion"
    assert doc.title_japanese == "新世紀エヴァンゲリオン"


def test_title_falls_back_to_romaji_alias_skipping_abbreviations_and_cjk() -> None:
    entry = make_entry(name="白蛇伝", alias=["白蛇传", "EVA", "Hakujaden", "Panda and the Magic Serpent"])
    doc = document(entry)
    assert doc.title == "Hakujaden"
    assert doc.title_english is None
    assert doc.title_japanese == "白蛇伝"


def test_title_keeps_a_latin_official_name_over_aliases() -> None:
    doc = document(make_entry(name="Fate/strange Fake", alias=["FSF", "Fate Strange Fake"]))
    assert doc.title == "Fate/strange Fake"


def test_title_is_the_name_when_nothing_is_latin() -> None:
    doc = document(make_entry(name="白蛇伝", alias=["白蛇传", "はくじゃでん"]))
    assert doc.title == "白蛇伝"
    assert doc.title_english is None


def test_synonyms_merge_sources_dedupe_and_exclude_titles() -> None:
    entry = make_entry(
        name="新世紀エヴァンゲリオン",
        alias=["Neon Genesis Evangelion", "EVA", "eva", "新世纪福音战士"],
        original=["エヴァ"],
        bangumi={"name_cn": "新世纪福音战士", "tags": []},
    )
    item = make_item(
        title="新世紀エヴァンゲリオン",
        titleTranslate={
            "en": ["Neon Genesis Evangelion", "Evangelion"],
            "zh-Hans": ["新世纪福音战士", "福音战士"],
            "zh-Hant": ["新世紀福音戰士"],
        },
    )
    doc = document(entry, item)
    assert doc.synonyms == ["EVA", "新世纪福音战士", "福音战士", "新世紀福音戰士", "エヴァ", "Evangelion"]


def test_synonyms_are_bounded() -> None:
    doc = document(make_entry(alias=[f"Alias number {i}" for i in range(100)]))
    assert len(doc.synonyms) == MAX_SYNONYMS
    assert doc.synonyms[0] == "Alias number 1"  # "Alias number 0" became the title


def test_synopsis_prefers_english_tmdb_overview_and_keeps_the_chinese_summary() -> None:
    entry = make_entry(
        summary="中文简介。",
        tmdb={"id": 1, "type": "tv", "overview": "A boy pilots a giant robot to fight the Angels."},
    )
    doc = document(entry)
    assert doc.synopsis == "A boy pilots a giant robot to fight the Angels."
    assert doc.synopses == {"zh": "中文简介。"}  # nothing the sources have is dropped


def test_a_second_synopsis_in_the_same_language_is_not_kept() -> None:
    entry = make_entry(
        summary="第一段。", tmdb={"id": 1, "type": "tv", "overview": "《EVA》是一部由GAINAX制作的电视动画。"}
    )
    assert document(entry).synopses == {}
    japanese = make_entry(
        summary="少年は巨大なロボットに乗り、使徒と呼ばれる謎の敵と戦うことになる。",
        tmdb={"id": 1, "type": "tv", "overview": "少年驾驶巨大机器人与神秘的使徒战斗。"},
    )
    assert document(japanese).synopses == {"zh": "少年驾驶巨大机器人与神秘的使徒战斗。"}


@pytest.mark.parametrize(
    ("tags", "summary", "live_action"),
    [
        (["欧美", "电影", "科幻", "美国"], "", True),  # a Hollywood film filed under anime
        (["日剧", "特摄", "奥特曼"], "", True),  # a tokusatsu drama
        (["3D", "剧场版", "动画电影", "欧美", "电影"], "", False),  # an animated film is anime
        (["特摄", "TV", "原创"], "", False),  # an anime about tokusatsu heroes
        ([], "（堺雅人 饰）（香川照之 饰）（广末凉子 饰）", True),  # a synopsis crediting actors
        ([], "（増岡弘 饰）", False),  # one credit is not a cast list
    ],
)
def test_live_action_entries_are_typed_as_such(tags: list[str], summary: str, live_action: bool) -> None:
    entry = make_entry(summary=summary, bangumi={"name_cn": "", "images": None, "tags": tags})
    assert (document(entry).type == "LIVE_ACTION") is live_action


def test_synopsis_uses_bangumi_summary_over_chinese_overview() -> None:
    entry = make_entry(
        summary="\u3000\u3000第一段。\r\n\u3000\u3000第二段。\n\n\n\n",
        tmdb={"id": 1, "type": "tv", "overview": "《EVA》是一部由GAINAX制作的电视动画。"},
    )
    assert document(entry).synopsis == "第一段。\n第二段。"


def test_synopsis_is_none_when_empty_and_falls_back_to_any_overview() -> None:
    assert document(make_entry(summary="  \n ")).synopsis is None
    entry = make_entry(summary="", tmdb={"id": 1, "type": "tv", "overview": "一部动画。"})
    assert document(entry).synopsis == "一部动画。"


def test_tags_drop_dates_and_tv_and_are_bounded() -> None:
    raw = ["1995", "1995年", "1995年10月", "TV", "四月番", "2025春", "90年代", "86", "科幻", "科幻", "SF"]
    doc = document(make_entry(bangumi={"tags": raw}))
    assert doc.tags == ["86", "科幻", "SF"]
    many = document(make_entry(bangumi={"tags": [f"tag{i}" for i in range(60)]}))
    assert len(many.tags) == MAX_TAGS


def test_genres_themes_and_studios_from_tags() -> None:
    tags = ["1995", "GAINAX", "TV", "原创", "心理", "战斗", "机战", "科幻", "萝卜", "龙之子Production"]
    doc = document(make_entry(bangumi={"tags": tags}))
    assert doc.genres == ["Action", "Sci-Fi"]
    assert doc.themes == ["Mecha", "Psychological"]
    assert doc.studios == ["Gainax", "Tatsunoko Production"]


def test_sources_keep_info_sites_only_with_bangumi_first() -> None:
    item = make_item(
        sites=[
            {"site": "bilibili", "id": "1635"},
            {"site": "tmdb", "id": "tv/890"},
            {"site": "bangumi", "id": "265"},
            {"site": "mal", "id": "30"},
            {"site": "unknown_site", "id": "x"},
        ]
    )
    doc = document(make_entry(id=265), item)
    assert doc.sources == [
        "https://bangumi.tv/subject/265",
        "https://www.themoviedb.org/tv/890",
        "https://myanimelist.net/anime/30",
    ]


def test_sources_without_bangumi_data_use_bgmd_tmdb_record() -> None:
    doc = document(make_entry(id=7, tmdb={"id": 99, "type": "movie", "overview": ""}))
    assert doc.sources == ["https://bangumi.tv/subject/7", "https://www.themoviedb.org/movie/99"]


def test_images_upgrade_http_and_drop_non_urls() -> None:
    images = {"small": "http://lain.bgm.tv/r/200/pic/x.jpg", "large": "//lain.bgm.tv/pic/x.jpg"}
    doc = document(make_entry(bangumi={"images": images}))
    assert doc.thumbnail == "https://lain.bgm.tv/r/200/pic/x.jpg"
    assert doc.picture is None
    assert document(make_entry(bangumi=None)).picture is None


def test_overlong_text_is_truncated_not_rejected() -> None:
    doc = document(make_entry(name="長" * 700, alias=["x" * 900], bangumi={"name_cn": "y" * 10, "tags": []}))
    assert len(doc.title) == 500
    assert doc.title.endswith("…")
    assert all(len(synonym) <= 500 for synonym in doc.synonyms)


def test_unmappable_and_repeated_entries_are_skipped_and_counted() -> None:
    good, nameless = make_entry(id=1), make_entry(id=2, name=" ", bangumi={"name_cn": ""})
    with pytest.raises(UnmappableEntry):
        document(nameless)
    repeated = make_entry(id=1, name="別の作品")
    documents, skipped = map_entries([good, nameless, make_entry(id=3), repeated], {}, SITE_META, now=NOW)
    assert [doc.anime_id for doc in documents] == ["bangumi-1", "bangumi-3"]
    assert documents[0].title_japanese == "テスト"  # the first of a repeated id wins
    assert skipped == 2


def test_chinese_titles_per_anime_id_first_entry_wins() -> None:
    entries = [
        make_entry(id=1, bangumi={"name_cn": " 进击的巨人 "}),
        make_entry(id=2, bangumi={"name_cn": ""}),
        make_entry(id=3, bangumi=None),
        make_entry(id=1, bangumi={"name_cn": "别的作品"}),
    ]
    assert chinese_titles(entries) == {"bangumi-1": "进击的巨人"}


def test_map_entries_joins_by_bangumi_id_and_honours_limit() -> None:
    entries = [make_entry(id=i, name=f"作品{i}") for i in (5, 6, 7)]
    items = {"6": [make_item(titleTranslate={"en": ["Six"]})]}
    documents, _ = map_entries(entries, items, SITE_META, now=NOW, limit=2)
    assert [(doc.anime_id, doc.title) for doc in documents] == [("bangumi-5", "作品5"), ("bangumi-6", "Six")]


def test_pick_item_prefers_the_premiere_matching_air_date() -> None:
    special = make_item(title="special", begin="2024-12-31T16:00:00.000Z")
    series = make_item(title="series", begin="2026-01-03T14:30:00.000Z")
    assert pick_item([special, series], "2026-01-03").title == "series"
    assert pick_item([special, series], "2025-01-01").title == "special"
    assert pick_item([], "2025-01-01") is None


def test_parsers_skip_malformed_records() -> None:
    bgmd = b'{"bangumis": [{"id": 1, "name": "a"}, {"id": "not a number", "name": "b"}, {"name": "c"}]}'
    entries, bad = parse_bgmd(bgmd)
    assert [entry.id for entry in entries] == [1]
    assert bad == 2
    data = (
        b'{"siteMeta": {"mal": {"urlTemplate": "https://myanimelist.net/anime/{{id}}", "type": "info"}},'
        b' "items": [{"title": "x", "sites": [{"site": "bangumi", "id": "1"}]}, {"sites": 3}]}'
    )
    items, site_meta, bad_items = parse_bangumi_data(data)
    assert list(items) == ["1"]
    assert site_meta["mal"].type == "info"
    assert bad_items == 1


# --- (2) vocabulary


@pytest.mark.parametrize(
    ("spellings", "studio"),
    [
        (["Production.I.G", "ProductionI.G", "Production_I.G", "production i.g", "I.G"], "Production I.G"),
        (["A-1Pictures", "A-1_Pictures", "A-1 Pictures", "A1Pictures"], "A-1 Pictures"),
        (["东映", "东映アニメーション", "东映动画"], "Toei Animation"),
        (["studiodeen", "STUDIO_DEEN", "Studio.DEEN", "スタジオディーン"], "Studio Deen"),
        (["Diomedéa", "Diomedea"], "Diomedéa"),
        (["ＳＵＮＲＩＳＥ", "sunrise", "サンライズ"], "Sunrise"),
        (["SEVEN·ARCS", "SevenArcs", "SEVEN_ARCS"], "Seven Arcs"),
        (["Brains･Base", "BrainsBase", "Brain'sBase"], "Brain's Base"),
        (["吉卜力", "GHIBLI", "スタジオジブリ"], "Studio Ghibli"),
        (["小丑社", "StudioPierrot", "ぴえろ"], "Pierrot"),
    ],
)
def test_studio_spellings_collapse_to_one_name(spellings: list[str], studio: str) -> None:
    assert vocabulary.studios_for(spellings) == [studio]


def test_normalize_tag_ignores_case_width_separators_and_latin_accents() -> None:
    assert vocabulary.normalize_tag("Ｐroduction_I.G") == vocabulary.normalize_tag("production i-g")
    assert vocabulary.normalize_tag("Diomedéa") == "diomedea"
    # Kana keep their voicing marks: デ and テ are different sounds.
    assert vocabulary.normalize_tag("デ") != vocabulary.normalize_tag("テ")


def test_genres_and_themes_from_chinese_tags() -> None:
    assert vocabulary.genres_for(["悬疑"]) == ["Mystery", "Suspense"]
    assert vocabulary.genres_for(["恋爱", "搞笑", "校园"]) == ["Comedy", "Romance"]
    assert vocabulary.themes_for(["恋爱", "搞笑", "校园"]) == ["School"]
    assert vocabulary.themes_for(["异世界", "转生"]) == ["Isekai", "Reincarnation"]
    assert vocabulary.genres_for(["百合"]) == ["Girls Love"]
    assert vocabulary.genres_for(["轻百合"]) == []
    assert vocabulary.themes_for(["轻百合"]) == ["Romantic Subtext"]
    assert vocabulary.genres_for(["神作", "花泽香菜", "2016"]) == []


@pytest.mark.parametrize(
    ("tags", "source"),
    [
        (["漫画改"], "Manga"),
        (["漫改", "原创"], "Manga"),
        (["小说改"], "Novel"),
        (["轻改", "漫画改", "小说改"], "Light Novel"),
        (["游戏改"], "Game"),
        (["原创"], "Original"),
        (["科幻"], None),
    ],
)
def test_source_material(tags: list[str], source: str | None) -> None:
    assert vocabulary.source_material(tags) == source


def test_vocabulary_covers_the_values_users_filter_on() -> None:
    assert {
        "Action", "Adventure", "Comedy", "Drama", "Fantasy", "Horror", "Mystery", "Romance", "Sci-Fi",
        "Slice of Life", "Sports", "Supernatural", "Suspense", "Ecchi", "Boys Love", "Girls Love", "Gourmet",
    } <= set(vocabulary.GENRES)  # fmt: skip
    assert {
        "School", "Mecha", "Isekai", "Idols", "Music", "Military", "Historical", "Time Travel", "Vampire",
        "Psychological", "Martial Arts", "Space", "Super Power", "Harem", "Reincarnation", "Detective",
        "Gore", "Workplace", "Iyashikei", "Magical Girls", "Post-Apocalyptic", "Cyberpunk", "Coming of Age",
    } <= set(vocabulary.THEMES)  # fmt: skip


def test_conflicting_spellings_are_rejected_at_import() -> None:
    with pytest.raises(ValueError, match="maps to both"):
        vocabulary._index({"Studio A": ("Foo.Bar",), "Studio B": ("foo bar",)}, unique=True)


# --- (3) npm fetching, against a local registry


@dataclass
class LocalRegistry:
    url: str
    root: Path
    requests: list[str] = field(default_factory=list)

    def publish(self, name: str, version: str, members: dict[str, bytes]) -> str:
        """Serve a tarball for name@version; returns its sha512 integrity string."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for member_name, content in members.items():
                info = tarfile.TarInfo(member_name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
        data = buffer.getvalue()
        path = self.root / name / "-" / f"{name}-{version}.tgz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalRegistry]:
    root = tmp_path / "registry"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("NPM_REGISTRY", url)
    try:
        yield LocalRegistry(url=url, root=root, requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def cache_files(cache: Path) -> list[str]:
    return sorted(str(path.relative_to(cache)) for path in cache.rglob("*")) if cache.exists() else []


def test_fetch_downloads_verifies_unpacks_and_reuses_cache(
    registry: LocalRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    integrity = registry.publish("tiny-pkg", "1.0.0", {"package/data.json": b'{"ok": true}'})
    package = NpmPackage("tiny-pkg", "1.0.0", integrity)
    cache = tmp_path / "cache"

    first = fetch_package(package, cache)
    # stderr is not a terminal here: no progress bar, just one line at the start and one at the end.
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["fetching", "tiny-pkg@1.0.0"],
        ["fetched", "tiny-pkg@1.0.0:"],
    ]
    assert (first / "package" / "data.json").read_bytes() == b'{"ok": true}'
    assert registry.requests == ["/tiny-pkg/-/tiny-pkg-1.0.0.tgz"]
    # Only the finished tarball and folder remain: no .part or .unpacking temporaries.
    assert cache_files(cache) == [
        "npm",
        "npm/tiny-pkg-1.0.0",
        "npm/tiny-pkg-1.0.0.tgz",
        "npm/tiny-pkg-1.0.0/.integrity",
        "npm/tiny-pkg-1.0.0/package",
        "npm/tiny-pkg-1.0.0/package/data.json",
    ]

    assert fetch_package(package, cache) == first
    assert len(registry.requests) == 1  # served from the cache
    assert capsys.readouterr().err == ""


def test_fetch_reunpacks_from_cached_tarball_without_network(registry: LocalRegistry, tmp_path: Path) -> None:
    integrity = registry.publish("tiny-pkg", "1.0.0", {"package/a.txt": b"a"})
    package = NpmPackage("tiny-pkg", "1.0.0", integrity)
    cache = tmp_path / "cache"
    unpacked = fetch_package(package, cache)
    (unpacked / ".integrity").unlink()  # as if the unpacked folder were left by an older pin

    assert (fetch_package(package, cache) / "package" / "a.txt").read_text() == "a"
    assert len(registry.requests) == 1


def test_fetch_replaces_a_corrupt_cached_tarball(registry: LocalRegistry, tmp_path: Path) -> None:
    integrity = registry.publish("tiny-pkg", "1.0.0", {"package/a.txt": b"a"})
    cache = tmp_path / "cache"
    (cache / "npm").mkdir(parents=True)
    (cache / "npm" / "tiny-pkg-1.0.0.tgz").write_bytes(b"truncated garbage")

    unpacked = fetch_package(NpmPackage("tiny-pkg", "1.0.0", integrity), cache)
    assert (unpacked / "package" / "a.txt").read_text() == "a"
    assert len(registry.requests) == 1


def test_integrity_mismatch_raises_and_leaves_no_cache(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.publish("tiny-pkg", "1.0.0", {"package/a.txt": b"tampered"})
    pinned = "sha512-" + base64.b64encode(hashlib.sha512(b"the bytes we pinned").digest()).decode()
    cache = tmp_path / "cache"

    with pytest.raises(DatasetFetchError) as raised:
        fetch_package(NpmPackage("tiny-pkg", "1.0.0", pinned), cache)
    message = str(raised.value)
    assert "integrity mismatch" in message
    assert "tiny-pkg@1.0.0" in message
    assert f"{registry.url}/tiny-pkg/-/tiny-pkg-1.0.0.tgz" in message
    assert cache_files(cache) == ["npm"]
    assert len(registry.requests) == 1  # a wrong pin is not retried


def test_unsafe_archive_member_is_refused(registry: LocalRegistry, tmp_path: Path) -> None:
    integrity = registry.publish("evil-pkg", "1.0.0", {"package/ok.txt": b"ok", "../escape.txt": b"gotcha"})
    cache = tmp_path / "cache"

    with pytest.raises(DatasetFetchError, match="unsafe path"):
        fetch_package(NpmPackage("evil-pkg", "1.0.0", integrity), cache)
    assert not (cache / "escape.txt").exists()
    assert not (cache / "npm" / "escape.txt").exists()
    # The verified tarball may stay cached, but no unpacked folder (complete or partial) does.
    assert cache_files(cache) == ["npm", "npm/evil-pkg-1.0.0.tgz"]


def test_missing_package_names_url_and_is_not_retried(registry: LocalRegistry, tmp_path: Path) -> None:
    package = NpmPackage("absent-pkg", "9.9.9", "sha512-" + base64.b64encode(b"x" * 64).decode())
    with pytest.raises(DatasetFetchError, match=r"absent-pkg@9\.9\.9.*HTTP 404"):
        fetch_package(package, tmp_path / "cache")
    assert len(registry.requests) == 1


def test_unreachable_registry_fails_after_retries(tmp_path: Path) -> None:
    package = NpmPackage("tiny-pkg", "1.0.0", "sha512-" + base64.b64encode(b"x" * 64).decode())
    # Port 9 (discard) on localhost is closed on test machines: connection refused, immediately.
    with pytest.raises(DatasetFetchError, match=r"after 2 attempt\(s\)") as raised:
        fetch_package(package, tmp_path / "cache", registry="http://127.0.0.1:9", attempts=2, timeout=2)
    assert "http://127.0.0.1:9/tiny-pkg/-/tiny-pkg-1.0.0.tgz" in str(raised.value)
    assert isinstance(raised.value.__cause__, URLError)


def test_package_pins_are_validated() -> None:
    with pytest.raises(ValueError, match="package name"):
        NpmPackage("../etc", "1.0.0", "sha512-" + base64.b64encode(b"x" * 64).decode())
    with pytest.raises(ValueError, match="integrity"):
        NpmPackage("tiny-pkg", "1.0.0", "md5-abc")
    scoped = NpmPackage("@scope/tiny", "2.0.0", "sha512-" + base64.b64encode(b"x" * 64).decode())
    assert scoped.tarball_url("https://r.example/") == "https://r.example/@scope/tiny/-/tiny-2.0.0.tgz"


# --- (4) the real pinned packages


def test_real_dataset_documents_are_valid_and_unique(bangumi_documents: list[AnimeDocument]) -> None:
    assert len(bangumi_documents) > 8000
    ids = [doc.anime_id for doc in bangumi_documents]
    assert len(set(ids)) == len(ids)
    # Re-decoding through the declared type re-runs every bound and pattern of AnimeDocument.
    encoded = msgspec.json.encode(bangumi_documents)
    assert msgspec.json.decode(encoded, type=list[AnimeDocument]) == bangumi_documents
    assert not [tag for doc in bangumi_documents for tag in doc.tags if is_date_tag(tag)]


def test_real_dataset_evangelion(bangumi_documents: list[AnimeDocument]) -> None:
    eva = next(doc for doc in bangumi_documents if doc.anime_id == "bangumi-265")
    assert eva.title == "Neon Genesis Evangelion"
    assert eva.title_japanese == "新世紀エヴァンゲリオン"
    assert {"Sci-Fi", "Action"} <= set(eva.genres)
    assert {"Mecha", "Psychological"} <= set(eva.themes)
    assert (eva.year, eva.season, eva.type, eva.status) == (1995, "FALL", "TV", "FINISHED")
    assert "Gainax" in eva.studios
    assert "https://myanimelist.net/anime/30" in eva.sources
    assert eva.picture is not None
    assert eva.picture.startswith("https://")


def test_real_dataset_facet_coverage(bangumi_documents: list[AnimeDocument]) -> None:
    tagged = [doc for doc in bangumi_documents if doc.tags]
    well_tagged = [doc for doc in tagged if len(doc.tags) >= 5]
    assert sum(bool(doc.genres) for doc in tagged) >= 0.8 * len(tagged)
    assert sum(bool(doc.genres) for doc in well_tagged) >= 0.9 * len(well_tagged)
    assert sum(bool(doc.studios) for doc in tagged) >= 0.7 * len(tagged)
    assert {doc.type for doc in bangumi_documents} == {"TV", "MOVIE", "OVA", "ONA", "LIVE_ACTION"}
    live_action = [doc.title for doc in bangumi_documents if doc.type == "LIVE_ACTION"]
    assert "Star Wars: The Rise of Skywalker" in live_action and len(live_action) < 40
    english = [doc for doc in bangumi_documents if doc.title_english]
    assert len(english) > 2000


def test_real_dataset_is_deterministic_and_limited(bangumi_documents: list[AnimeDocument]) -> None:
    again = load_bangumi(dataset_cache(), limit=25, now=DATASET_NOW)
    assert again == bangumi_documents[:25]
