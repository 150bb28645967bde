"""What text of an anime gets embedded: a pure function of the document.

Titles and categorical facts go first and the synopsis last, because encoders truncate at their
max length: a long synopsis must never push the title out of the window.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.documents import AnimeDocument

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
    kind = TYPE_WORDS.get(doc.type)
    when = " ".join(str(x) for x in (doc.season.lower() if doc.season else None, doc.year) if x)
    if kind or when:
        label = kind or "anime"
        lines.append(label[0].upper() + label[1:] + (f" from {when}" if when else "") + ".")
    for label, values, limit in (
        ("Genres", doc.genres, None),
        ("Themes", doc.themes, None),
        ("Studios", doc.studios, None),
        ("Tags", doc.tags, _MAX_TAGS),
    ):
        items = _unique(values, set())[:limit]
        if items:
            lines.append(f"{label}: " + ", ".join(items) + ".")
    if doc.synopsis and doc.synopsis.strip():
        lines.append(" ".join(doc.synopsis.split()))
    return "\n".join(lines)


def normalize_query(text: str) -> str:
    """Collapse whitespace and drop control characters; what is left is what gets embedded."""
    printable = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    return " ".join(printable.split())
