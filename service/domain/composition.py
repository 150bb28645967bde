"""What text of an anime gets embedded: pure functions of the document.

Each field is embedded on its own, so that no field's language decides the match:
- `title_texts`: every distinct name (title, English and Japanese titles, synonyms), one vector each;
  a user typing a name in any script meets that name, not a paragraph around it;
- `facts_text`: type, season, genres, themes, studios and tags on one line, for descriptive queries;
- `synopsis_texts`: every synopsis the document has, with its language, one vector each;
- `lexical_text`: all of it as one text for BM25, which has no window to overflow.

`compose_text` (titles and facts first, synopsis last, so truncation never drops the title) is the
one-paragraph form: the learned sparse head of BGE-m3 and the BM25 baseline of the benchmarks use it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from service.domain.documents import AnimeDocument
from service.domain.languages import detect_language

# Bounds the vectors per anime (ingest time grows with them): a few titles carry a title's worth of
# aliases and regional releases, but the first ones are the names people use.
MAX_TITLES = 16

_MAX_SYNONYMS = 12
_MAX_TAGS = 20

# How a user would name each type (also used by benchmarks/relevance to phrase queries).
TYPE_WORDS = {
    "TV": "TV series",
    "MOVIE": "movie",
    "OVA": "OVA",
    "ONA": "web series",
    "SPECIAL": "special",
    "MUSIC": "music video",
}


def _unique(values: Iterable[str | None], exclude: set[str]) -> list[str]:
    seen = {v.casefold() for v in exclude}
    out: list[str] = []
    for value in values:
        if not value:
            continue
        cleaned = " ".join(value.split())
        key = cleaned.casefold()
        if cleaned and key not in seen:
            seen.add(key)
            out.append(cleaned)
    return out


def compose_text(doc: AnimeDocument) -> str:
    titles = _unique([doc.title, doc.title_english, doc.title_japanese], set())
    lines = [" / ".join(titles) + "."]
    synonyms = _unique(doc.synonyms, set(titles))[:_MAX_SYNONYMS]
    if synonyms:
        lines.append("Also known as: " + ", ".join(synonyms) + ".")
    lines += _fact_lines(doc, tags=True)
    if doc.synopsis and doc.synopsis.strip():
        lines.append(" ".join(doc.synopsis.split()))
    return "\n".join(lines)


def _name_key(text: str) -> str:
    """Width, case and spacing folded: "ＥＶＡ" and "eva" are one name to embed, not two."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def title_texts(doc: AnimeDocument) -> list[str]:
    """Every distinct name of the anime, the display title first, at most MAX_TITLES."""
    names: list[str] = []
    seen: set[str] = set()
    for name in (doc.title, doc.title_english, doc.title_japanese, *doc.synonyms):
        if not name or not name.strip():
            continue
        key = _name_key(name)
        if key and key not in seen:
            seen.add(key)
            names.append(" ".join(name.split()))
        if len(names) == MAX_TITLES:
            break
    return names


def facts_text(doc: AnimeDocument) -> str | None:
    """Type, season, genres, themes and studios as one line; None when the document has none.

    Tags stay out: twenty user tags would triple the line (and its embedding time) for what the
    lexical channel matches word for word anyway.
    """
    return " ".join(_fact_lines(doc, tags=False)) or None


def _fact_lines(doc: AnimeDocument, *, tags: bool) -> list[str]:
    """ "TV series from spring 2013.", "Genres: ...", "Themes: ...", "Studios: ..." (+ "Tags: ...")."""
    lines = []
    kind = TYPE_WORDS.get(doc.type)
    when = " ".join(str(x) for x in (doc.season.lower() if doc.season else None, doc.year) if x)
    if kind or when:
        label = kind or "anime"
        lines.append(label[0].upper() + label[1:] + (f" from {when}" if when else "") + ".")
    fields = [("Genres", doc.genres, None), ("Themes", doc.themes, None), ("Studios", doc.studios, None)]
    if tags:
        fields.append(("Tags", doc.tags, _MAX_TAGS))
    for label, values, limit in fields:
        items = _unique(values, set())[:limit]
        if items:
            lines.append(f"{label}: " + ", ".join(items) + ".")
    return lines


def synopsis_texts(doc: AnimeDocument) -> list[tuple[str, str]]:
    """(language, text) of every synopsis: `synopsis` (its language read from its script), then
    `synopses` as tagged. Repeats are dropped; whitespace is collapsed."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    tagged = [(None, doc.synopsis), *((lang, text) for lang, text in doc.synopses.items())]
    for language, text in tagged:
        cleaned = " ".join((text or "").split())
        if cleaned and cleaned not in seen:
            seen.add(cleaned)
            found.append(((language or detect_language(cleaned)).split("-")[0].lower(), cleaned))
    return found


def lexical_text(doc: AnimeDocument) -> str:
    """Everything a word can match on: every name, the facts and every synopsis."""
    parts = [*title_texts(doc), *doc.synonyms[MAX_TITLES:], facts_text(doc) or "", " ".join(doc.tags)]
    parts += [text for _, text in synopsis_texts(doc)]
    return "\n".join(part for part in parts if part)


def normalize_query(text: str) -> str:
    """Collapse whitespace and drop control characters; what is left is what gets embedded."""
    printable = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    return " ".join(printable.split())
