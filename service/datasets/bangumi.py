"""The bangumi.tv catalogue as `AnimeDocument`s, from two pinned npm packages.

- `bgmd` (full.json): one entry per bangumi subject with names, aliases, summary, air date, user tags, cover
  images and the matching TMDB record. This is the spine: one document per entry, in its order.
- `bangumi-data` (data.json): broadcast begin/end, English/Chinese title translations and the ids of the
  subject on other sites (MAL, AniDB, AniList, TMDB). Joined through its `sites` entry for "bangumi".
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec

from service.datasets import vocabulary
from service.datasets.npm import NpmPackage, fetch_package
from service.domain.documents import AnimeDocument, AnimeStatus, AnimeType, Season
from service.domain.languages import detect_language
from service.platform.logs import get_logger

BGMD = NpmPackage(
    name="bgmd",
    version="0.0.64",
    integrity="sha512-LsPwyh8Mckt+vfvy7R/QaJcsdQjVODI9+dEQz7Gd9g9kf4rTwAy6jbuurMZHOEjbcZNW5maspLNkkE5kAnw2wQ==",
)
BANGUMI_DATA = NpmPackage(
    name="bangumi-data",
    version="0.3.208",
    integrity="sha512-vllAI09uEZOaWNgJ2flRrnwmZ5//4k3nfYmfXFjsjgWHkmAKbFbn6M2YNplzBLKpmjPz9vvEyja3P3VpQSSTiw==",
)
BGMD_FILE = "package/data/full.json"
BANGUMI_DATA_FILE = "package/dist/data.json"

MAX_SYNONYMS = 30
MAX_TAGS = 30
_MAX_TEXT = 500  # AnimeDocument's ShortText bound
_MAX_SYNOPSIS = 20_000
_MAX_SOURCES = 50
# bangumi dates are Japanese broadcast dates; bangumi-data stores the same instants in UTC, so a midnight
# premiere reads as the previous day (and sometimes the previous season) unless shifted back to JST.
JST = timezone(timedelta(hours=9))

_log = get_logger(__name__)


# --- the packages' JSON, decoded leniently: unknown fields are ignored, and a malformed entry fails alone.


class BgmdImages(msgspec.Struct):
    small: str = ""
    large: str = ""


class BgmdSubject(msgspec.Struct):
    name_cn: str = ""
    images: BgmdImages | None = None
    tags: list[str] = []


class BgmdTmdb(msgspec.Struct):
    id: int | None = None
    type: str = ""
    overview: str = ""


class BgmdEntry(msgspec.Struct):
    id: int
    name: str
    alias: list[str] = []
    original: list[str] | str | None = None
    summary: str = ""
    type: str = ""
    air_date: str = ""
    bangumi: BgmdSubject | None = None
    tmdb: BgmdTmdb | None = None


class BangumiDataSite(msgspec.Struct):
    site: str
    id: str | int = ""


class BangumiDataItem(msgspec.Struct):
    title: str = ""
    title_translate: dict[str, list[str]] = msgspec.field(default_factory=dict, name="titleTranslate")
    type: str = ""
    begin: str = ""
    end: str = ""
    sites: list[BangumiDataSite] = []


class SiteMeta(msgspec.Struct):
    url_template: str = msgspec.field(default="", name="urlTemplate")
    type: str = ""


class _BgmdFile(msgspec.Struct):
    bangumis: list[msgspec.Raw]


class _BangumiDataFile(msgspec.Struct):
    items: list[msgspec.Raw]
    site_meta: dict[str, SiteMeta] = msgspec.field(default_factory=dict, name="siteMeta")


class UnmappableEntry(ValueError):
    """A bgmd entry that cannot become a valid AnimeDocument; `load_bangumi` skips and counts these."""


# --- loading


def load_bangumi(
    cache_dir: Path, *, limit: int | None = None, now: datetime | None = None
) -> list[AnimeDocument]:
    """Every mappable bgmd entry as a validated AnimeDocument, in bgmd order (at most `limit` of them).

    Fetches the pinned packages into `cache_dir` on first use. `now` decides ONGOING/UPCOMING/FINISHED.
    """
    bgmd_root = fetch_package(BGMD, cache_dir)
    bangumi_data_root = fetch_package(BANGUMI_DATA, cache_dir)
    entries, bad_entries = parse_bgmd((bgmd_root / BGMD_FILE).read_bytes())
    items, site_meta, bad_items = parse_bangumi_data((bangumi_data_root / BANGUMI_DATA_FILE).read_bytes())
    documents, unmappable = map_entries(
        entries, items, site_meta, now=now or datetime.now(timezone.utc), limit=limit
    )
    _log.info(
        "bangumi dataset loaded",
        documents=len(documents),
        skipped=bad_entries + unmappable,
        bangumi_data_items_skipped=bad_items,
    )
    return documents


def load_chinese_titles(cache_dir: Path) -> dict[str, str]:
    """bangumi's Chinese name (`name_cn`) per anime id, from the cached bgmd package (fetched if absent).

    The documents carry it only as one synonym among many, unmarked; the relevance harness needs to know
    which one it is to build its Chinese-title queries.
    """
    entries, _ = parse_bgmd((fetch_package(BGMD, cache_dir) / BGMD_FILE).read_bytes())
    return chinese_titles(entries)


def chinese_titles(entries: Iterable[BgmdEntry]) -> dict[str, str]:
    """`name_cn` per anime id where an entry has one; a repeated subject keeps its first entry's, as
    `map_entries` keeps its first document."""
    names: dict[str, str] = {}
    for entry in entries:
        name = short_text(entry.bangumi.name_cn if entry.bangumi else None)
        if name is not None:
            names.setdefault(anime_id(entry.id), name)
    return names


def anime_id(subject_id: int) -> str:
    """The document id of a bangumi subject."""
    return f"bangumi-{subject_id}"


def parse_bgmd(data: bytes) -> tuple[list[BgmdEntry], int]:
    """The entries of bgmd's full.json, and how many were malformed."""
    decoder = msgspec.json.Decoder(BgmdEntry)
    return _decode_each(msgspec.json.decode(data, type=_BgmdFile).bangumis, decoder)


def parse_bangumi_data(data: bytes) -> tuple[dict[str, list[BangumiDataItem]], dict[str, SiteMeta], int]:
    """bangumi-data items keyed by bangumi subject id (a few ids have two items), the site table, and how
    many items were malformed."""
    parsed = msgspec.json.decode(data, type=_BangumiDataFile)
    items, bad = _decode_each(parsed.items, msgspec.json.Decoder(BangumiDataItem))
    by_subject: dict[str, list[BangumiDataItem]] = {}
    for item in items:
        for site in item.sites:
            if site.site == "bangumi" and str(site.id):
                by_subject.setdefault(str(site.id), []).append(item)
    return by_subject, parsed.site_meta, bad


def _decode_each(raws: Sequence[msgspec.Raw], decoder: msgspec.json.Decoder[Any]) -> tuple[list[Any], int]:
    decoded: list[Any] = []
    bad = 0
    for raw in raws:
        try:
            decoded.append(decoder.decode(raw))
        except msgspec.ValidationError:
            bad += 1
    return decoded, bad


def map_entries(
    entries: Iterable[BgmdEntry],
    items: Mapping[str, Sequence[BangumiDataItem]],
    site_meta: Mapping[str, SiteMeta],
    *,
    now: datetime,
    limit: int | None = None,
) -> tuple[list[AnimeDocument], int]:
    """Documents for `entries` in order, and how many entries were skipped as unmappable or repeated."""
    documents: list[AnimeDocument] = []
    seen: set[int] = set()
    skipped = 0
    for entry in entries:
        if limit is not None and len(documents) >= limit:
            break
        if entry.id in seen:  # anime_id is the store's key: a repeat would overwrite, not add
            skipped += 1
            continue
        seen.add(entry.id)
        item = pick_item(items.get(str(entry.id), ()), entry.air_date)
        try:
            documents.append(to_document(entry, item, site_meta, now=now))
        except UnmappableEntry:
            skipped += 1
    return documents, skipped


def pick_item(candidates: Sequence[BangumiDataItem], air_date: str) -> BangumiDataItem | None:
    """The bangumi-data item for a subject; where two share one subject id (a special and its series,
    or a show listed twice), the one that premiered on bgmd's air date."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    aired = parse_date(air_date)
    if aired is None:
        return candidates[0]

    def distance(item: BangumiDataItem) -> int:
        begin = parse_instant(item.begin)
        return abs((begin.astimezone(JST).date() - aired).days) if begin else 1 << 30

    return min(candidates, key=distance)  # min keeps the first of equals: bangumi-data order


# --- one entry


def to_document(
    entry: BgmdEntry,
    item: BangumiDataItem | None,
    site_meta: Mapping[str, SiteMeta],
    *,
    now: datetime,
) -> AnimeDocument:
    """Map one bgmd entry (plus its bangumi-data item, if any) to a validated AnimeDocument."""
    subject = entry.bangumi or BgmdSubject()
    translations = item.title_translate if item else {}
    english = first_text(translations.get("en", ()))
    name = short_text(entry.name) or short_text(subject.name_cn)
    if name is None:
        raise UnmappableEntry(f"bangumi subject {entry.id} has no name")
    title = choose_title(name, entry.alias, english)
    kind = "LIVE_ACTION" if is_live_action(subject.tags, entry.summary) else anime_type(entry.type)
    begin = parse_instant(item.begin) if item else None
    year, season = year_and_season(entry.air_date, begin)
    fields = {
        "anime_id": anime_id(entry.id),
        "title": title,
        "title_english": english,
        "title_japanese": name,
        "synonyms": synonyms(
            title,
            {english, name},
            [
                *entry.alias,
                subject.name_cn,
                *translations.get("zh-Hans", ()),
                *translations.get("zh-Hant", ()),
                *_as_list(entry.original),
                *translations.get("en", ())[1:],
                item.title if item else "",
            ],
        ),
        "synopsis": synopsis(entry.summary, entry.tmdb.overview if entry.tmdb else ""),
        "synopses": other_synopses(entry.summary, entry.tmdb.overview if entry.tmdb else ""),
        "genres": vocabulary.genres_for(subject.tags),
        "themes": vocabulary.themes_for(subject.tags),
        "tags": clean_tags(subject.tags),
        "type": kind,
        "status": infer_status(kind, item, entry.air_date, now),
        "year": year,
        "season": season,
        "studios": vocabulary.studios_for(subject.tags),
        "picture": image_url(subject.images.large if subject.images else ""),
        "thumbnail": image_url(subject.images.small if subject.images else ""),
        "sources": source_urls(entry, item, site_meta),
    }
    try:
        return msgspec.convert(fields, AnimeDocument)
    except msgspec.ValidationError as exc:
        raise UnmappableEntry(f"bangumi subject {entry.id}: {exc}") from exc


def _as_list(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def short_text(text: str | None) -> str | None:
    """`text` stripped and cut to AnimeDocument's 500-character bound; None when nothing is left."""
    text = (text or "").strip()
    if not text:
        return None
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1].rstrip() + "…"


def first_text(texts: Iterable[str]) -> str | None:
    return next((cleaned for text in texts if (cleaned := short_text(text))), None)


# --- titles


def is_latin_title(text: str) -> bool:
    """Written in Latin script (English or romaji, accents allowed), not CJK, with at least two letters."""
    letters = [ch for ch in text if ch.isalpha()]
    return len(letters) >= 2 and all(
        ch.isascii() or unicodedata.name(ch, "").startswith("LATIN") for ch in letters
    )


def _is_abbreviation(text: str) -> bool:
    # "EVA", "SAO", "K-ON!": fine as synonyms, poor as the one display title.
    return len(text) <= 5 and " " not in text and text.upper() == text


def choose_title(name: str, aliases: Iterable[str], english: str | None) -> str:
    """English translation, else `name` if it is already Latin script (the official spelling), else the
    first English/romaji alias, else `name`."""
    if english:
        return english
    if is_latin_title(name):
        return name
    for alias in aliases:
        candidate = short_text(alias)
        if candidate and is_latin_title(candidate) and not _is_abbreviation(candidate):
            return candidate
    return name


def _title_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def synonyms(title: str, other_fields: Iterable[str | None], candidates: Iterable[str]) -> list[str]:
    """`candidates` cleaned and deduplicated (ignoring case, width and spacing), without the titles that
    already have their own field, at most MAX_SYNONYMS."""
    seen = {_title_key(title)} | {_title_key(text) for text in other_fields if text}
    result: list[str] = []
    for candidate in candidates:
        text = short_text(candidate)
        if text is None or _title_key(text) in seen:
            continue
        seen.add(_title_key(text))
        result.append(text)
        if len(result) == MAX_SYNONYMS:
            break
    return result


# --- synopsis


def is_english(text: str) -> bool:
    """Mostly ASCII letters: TMDB falls back to English where it has no Chinese overview, and a Chinese
    overview that quotes an English title must not pass."""
    letters = [ch for ch in text if ch.isalpha()]
    return len(letters) >= 20 and sum(ch.isascii() for ch in letters) >= 0.8 * len(letters)


def clean_paragraphs(text: str) -> str | None:
    # bangumi summaries indent paragraphs with ideographic spaces and mix \r\n; neither helps search.
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not cleaned:
        return None
    return cleaned if len(cleaned) <= _MAX_SYNOPSIS else cleaned[: _MAX_SYNOPSIS - 1].rstrip() + "…"


def synopsis(summary: str, tmdb_overview: str) -> str | None:
    """English TMDB overview, else bangumi's (Chinese) summary, else a non-English TMDB overview."""
    overview = clean_paragraphs(tmdb_overview)
    if overview and is_english(overview):
        return overview
    return clean_paragraphs(summary) or overview


def other_synopses(summary: str, tmdb_overview: str) -> dict[str, str]:
    """The synopses `synopsis` did not pick, by language: bgmd has an English TMDB overview beside the
    Chinese bangumi summary for several hundred anime, and a search in either language needs both."""
    chosen = synopsis(summary, tmdb_overview)
    taken = detect_language(chosen) if chosen else None
    others: dict[str, str] = {}
    for text in (clean_paragraphs(summary), clean_paragraphs(tmdb_overview)):
        if text and text != chosen and (language := detect_language(text)) != taken:
            others.setdefault(language, text)
    return others


# --- tags

_DATE_TAG = re.compile(
    r"""^(?:
        \d{4}年?(?:\d{1,2}月(?:\d{1,2}日)?)?                    # 1995, 1995年, 1995年10月
      | \d{2}年\d{1,2}月                                      # 09年4月 ("86" alone is a title)
      | \d{4}[./]\d{1,2}                                     # 2012.7
      | (?:\d{4}年?-?)?(?:\d{1,2}|[一二三四五六七八九十]{1,2})月新?番?  # 10月, 四月番, 2010-10月番
      | \d{4}年?[春夏秋冬]季?新?番?                            # 2025春, 2012春番
      | [春夏秋冬]季?新?番                                    # 夏季番
      | \d{4}年\d{1,2}月[春夏秋冬]アニメ                       # 2013年10月秋アニメ
      | \d{2}(?:\d{2})?(?:年代|s)                             # 90年代, 1980s
      | tv                                                  # the format; `type` carries it
    )$""",
    re.VERBOSE,
)


@functools.lru_cache(maxsize=1 << 16)
def is_date_tag(tag: str) -> bool:
    return bool(_DATE_TAG.match("".join(unicodedata.normalize("NFKC", tag).casefold().split())))


def clean_tags(tags: Iterable[str]) -> list[str]:
    """The user tags minus dates and "TV" (year/season/type have fields), deduplicated, at most MAX_TAGS."""
    result: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        text = short_text(tag)
        if text is None or is_date_tag(text) or (key := vocabulary.normalize_tag(text)) in seen:
            continue
        seen.add(key)
        result.append(text)
        if len(result) == MAX_TAGS:
            break
    return result


# --- type, dates, status

_TYPES: dict[str, AnimeType] = {"tv": "TV", "movie": "MOVIE", "ova": "OVA", "web": "ONA"}


# User tags that say "a film / a drama" and tags that say "animated". bangumi files some live-action
# works under anime (the Star Wars films, Ultraman, a few Japanese films), tagged as films or dramas.
_LIVE_ACTION_TAGS = frozenset({"电影", "日影", "日剧", "真人", "真人电影", "真人剧"})
_ANIMATION_TAGS = frozenset(
    {
        "动画",
        "动画电影",
        "剧场版",
        "动画片",
        "动画短片",
        "短片",
        "3D",
        "2D",
        "CG",
        "OVA",
        "WEB",
        "国产动画",
        "国创",
        "原创动画",
        "TV动画",
        "漫改",
        "漫画改",
        "轻小说改",
        "游戏改",
        "小说改",
        "MV",
    }
)
# "（堺雅人 饰）": a Chinese synopsis credits actors this way; voice casts are credited otherwise.
_CAST_CREDIT = re.compile(r"[（(][^（）()]{1,40}饰[)）]")


def is_live_action(tags: Iterable[str], summary: str) -> bool:
    """Tagged as a film or drama and never as animation, or a synopsis crediting three actors."""
    tagged = set(tags)
    if tagged & _LIVE_ACTION_TAGS and not tagged & _ANIMATION_TAGS:
        return True
    return len(_CAST_CREDIT.findall(summary)) >= 3


def anime_type(kind: str) -> AnimeType:
    return _TYPES.get(kind.strip().lower(), "UNKNOWN")


def parse_date(text: str) -> date | None:
    """A `YYYY-MM-DD` air date; None for blanks and placeholders such as `0000-00-00`."""
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        return None


def parse_instant(text: str) -> datetime | None:
    """An ISO-8601 instant from bangumi-data (`1995-10-04T16:00:00.000Z`), always timezone-aware."""
    text = text.strip()
    if not text:
        return None
    try:
        # Python 3.10's fromisoformat rejects the "Z" suffix.
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def season_of(month: int) -> Season:
    return ("WINTER", "SPRING", "SUMMER", "FALL")[(month - 1) // 3]


def year_and_season(air_date: str, begin: datetime | None) -> tuple[int | None, Season | None]:
    """From bgmd's air date, else from bangumi-data's begin read in Japan time."""
    aired = parse_date(air_date) or (begin.astimezone(JST).date() if begin else None)
    if aired is None or not 1900 <= aired.year <= 2100:
        return None, None
    return aired.year, season_of(aired.month)


def infer_status(kind: AnimeType, item: BangumiDataItem | None, air_date: str, now: datetime) -> AnimeStatus:
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    if item is None:
        # Without a broadcast schedule only the premiere is known: enough for UPCOMING, and for a movie.
        aired = parse_date(air_date)
        if aired is None:
            return "UNKNOWN"
        if datetime(aired.year, aired.month, aired.day, tzinfo=JST) > now:
            return "UPCOMING"
        return "FINISHED" if kind == "MOVIE" else "UNKNOWN"
    return schedule_status(kind, parse_instant(item.begin), parse_instant(item.end), now)


def schedule_status(
    kind: AnimeType, begin: datetime | None, end: datetime | None, now: datetime
) -> AnimeStatus:
    if begin is None:
        return "UNKNOWN"
    if begin > now:
        return "UPCOMING"
    if kind == "MOVIE":
        return "FINISHED"
    if end is None:
        return "ONGOING"  # bangumi-data leaves `end` empty while a show is still airing
    return "FINISHED" if end <= now else "ONGOING"


# --- links


def image_url(url: str) -> str | None:
    url = url.strip()
    if url.startswith("http://"):
        url = "https://" + url[len("http://") :]
    return url if url.startswith("https://") and len(url) <= 2048 else None


def bangumi_url(subject_id: int) -> str:
    return f"https://bangumi.tv/subject/{subject_id}"


def source_urls(
    entry: BgmdEntry, item: BangumiDataItem | None, site_meta: Mapping[str, SiteMeta]
) -> list[str]:
    """bangumi.tv first, then the database sites ("info" in bangumi-data's site table: MAL, AniDB, ...)."""
    urls = [bangumi_url(entry.id)]
    for site in item.sites if item else ():
        meta = site_meta.get(site.site)
        site_id = str(site.id).strip()
        if meta and meta.type == "info" and "{{id}}" in meta.url_template and site_id:
            urls.append(meta.url_template.replace("{{id}}", site_id))
    if entry.tmdb and entry.tmdb.id and entry.tmdb.type in ("tv", "movie"):
        # bgmd knows the TMDB record even for subjects bangumi-data does not list.
        urls.append(f"https://www.themoviedb.org/{entry.tmdb.type}/{entry.tmdb.id}")
    unique = [url for url in dict.fromkeys(urls) if re.match(r"^https?://", url) and len(url) <= 2048]
    return unique[:_MAX_SOURCES]
