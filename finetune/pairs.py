"""Training pairs mined from the catalogue itself: pure functions of the documents.

Three kinds, each aimed at a way users search and at where the base model is weakest:
- `plot`: an English overview (bgmd carries TMDB's for some 760 anime) against the same story's Chinese
  or Japanese summary, and Japanese against Chinese: parallel plot text teaches the model to match an
  English description to a synopsis in another script, which is where a small multilingual model
  falls short (plot-en in benchmarks/RESULTS.md). Queries are also cut to their first sentences, as
  users describe a story in a line or two, not a paragraph.
- `title`: one name of an anime against another of its names in another script or spelling, so that
  the adapter does not unlearn what title search already does well.
- `labels`: a phrase of an anime's genres and themes against its synopsis, the descriptive queries.

A pair's `also_right` lists the other anime the query fits (its franchise; every anime with the labels):
training masks them as negatives instead of teaching the model that a sequel is wrong.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from service.domain.composition import synopsis_texts, title_texts
from service.domain.documents import AnimeDocument
from service.domain.languages import CHINESE, ENGLISH, JAPANESE

KINDS = ("plot", "title", "labels")
# Shorter texts say too little to be a plot: "Sequel to Zegapain." teaches nothing about a story.
MIN_PLOT_CHARS = {ENGLISH: 80, JAPANESE: 40, CHINESE: 30}
# A user's description is a sentence or two: the cut query keeps at most this many sentences.
QUERY_SENTENCES = 2
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


@dataclass(frozen=True)
class Pair:
    """A query and a passage written about the same anime."""

    kind: str
    query: str
    passage: str
    anime_id: str
    also_right: frozenset[str] = field(default_factory=frozenset)
    # How the passage side is embedded, as the service embeds that field: names are stored with the
    # query prompt (name against name is symmetric), synopses with the document prompt.
    passage_kind: str = "document"


def first_sentences(text: str, n: int = QUERY_SENTENCES) -> str:
    """The first `n` sentences (split after . ! ? and their CJK forms)."""
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p]
    return " ".join(parts[:n]).strip()


def _plots(doc: AnimeDocument) -> dict[str, str]:
    """The longest synopsis per language, for languages with a usable plot."""
    best: dict[str, str] = {}
    for language, text in synopsis_texts(doc):
        if len(text) >= MIN_PLOT_CHARS.get(language, 1 << 30) and len(text) > len(best.get(language, "")):
            best[language] = text
    return best


def plot_pairs(doc: AnimeDocument, franchise: frozenset[str]) -> list[Pair]:
    plots = _plots(doc)
    pairs = []
    english = plots.get(ENGLISH)
    for language in (CHINESE, JAPANESE):
        other = plots.get(language)
        if english and other:
            pairs.append(Pair("plot", english, other, doc.anime_id, franchise))
            short = first_sentences(english)
            if short and short != english:
                pairs.append(Pair("plot", short, other, doc.anime_id, franchise))
    if plots.get(JAPANESE) and plots.get(CHINESE):
        pairs.append(Pair("plot", plots[JAPANESE], plots[CHINESE], doc.anime_id, franchise))
    return pairs


def title_pairs(
    doc: AnimeDocument, franchise: frozenset[str], rng: random.Random, per_anime: int = 2
) -> list[Pair]:
    """Up to `per_anime` (name, other name) pairs, preferring names whose scripts differ."""
    names = title_texts(doc)
    if len(names) < 2:
        return []
    candidates = [(a, b) for a in names for b in names if a != b]
    cross = [(a, b) for a, b in candidates if _script(a) != _script(b)]
    chosen = rng.sample(cross or candidates, min(per_anime, len(cross or candidates)))
    return [Pair("title", a, b, doc.anime_id, franchise, passage_kind="query") for a, b in chosen]


def _script(text: str) -> str:
    return "latin" if text.isascii() else "other"


def labels_phrase(labels: Sequence[str]) -> str:
    """ "An anime about Mecha and Military": the plain way a user asks for a kind of show."""
    named = list(labels)
    joined = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return f"An anime about {joined}"


def label_pairs(
    doc: AnimeDocument, holders: Mapping[frozenset[str], frozenset[str]], rng: random.Random
) -> list[Pair]:
    """One (genres/themes phrase, synopsis) pair; every anime holding the same labels is also right."""
    labels = sorted(set(doc.genres) | set(doc.themes))
    plots = _plots(doc)
    if len(labels) < 2 or not plots:
        return []
    chosen = frozenset(rng.sample(labels, 2))
    passage = plots[rng.choice(sorted(plots))]
    return [Pair("labels", labels_phrase(sorted(chosen)), passage, doc.anime_id, holders[chosen])]


def label_holders(documents: Iterable[AnimeDocument]) -> dict[frozenset[str], frozenset[str]]:
    """Every pair of labels that occurs → the anime holding both."""
    found: dict[frozenset[str], set[str]] = defaultdict(set)
    for doc in documents:
        labels = sorted(set(doc.genres) | set(doc.themes))
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                found[frozenset((a, b))].add(doc.anime_id)
    return {key: frozenset(ids) for key, ids in found.items()}


def mine_pairs(
    documents: Sequence[AnimeDocument], franchise_of: Mapping[str, frozenset[str]], seed: int
) -> dict[str, list[Pair]]:
    """Pairs of every kind from `documents` (only these: the caller passes the training split)."""
    rng = random.Random(seed)
    holders = label_holders(documents)
    mined: dict[str, list[Pair]] = {kind: [] for kind in KINDS}
    for doc in sorted(documents, key=lambda d: d.anime_id):
        franchise = franchise_of.get(doc.anime_id, frozenset()) | {doc.anime_id}
        mined["plot"] += plot_pairs(doc, franchise)
        mined["title"] += title_pairs(doc, franchise, rng)
        mined["labels"] += label_pairs(doc, holders, rng)
    return mined
