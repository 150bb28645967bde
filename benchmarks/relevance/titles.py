"""Title normalisation shared by the judgement builders: matching keys, season suffixes, franchise stems.

A franchise is approximated by a shared title stem: a title minus its subtitle (after ":" / " - " / "～"),
bracketed notes and season/format suffixes ("Season 2", "2nd Season", "II", "The Movie", "第2期", "劇場版").
It is a heuristic from the dataset's own titles, not a curated franchise list: entries that a human would
group but whose titles differ ("Zeta Gundam" vs "Mobile Suit Gundam") are missed, which only lowers the
judged gain of a system that finds them, for every system alike.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_NON_WORD = re.compile(r"[\W_]+")
_BRACKETS = re.compile(r"\s*(?:\([^)]*\)|\[[^\]]*\]|（[^）]*）|「[^」]*」|【[^】]*】)\s*")
_SUBTITLE = re.compile(r"\s*[:：~～〜]\s*|\s+[-–—―]\s+")
_ORDINAL = r"(?:\d+(?:st|nd|rd|th)|first|second|third|fourth|fifth|sixth|final|new|next)"
_PART = r"(?:season|series|stage|cour|part|chapter|arc|volume|vol)"
# Applied repeatedly to the end of a normalised (lower-case, punctuation-free) Latin title.
_LATIN_SUFFIX = re.compile(
    rf"""\s+(?:
        (?:the\s+)?{_ORDINAL}\s+{_PART}
      | {_PART}\s*(?:\d+|[ivx]+)
      | s\d+
      | [ivx]{{1,4}} | \d{{1,2}}
      | (?:the\s+)?(?:animation|movie|motion\s+picture)
      | tv(?:\s+series)? | tv\s+anime | ova | oad | ona | specials? | recap | movie
    )$""",
    re.VERBOSE,
)
_KANJI_NUMBER = "0-9一二三四五六七八九十"
_CJK_SUFFIX = re.compile(
    rf"""\s*(?:
        第[{_KANJI_NUMBER}]+(?:期|季|シリーズ|クール|章|部|幕|シーズン|話)
      | [{_KANJI_NUMBER}]+(?:期|季)
      | (?:\d+(?:st|nd|rd|th)?\s*)?シーズン\s*\d* | セカンドシーズン | 新シリーズ
      | 劇場版 | 特別編 | 続編 | 完結編 | 完結篇 | 前編 | 後編 | 総集編 | 外伝
      | ova | oad | the\s+animation | animation | movie | season\s*\d* | tv
      | \d{{1,2}} | [ⅡⅢⅣⅤⅥ] | (?<![a-z])[ivx]{{1,4}}
    )$""",
    re.VERBOSE | re.IGNORECASE,
)
_CJK_PREFIX = re.compile(r"^(?:劇場版|映画|剧场版|电影版?)\s*")
_LATIN_PREFIX = re.compile(r"^(?:gekijouban|gekijoban|eiga)\s+")
ARTICLES = frozenset({"the", "a", "an"})


def normalize(text: str) -> str:
    """Width- and case-folded, punctuation replaced by spaces, whitespace collapsed: a matching key."""
    return " ".join(_NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def is_cjk(text: str) -> bool:
    """Contains Chinese/Japanese characters (ideographs or kana)."""
    return any(
        "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in text
    )


def split_season_suffix(normalized: str) -> tuple[str, str]:
    """(title without trailing season/format suffixes, the suffixes) for a normalised Latin title.

    Never strips a title to nothing: "86" and "Season" stay what they are.
    """
    head = normalized
    while (match := _LATIN_SUFFIX.search(head)) and match.start() > 0:
        head = head[: match.start()]
    return head, normalized[len(head) :].strip()


def stem(title: str) -> str | None:
    """The franchise stem of one title as a compact key (no spaces), or None when too short to be telling.

    Latin stems need 4+ characters ("K" or "Ao" would join unrelated shows); CJK stems 2+ (a two-kanji title
    such as 銀魂 is already specific).
    """
    text = _BRACKETS.sub(" ", unicodedata.normalize("NFKC", title)).strip()
    head = _SUBTITLE.split(text, maxsplit=1)[0]
    key = _stem_key(head)
    # "Re:Zero ...": a main title too short to stand alone keeps its subtitle.
    return key if key is not None else _stem_key(text)


def _stem_key(head: str) -> str | None:
    if is_cjk(head):
        head = _CJK_PREFIX.sub("", head.strip())
        while (match := _CJK_SUFFIX.search(head)) and match.start() > 0:
            head = head[: match.start()]
        key = normalize(head).replace(" ", "")
        return key if len(key) >= 2 else None
    words, _ = split_season_suffix(_LATIN_PREFIX.sub("", normalize(head)))
    tokens = words.split()
    if tokens and tokens[0] in ARTICLES and len(tokens) > 1:
        tokens = tokens[1:]
    key = "".join(tokens)
    return key if len(key) >= 4 else None


def stems(titles: Iterable[str | None]) -> set[str]:
    """Every franchise stem of an anime's titles (None and too-short ones left out)."""
    return {s for t in titles if t and (s := stem(t))}
