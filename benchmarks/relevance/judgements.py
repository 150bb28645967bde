"""Query sets with graded relevance judgements, derived by rule from the catalogue's own fields.

Nobody hand-labels the judgements: every grade follows from the documents (titles, synonyms, genres,
themes, tags), and every query but the hand-written plot descriptions (`plot_queries`) does too, so the
sets rebuild identically from the same catalogue and seed, and grow with it.
Each query draws from its own random stream (seeded by the set, the seed and the anime id), so the query
for an anime does not change when the sample size does; candidates are shuffled by the seed from id order
(never store order), and the first N that yield a query are kept, so a smaller sample is a prefix of a
larger one.

The sets, what they measure, and how they are derived:

1. `title-paraphrase` — a user types a title from memory. Source: anime with an English title of two or
   more words of 2+ letters ("K-On!" has nothing to paraphrase but its punctuation). The query is that
   title lower-cased, punctuation and leading articles dropped, and (drawn per query)
   the season suffix dropped or re-worded ("Season 2" -> "2nd season", "s2"), a subtitle moved to the
   front, an inner particle ("of", "no", ...) dropped, or else the words rotated ("evangelion neon genesis").
   Grade 3: the anime, and any entry the query names just as exactly (same normalised title; every season
   of the franchise when the suffix was dropped). Grade 1: the rest of its franchise (shared title stem,
   see `titles`). Binary metrics (recall, MRR) count grade 3: did the named anime come back?
   Leakage: the title is in the indexed text; this measures robustness to surface variation, not recall of
   facts the index never saw.

2. `multilingual-title` — a user types the native (Japanese) or Chinese title. Source: the anime's
   `title_japanese` or one of the first 12 synonyms (the ones the indexed text includes) written in CJK
   script, drawn per query. Grade 3: every entry carrying that exact name (normalised); grade 1: the rest
   of the franchise. Binary metrics count grade 3. An English-only text model is expected to do poorly:
   that is what the set is for (BGE-m3 is multilingual).

3. `genre-description` — a user describes what they want to watch. Source: anime with 2+ genres/themes
   (the MAL-style English facets; Hentai never used). 3 (else 2) of its labels are rendered through
   hand-written user phrasings (Mecha -> "giant robots", Iyashikei -> "a calm, healing mood") into one of a
   few sentence templates, so the query does not repeat the facet words the indexed text carries. Grade 2:
   anime with every queried label; grade 1: with more than half of them (2 of 3). Label combinations with
   more than 200 judged anime are skipped (too broad to judge by facets). Binary metrics count grade 2.

4. `similar-to` — "more like this" (the similarity endpoints). Source: anime with at least one franchise
   sibling. Grade 2: its franchise (shared title stem); grade 1: other anime whose genre/theme/tag sets
   overlap strongly (Jaccard >= 0.4 over normalised tags, at most 200 judged). The anime itself is never
   judged (the endpoints exclude it). Binary metrics count grade 1. Leakage: titles and tags are part of the
   stored text vector, so content similarity is expected to find siblings; the set checks that it does.

5. `multimodal` — a user has a screenshot and a vague memory. Only on a workspace whose anime have
   pictures (`benchmarks.latency setup`: synthetic covers). The query is a vague description (type, decade
   and 1-2 of its labels, e.g. "a TV series from the 2010s with giant robots") plus a degraded
   near-duplicate of the anime's cover. Grade 3: the anime; grade 1: anime matching the whole description
   (at most 200, else the query is skipped). Binary metrics count grade 3.

6. `plot-en` — a user remembers the story, not the title ("a notebook that kills anyone whose name is
   written in it"). Source: `plot_queries.PLOT_QUERIES`, English descriptions of well-known works WRITTEN
   BY HAND from general knowledge of them, not from the catalogue's text (no synopsis was copied), one per
   work; a work missing from the catalogue is left out. Grade 3: the entries listed with the description
   (its main entry and, by hand, sequels and films the title stems miss) and every entry of their
   franchises: a user asking for the Evangelion plot is served by any Evangelion entry. Nothing is graded
   lower, and binary metrics count grade 3. A description that contains any name of a judged entry, or a
   distinctive word of one ("frieren"), is dropped (`plot_leaks`; the tests keep the shipped ones clean).
   Leakage: none by title; the English synopsis where the catalogue has one (TMDB overviews) tells the same
   story in other words, and matching that is exactly what the set measures.

7. `title-ja` — a user types the Japanese title. Source: `title_japanese` (bgmd's original name) where it
   contains kana, so it is unmistakably Japanese (kanji alone could be Chinese). Typed exactly as stored.

8. `title-zh` — a user types the Chinese title. Source: bangumi's `name_cn` (simplified Chinese), which the
   documents keep only as one unmarked synonym, so the harness passes it in
   (`Catalogue.of(..., chinese_titles=service.datasets.bangumi.load_chinese_titles(cache))`); without it
   the set is not built and is reported n/a. Used where it contains Chinese characters and differs from
   the Japanese name after normalisation. Leakage: `name_cn` is among the synonyms, and (for all but a
   handful of anime) among the first 12 that the indexed text keeps: like `title-ja`, exact lookup.

9. `title-en` — a user types the English title exactly, not paraphrased (`title-paraphrase` stays its own
   row). Source: `title_english` where it is in Latin script (one is Greek: "ΠΛΑΝΗΤΕΣ").

10. `title-misspelled` — a user types a romanised title, or misspells one. Drawn per query: (a) a romaji
   name as typed: a Latin-script alias other than the English title that looks like romaji (a particle
   such as "no" among 3+ words, or mostly Japanese syllables; a heuristic), lower-cased, without
   punctuation or accents ("shingeki no kyojin"); or (b) the English title or a romaji name typed that way
   with one or two realistic typos (a letter dropped or doubled, neighbours swapped, a wrong vowel; never
   a word's first letter, two only in two different words of 4+ letters), re-drawn if a typo spells
   another anime's name. The query's `labels` say which: ("romaji",) or ("typo",).

Sets 7-10 share the grading and the sampling rule. Grade 3: every entry carrying the exact name typed
(normalised; for a typo, the name it misspells); grade 1: the rest of the anime's franchise. Binary metrics
count grade 3. Names too short or too generic to look up are skipped: a single character ("海"), or a name
carried by more than 5 entries once the anime's own franchise is set aside (every season of Attack on
Titan carries 進撃の巨人: that makes it famous, not generic). Leakage: the typed name is in the indexed
text (title fields, or synonyms for romaji) apart from the typos; these sets measure exact and near-exact
title lookup per script, which users do most.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from benchmarks.relevance.plot_queries import ORDINARY_TITLE_WORDS, PLOT_QUERIES, PlotQuery
from benchmarks.relevance.titles import ARTICLES, is_cjk, normalize, split_season_suffix, stems
from service.datasets.bangumi import is_latin_title
from service.datasets.vocabulary import normalize_tag
from service.domain.composition import TYPE_WORDS
from service.domain.documents import AnimeDocument

SetKind = Literal["text", "similar", "multimodal"]
MAX_JUDGED = 200
TAG_OVERLAP = 0.4
# The synonyms the indexed text includes (service/domain/composition.py keeps the first 12).
COMPOSED_SYNONYMS = 12
# Facets never used to build a query (still counted when grading overlap).
_UNSPOKEN = frozenset({"Hentai"})

# How a user might say each facet. Deliberately not the facet word itself where a natural alternative
# exists: the indexed text lists the facet words ("Genres: Sci-Fi"), a user rarely types them that way.
PHRASES: Mapping[str, str] = {
    # genres
    "Action": "lots of fights and action",
    "Adventure": "a big adventure",
    "Avant Garde": "an experimental art style",
    "Boys Love": "a romance between two boys",
    "Comedy": "plenty of laughs",
    "Drama": "an emotional story",
    "Ecchi": "fan service",
    "Fantasy": "magic and a fantasy world",
    "Girls Love": "a romance between girls",
    "Gourmet": "food and cooking",
    "Horror": "something scary",
    "Mystery": "a mystery to solve",
    "Romance": "a love story",
    "Sci-Fi": "science fiction",
    "Slice of Life": "everyday life",
    "Sports": "sports competitions",
    "Supernatural": "ghosts and supernatural things",
    "Suspense": "tension and suspense",
    # themes
    "Anthropomorphic": "animals that act like people",
    "Coming of Age": "growing up",
    "Combat Sports": "boxing matches",
    "Crossdressing": "crossdressing",
    "Cyberpunk": "a high-tech dystopian city",
    "Detective": "a detective solving cases",
    "Educational": "learning something useful",
    "Gender Bender": "someone whose gender changes",
    "Gore": "blood and gore",
    "Harem": "one guy surrounded by many girls",
    "High Stakes Game": "deadly games",
    "Historical": "a historical setting",
    "Idols": "idol singers",
    "Isekai": "being transported to another world",
    "Iyashikei": "a calm, healing mood",
    "Kids": "a show for small children",
    "Love Polygon": "a love triangle",
    "Magical Girls": "girls who transform and fight with magic",
    "Martial Arts": "martial arts",
    "Mecha": "giant robots",
    "Military": "soldiers and war",
    "Music": "music and bands",
    "Mythology": "gods and myths",
    "Organized Crime": "gangsters and the mafia",
    "Otaku Culture": "otaku and fandom",
    "Parody": "parodies of other shows",
    "Post-Apocalyptic": "the world after the apocalypse",
    "Psychological": "mind games",
    "Racing": "car racing",
    "Reincarnation": "being reborn in a new life",
    "Reverse Harem": "one girl surrounded by handsome guys",
    "Romantic Subtext": "hints of romance",
    "Samurai": "samurai and swords",
    "School": "school life",
    "Space": "outer space",
    "Steampunk": "steam-powered machines",
    "Strategy Game": "strategy and board games",
    "Super Power": "superpowers",
    "Survival": "fighting to survive",
    "Team Sports": "a sports team",
    "Time Travel": "time travel",
    "Vampire": "vampires",
    "Video Game": "video games",
    "Villainess": "a villainess heroine",
    "Workplace": "life at work",
}
_TEMPLATES = (
    "an anime with {items}",
    "looking for a show about {items}",
    "recommend me something with {items}",
    "a series featuring {items}",
)
# Inner words a user drops without noticing ("Sword Art Online" survives; "Spirited Away" has none).
_PARTICLES = frozenset({"of", "the", "no", "to", "wa", "ga", "wo", "and", "in", "a", "an", "ni", "de"})
_SEASON_NUMBER = re.compile(
    r"(?:season|series|part|stage|cour)\s*(\d+)|(\d+)(?:st|nd|rd|th)\s+(?:season|series)|s(\d+)"
)
_ORDINALS = {1: "1st", 2: "2nd", 3: "3rd"}
_SUBTITLE = re.compile(r"\s*[:：~～]\s*|\s+[-–—]\s+")


@dataclass(frozen=True)
class Query:
    """One query: its text and/or picture seed, the anime it was built from, and graded judgements."""

    qid: str
    anime_id: str
    judgements: dict[str, int]
    text: str | None = None
    # The workspace position whose synthetic cover the picture query degrades (multimodal only).
    picture: int | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuerySet:
    name: str
    kind: SetKind
    description: str
    # Binary metrics (recall, MRR) count judgements of at least this grade as relevant.
    min_grade: int
    queries: list[Query] = field(default_factory=list)


# -- catalogue-wide indexes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    """The documents plus the lookups every builder needs, computed once."""

    documents: dict[str, AnimeDocument]
    franchise_of: dict[str, set[str]]
    by_name: dict[str, set[str]]
    labels: dict[str, frozenset[str]]
    tag_sets: dict[str, frozenset[str]]
    # bangumi's Chinese name per anime id (`service.datasets.bangumi.load_chinese_titles`): the documents
    # keep it only as an unmarked synonym. None: not known, and the `title-zh` set is not built.
    chinese_titles: Mapping[str, str] | None = None

    @classmethod
    def of(
        cls, documents: Iterable[AnimeDocument], *, chinese_titles: Mapping[str, str] | None = None
    ) -> Catalogue:
        docs = {d.anime_id: d for d in sorted(documents, key=lambda d: d.anime_id)}
        by_stem: dict[str, set[str]] = defaultdict(set)
        own_stems: dict[str, set[str]] = {}
        by_name: dict[str, set[str]] = defaultdict(set)
        for anime_id, doc in docs.items():
            own_stems[anime_id] = stems([doc.title, doc.title_english, doc.title_japanese])
            for key in own_stems[anime_id]:
                by_stem[key].add(anime_id)
            for name in _names(doc):
                by_name[name].add(anime_id)
        franchise_of = {
            anime_id: set().union(*(by_stem[k] for k in keys)) - {anime_id} if keys else set()
            for anime_id, keys in own_stems.items()
        }
        labels = {a: frozenset(d.genres) | frozenset(d.themes) for a, d in docs.items()}
        tag_sets = {
            a: frozenset(normalize_tag(t) for t in (*d.genres, *d.themes, *d.tags)) - {""}
            for a, d in docs.items()
        }
        return cls(docs, franchise_of, dict(by_name), labels, tag_sets, chinese_titles)


def _names(doc: AnimeDocument) -> set[str]:
    """Every normalised name an anime goes by: titles and synonyms."""
    names = {doc.title, doc.title_english, doc.title_japanese, *doc.synonyms}
    return {key for n in names if n and (key := normalize(n))}


def _rng(seed: int, set_name: str, anime_id: str) -> random.Random:
    return random.Random(f"{seed}:{set_name}:{anime_id}")


def _collect(
    candidates: Iterable[str], n: int | None, seed: int, set_name: str, build: Callable[[str], Query | None]
) -> list[Query]:
    """Queries for the first `n` candidates (shuffled from id order by the seed) that yield one.

    Shuffling the whole list and walking it keeps a set at exactly `n` queries even where some anime yield
    none, and makes a smaller sample a prefix of a larger one.
    """
    order = sorted(candidates)
    random.Random(f"{seed}:{set_name}").shuffle(order)
    queries: list[Query] = []
    for anime_id in order:
        if n is not None and len(queries) >= n:
            break
        query = build(anime_id)
        if query is not None:
            queries.append(query)
    return queries


def _grade(top: Iterable[str], rest: Iterable[str]) -> dict[str, int]:
    """Grade 3 for `top`, 1 for the rest of `rest` (an id in both is 3)."""
    return dict.fromkeys(rest, 1) | dict.fromkeys(top, 3)


# -- 1. title paraphrases ---------------------------------------------------------------------------


def _strip_article(words: list[str]) -> list[str]:
    return words[1:] if len(words) > 1 and words[0] in ARTICLES else words


def _reword_suffix(suffix: str, rng: random.Random) -> str:
    """The same season said differently ("season 2" -> "2nd season" or "s2"); other suffixes unchanged."""
    match = _SEASON_NUMBER.fullmatch(suffix)
    if not match:
        return suffix
    n = int(next(g for g in match.groups() if g))
    ordinal = _ORDINALS.get(n, f"{n}th") if not 11 <= n % 100 <= 13 else f"{n}th"
    options = [f"season {n}", f"{ordinal} season", f"s{n}"]
    return rng.choice([o for o in options if o != suffix] or options)


def paraphrase(title: str, rng: random.Random) -> tuple[str, bool]:
    """(a paraphrase of an English title, whether the season suffix was dropped).

    Always lower-cased with punctuation and a leading article removed; then one or more of: season suffix
    dropped or re-worded, subtitle moved to the front, an inner particle dropped; words rotated when none
    of those applied.
    """
    main, *rest = _SUBTITLE.split(title, maxsplit=1)
    subtitle = rest[0] if rest else ""
    if subtitle and split_season_suffix("x " + normalize(subtitle))[0] == "x":
        main, subtitle = f"{main} {subtitle}", ""  # "Title: Season 2" -- the "subtitle" is the suffix
    words = normalize(main).split()
    head, suffix = split_season_suffix(" ".join(words))
    words = _strip_article(head.split())
    dropped = False
    if suffix:
        if rng.random() < 0.5:
            dropped = True
        else:
            words = [*words, *_reword_suffix(suffix, rng).split()]
    changed = bool(suffix)
    subtitle_words = normalize(subtitle).split()
    if subtitle_words:
        if rng.random() < 0.5:
            words = [*subtitle_words, *words]
            changed = True
        else:
            words = [*words, *subtitle_words]
    inner = [i for i, w in enumerate(words) if 0 < i < len(words) - 1 and w in _PARTICLES]
    if inner and len(words) > 3 and rng.random() < 0.5:
        del words[rng.choice(inner)]
        changed = True
    if not changed and len(words) > 1:
        cut = rng.randrange(1, len(words))
        words = words[cut:] + words[:cut]
    return " ".join(words), dropped


def _title_key(title: str, *, drop_suffix: bool) -> str:
    head, _ = split_season_suffix(normalize(title))
    words = _strip_article((head if drop_suffix else normalize(title)).split())
    return " ".join(words)


def title_paraphrases(catalogue: Catalogue, n: int | None, seed: int) -> QuerySet:
    name = "title-paraphrase"
    docs = catalogue.documents
    english = {a: d.title_english for a, d in docs.items() if d.title_english}
    # Two real words at least: "K-On!" ("k on") has nothing to paraphrase but its punctuation.
    sources = [a for a, t in english.items() if sum(len(w) > 1 for w in normalize(t).split()) >= 2]
    # Entries a query names exactly: same normalised title, or same title minus suffix when it was dropped.
    named: dict[tuple[bool, str], set[str]] = defaultdict(set)
    for other, doc in docs.items():
        for t in {doc.title, doc.title_english} - {None}:
            for drop in (False, True):
                named[drop, _title_key(t, drop_suffix=drop)].add(other)  # type: ignore[arg-type]

    def build(anime_id: str) -> Query:
        title = english[anime_id]
        text, dropped = paraphrase(title, _rng(seed, name, anime_id))
        same = named[dropped, _title_key(title, drop_suffix=dropped)] | {anime_id}
        return Query(f"{name}:{anime_id}", anime_id, _grade(same, catalogue.franchise_of[anime_id]), text)

    queries = _collect(sources, n, seed, name, build)
    return QuerySet(
        name, "text", "English title in other words -> the anime (3), its franchise (1)", 3, queries
    )


# -- 2. multilingual titles -------------------------------------------------------------------------


def _native_names(doc: AnimeDocument) -> list[str]:
    names = [doc.title_japanese, *doc.synonyms[:COMPOSED_SYNONYMS]]
    return list(dict.fromkeys(n for n in names if n and is_cjk(n)))


def multilingual_titles(catalogue: Catalogue, n: int | None, seed: int) -> QuerySet:
    name = "multilingual-title"
    sources = [a for a, d in catalogue.documents.items() if _native_names(d)]

    def build(anime_id: str) -> Query:
        text = _rng(seed, name, anime_id).choice(_native_names(catalogue.documents[anime_id]))
        same = catalogue.by_name.get(normalize(text), set()) | {anime_id}
        return Query(f"{name}:{anime_id}", anime_id, _grade(same, catalogue.franchise_of[anime_id]), text)

    queries = _collect(sources, n, seed, name, build)
    return QuerySet(
        name, "text", "Japanese/Chinese title -> every anime of that name (3), its franchise (1)", 3, queries
    )


# -- 3. genre / theme descriptions --------------------------------------------------------------------


def label_grades(holders: Mapping[str, set[str]], wanted: Sequence[str]) -> dict[str, int]:
    """2 for anime with every label in `wanted`, 1 for more than half of them (`holders`: label -> ids)."""
    need = len(wanted) // 2 + 1  # "more than half"
    subsets = itertools.combinations(wanted, need)
    most = set().union(*(set.intersection(*(holders[x] for x in c)) for c in subsets))
    every = set.intersection(*(holders[x] for x in wanted))
    return dict.fromkeys(most, 1) | dict.fromkeys(every, 2)


def describe(labels: Sequence[str], rng: random.Random) -> str:
    phrases = [PHRASES.get(label, label.lower()) for label in labels]
    items = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return rng.choice(_TEMPLATES).format(items=items)


def _label_combinations(labels: Sequence[str], rng: random.Random) -> list[tuple[str, ...]]:
    spoken = sorted(set(labels) - _UNSPOKEN)
    combos = [c for size in (3, 2) for c in itertools.combinations(spoken, size)]
    rng.shuffle(combos)
    return sorted(combos, key=len, reverse=True)  # stable: 3-label combinations first, in random order


def genre_descriptions(catalogue: Catalogue, n: int | None, seed: int) -> QuerySet:
    name = "genre-description"
    sources = [a for a, labels in catalogue.labels.items() if len(labels - _UNSPOKEN) >= 2]
    holders: dict[str, set[str]] = defaultdict(set)
    for anime_id, labels in catalogue.labels.items():
        for label in labels:
            holders[label].add(anime_id)

    def build(anime_id: str) -> Query | None:
        rng = _rng(seed, name, anime_id)
        for combo in _label_combinations(sorted(catalogue.labels[anime_id]), rng):
            grades = label_grades(holders, combo)
            if len(grades) <= MAX_JUDGED:
                order = list(combo)
                rng.shuffle(order)
                return Query(f"{name}:{anime_id}", anime_id, grades, describe(order, rng), labels=combo)
        return None  # every combination of its labels is too broad to judge

    queries = _collect(sources, n, seed, name, build)
    return QuerySet(
        name, "text", "genres/themes in a user's words -> anime with all (2) / most (1) of them", 2, queries
    )


# -- 4. similar to X ------------------------------------------------------------------------------------


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def similar_to(catalogue: Catalogue, n: int | None, seed: int) -> QuerySet:
    name = "similar-to"
    sources = [a for a, siblings in catalogue.franchise_of.items() if siblings]
    holders: dict[str, set[str]] = defaultdict(set)
    for anime_id, tags in catalogue.tag_sets.items():
        for tag in tags:
            holders[tag].add(anime_id)

    def build(anime_id: str) -> Query | None:
        tags = catalogue.tag_sets[anime_id]
        siblings = catalogue.franchise_of[anime_id]
        sharing = set().union(*(holders[t] for t in tags)) - siblings - {anime_id}
        close = [o for o in sharing if jaccard(tags, catalogue.tag_sets[o]) >= TAG_OVERLAP]
        if len(siblings) + len(close) > MAX_JUDGED:
            return None
        return Query(f"{name}:{anime_id}", anime_id, dict.fromkeys(close, 1) | dict.fromkeys(siblings, 2))

    queries = _collect(sources, n, seed, name, build)
    return QuerySet(
        name, "similar", "anime X -> its franchise (2), strong tag overlap (1); X itself excluded", 1, queries
    )


# -- 5. multimodal: vague text + degraded screenshot -----------------------------------------------------


def _decade(year: int | None) -> str | None:
    return f"the {year // 10 * 10}s" if year else None


def vague_description(doc: AnimeDocument, labels: Sequence[str]) -> str:
    kind = TYPE_WORDS.get(doc.type, "anime")
    decade = _decade(doc.year)
    text = f"a {kind}" if kind[0] not in "AEIOU" else f"an {kind}"
    if decade:
        text += f" from {decade}"
    if labels:
        phrases = [PHRASES.get(label, label.lower()) for label in labels]
        text += " with " + " and ".join(phrases)
    return text


def _matches(doc: AnimeDocument, target: AnimeDocument, labels: frozenset[str]) -> bool:
    return (
        doc.type == target.type
        and _decade(doc.year) == _decade(target.year)
        and labels <= (frozenset(doc.genres) | frozenset(doc.themes))
    )


def multimodal(catalogue: Catalogue, pictured: Sequence[str], n: int | None, seed: int) -> QuerySet:
    """`pictured`: the workspace's anime ids in cover order (position i has synthetic cover i)."""
    name = "multimodal"
    position = {anime_id: i for i, anime_id in enumerate(pictured) if anime_id in catalogue.documents}

    def build(anime_id: str) -> Query | None:
        rng = _rng(seed, name, anime_id)
        doc = catalogue.documents[anime_id]
        spoken = sorted(catalogue.labels[anime_id] - _UNSPOKEN)
        chosen = rng.sample(spoken, min(len(spoken), rng.choice((1, 2))))
        wanted = frozenset(chosen)
        alike = [o for o in position if o != anime_id and _matches(catalogue.documents[o], doc, wanted)]
        if len(alike) + 1 > MAX_JUDGED:
            return None
        return Query(
            f"{name}:{anime_id}",
            anime_id,
            _grade([anime_id], alike),
            vague_description(doc, chosen),
            picture=position[anime_id],
            labels=tuple(chosen),
        )

    queries = _collect(position, n, seed, name, build)
    return QuerySet(
        name,
        "multimodal",
        "vague text + degraded cover screenshot -> the anime (3), anime fitting the text (1)",
        3,
        queries,
    )


# -- 6. plot descriptions (hand-written, see plot_queries) ---------------------------------------------


def name_leaks(text: str, names: Iterable[str]) -> set[str]:
    """The normalised names (titles, synonyms) that `text` contains: as whole words for Latin names, as a
    substring for CJK ones (no spaces between words there). A plot query that names its anime is a title
    query in disguise."""
    padded = f" {normalize(text)} "
    compact = padded.replace(" ", "")
    return {n for n in names if (n.replace(" ", "") in compact if is_cjk(n) else f" {n} " in padded)}


def title_word_leaks(
    text: str, names: Iterable[str], ordinary: frozenset[str] = ORDINARY_TITLE_WORDS
) -> set[str]:
    """Words of 3+ letters that `text` shares with the Latin-script `names`, less the `ordinary` ones.

    Catches what `name_leaks` cannot: a character name that is also part of the title ("frieren" from
    "Frieren: Beyond the Journey's End") gives the work away as surely as the whole title.
    """
    title_words = {w for n in names for w in n.split() if len(w) >= 3 and w.isalpha() and not is_cjk(w)}
    return (set(normalize(text).split()) & title_words) - ordinary


def plot_judged(catalogue: Catalogue, anime_ids: Iterable[str]) -> set[str]:
    """The listed anime present in the catalogue and every entry of their franchises."""
    present = [a for a in anime_ids if a in catalogue.documents]
    return set(present).union(*(catalogue.franchise_of[a] for a in present))


def plot_leaks(catalogue: Catalogue, entry: PlotQuery) -> set[str]:
    """What of its judged anime's names a plot query gives away (empty: it names nothing)."""
    names = set().union(*(_names(catalogue.documents[a]) for a in plot_judged(catalogue, entry.anime_ids)))
    return name_leaks(entry.text, names) | title_word_leaks(entry.text, names)


def plot_descriptions(
    catalogue: Catalogue, n: int | None, seed: int, entries: Sequence[PlotQuery] = PLOT_QUERIES
) -> QuerySet:
    name = "plot-en"
    # Keyed by the main entry: one description per work. A work missing from the catalogue is skipped.
    by_main = {e.anime_ids[0]: e for e in entries if e.anime_ids[0] in catalogue.documents}

    def build(anime_id: str) -> Query | None:
        entry = by_main[anime_id]
        if plot_leaks(catalogue, entry):
            return None  # names its anime in this catalogue (tests keep the shipped queries clean)
        judged = plot_judged(catalogue, entry.anime_ids)
        return Query(f"{name}:{anime_id}", anime_id, dict.fromkeys(judged, 3), entry.text)

    queries = _collect(by_main, n, seed, name, build)
    return QuerySet(
        name,
        "text",
        "plot description in English, no title -> every entry of the work's franchise (3)",
        3,
        queries,
    )


# -- 7-10. titles as users type them: Japanese, Chinese, English exactly, romanised or misspelled ----------

# A name carried by more entries than this, siblings aside, is generic ("Peace"): not a title to look up.
MAX_SHARED_NAME = 5
_KANA = re.compile(r"[\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_kana(text: str) -> bool:
    """Written with hiragana or katakana (the middle dot ・ aside): unmistakably Japanese, where kanji
    alone could be Chinese."""
    return bool(_KANA.search(text))


def has_han(text: str) -> bool:
    """Contains Chinese characters (CJK ideographs)."""
    return bool(_HAN.search(text))


def usable_name(catalogue: Catalogue, anime_id: str, key: str) -> bool:
    """Whether the normalised name `key` of `anime_id` makes a title query: two characters at least (one
    kanji, "海", names nothing) and not carried by more than MAX_SHARED_NAME entries (then it is generic).

    Franchise siblings are not counted: every season of Attack on Titan lists 進撃の巨人 among its names,
    which makes the name famous, not generic.
    """
    carriers = catalogue.by_name.get(key, set()) - catalogue.franchise_of[anime_id] - {anime_id}
    return len(key.replace(" ", "")) >= 2 and len(carriers) + 1 <= MAX_SHARED_NAME


def _name_query(
    catalogue: Catalogue, set_name: str, anime_id: str, text: str, key: str, labels: tuple[str, ...] = ()
) -> Query:
    """Grade 3: every entry carrying the name `key` (and the anime itself); 1: the rest of its franchise."""
    same = catalogue.by_name.get(key, set()) | {anime_id}
    grades = _grade(same, catalogue.franchise_of[anime_id])
    return Query(f"{set_name}:{anime_id}", anime_id, grades, text, labels=labels)


def _exact_title_set(
    catalogue: Catalogue, set_name: str, description: str, titles: Mapping[str, str], n: int | None, seed: int
) -> QuerySet:
    """A set whose query for an anime is one of its names typed exactly (`titles`: anime id -> name)."""
    usable = {
        a: t
        for a, t in titles.items()
        if a in catalogue.documents and usable_name(catalogue, a, normalize(t))
    }

    def build(anime_id: str) -> Query:
        text = usable[anime_id]
        return _name_query(catalogue, set_name, anime_id, text, normalize(text))

    return QuerySet(set_name, "text", description, 3, _collect(usable, n, seed, set_name, build))


def japanese_titles(catalogue: Catalogue, n: int | None, seed: int) -> QuerySet:
    titles = {
        a: d.title_japanese
        for a, d in catalogue.documents.items()
        if d.title_japanese and has_kana(d.title_japanese)
    }
    description = "Japanese title (with kana) -> every anime of that name (3), its franchise (1)"
    return _exact_title_set(catalogue, "title-ja", description, titles, n, seed)


def chinese_titles(catalogue: Catalogue, n: int | None, seed: int) -> QuerySet:
    """Needs `catalogue.chinese_titles`; without them the set has no queries (build_sets leaves it out)."""
    docs = catalogue.documents
    titles = {
        a: t
        for a, t in (catalogue.chinese_titles or {}).items()
        if a in docs and has_han(t) and normalize(t) != normalize(docs[a].title_japanese or "")
    }
    description = "Chinese title (bangumi name_cn) -> every anime of that name (3), its franchise (1)"
    return _exact_title_set(catalogue, "title-zh", description, titles, n, seed)


def english_titles(catalogue: Catalogue, n: int | None, seed: int) -> QuerySet:
    titles = {
        a: d.title_english
        for a, d in catalogue.documents.items()
        if d.title_english and is_latin_title(d.title_english)
    }
    description = "English title typed exactly -> every anime of that name (3), its franchise (1)"
    return _exact_title_set(catalogue, "title-en", description, titles, n, seed)


def typed(name: str) -> str:
    """A name the way people type it on a plain keyboard: lower case, no punctuation, no accents
    ("Shingeki no Kyojin!" -> "shingeki no kyojin", "Pokémon" -> "pokemon")."""
    decomposed = unicodedata.normalize("NFKD", normalize(name))
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


# A run of romaji syllables: (consonant (+y)) vowel, a syllabic n (m before b/p), or the first half of a
# doubled consonant ("kk", "tch").
_ROMAJI_WORD = re.compile(
    r"(?:(?:[kgszjtdnhbpmyrwf]|ch|sh|ts)?y?[aeiou]|n|m(?=[bp])|([kstpgdbz])(?=\1)|[tc](?=ch))+"
)
_ROMAJI_PARTICLES = frozenset({"no", "ni", "wa", "wo", "ga", "ka", "mo", "de"})


def looks_romaji(key: str) -> bool:
    """A heuristic for a typed name written in romaji rather than English: three or more words with a
    Japanese particle among them ("shingeki no kyojin"), or most words of 3+ letters spelled in Japanese
    syllables ("gintama", "kimetsu yaiba"). English titles full of names slip through now and then."""
    words = key.split()
    if len(words) >= 3 and _ROMAJI_PARTICLES & set(words):
        return True
    letters = [w for w in words if w.isalpha()]
    longer = [w for w in letters if len(w) >= 3] or letters
    return bool(longer) and sum(bool(_ROMAJI_WORD.fullmatch(w)) for w in longer) >= 0.75 * len(longer)


def romaji_names(doc: AnimeDocument) -> list[str]:
    """Latin-script names of an anime other than its English title that look like romaji, in field order
    (the display title, then the synonyms): the names behind "shingeki no kyojin"."""
    english = typed(doc.title_english) if doc.title_english else None
    by_typing: dict[str, str] = {}  # one name per way of typing it ("Gintama", "GINTAMA")
    for name in (doc.title, *doc.synonyms):
        if is_latin_title(name) and (key := typed(name)) != english and looks_romaji(key):
            by_typing.setdefault(key, name)
    return list(by_typing.values())


# A typo touches a word of 4+ letters, never its first letter (people get that one right).
_MIN_TYPO_WORD = 4
_VOWELS = "aeiou"
_TYPO_KINDS = ("drop", "double", "swap", "vowel")


def typo_words(text: str) -> list[tuple[int, int]]:
    """(start, end) of the words in `text` long enough to misspell recognisably."""
    return [m.span() for m in re.finditer(r"[a-z]+", text) if m.end() - m.start() >= _MIN_TYPO_WORD]


def typo(text: str, start: int, end: int, rng: random.Random) -> str:
    """`text` with one realistic slip in its word text[start:end]: a letter dropped or doubled, two
    neighbours swapped, or a wrong vowel (whichever `rng` draws that the word allows)."""
    inner = range(start + 1, end)
    spots = {
        "drop": list(inner),
        "double": list(inner),
        "swap": [i for i in inner if i + 1 < end and text[i] != text[i + 1]],
        "vowel": [i for i in inner if text[i] in _VOWELS],
    }
    kind = rng.choice([k for k in _TYPO_KINDS if spots[k]])
    i = rng.choice(spots[kind])
    if kind == "drop":
        return text[:i] + text[i + 1 :]
    if kind == "double":
        return text[:i] + text[i] + text[i:]
    if kind == "swap":
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text[:i] + rng.choice([v for v in _VOWELS if v != text[i]]) + text[i + 1 :]


def misspell(text: str, rng: random.Random, taken: Container[str] = frozenset()) -> str | None:
    """`text` with one typo, or two in two different words where it has two long enough, drawn from
    `rng`; None if every draw spelled a name in `taken` (a typo that spells another anime's title is no
    longer a typo) or `text` has no word long enough."""
    for _ in range(5):
        words = typo_words(text)
        if not words:
            return None
        chosen = rng.sample(words, min(len(words), rng.choice((1, 2))))
        result = text
        for start, end in sorted(chosen, reverse=True):  # right to left: earlier spans stay valid
            result = typo(result, start, end, rng)
        if normalize(result) not in taken:
            return result
    return None


def misspelled_titles(catalogue: Catalogue, n: int | None, seed: int) -> QuerySet:
    name = "title-misspelled"
    docs = catalogue.documents

    def usable(anime_id: str, title: str) -> bool:
        return usable_name(catalogue, anime_id, normalize(title)) and bool(typo_words(typed(title)))

    romaji = {
        a: [r for r in romaji_names(d) if usable_name(catalogue, a, normalize(r))] for a, d in docs.items()
    }
    typeable = {
        a: [t for t in (d.title_english, *romaji[a]) if t and is_latin_title(t) and usable(a, t)]
        for a, d in docs.items()
    }

    def build(anime_id: str) -> Query | None:
        rng = _rng(seed, name, anime_id)
        if romaji[anime_id] and (rng.random() < 0.5 or not typeable[anime_id]):
            source = rng.choice(romaji[anime_id])
            return _name_query(
                catalogue, name, anime_id, typed(source), normalize(source), labels=("romaji",)
            )
        source = rng.choice(typeable[anime_id])
        text = misspell(typed(source), rng, catalogue.by_name)
        if text is None:
            return None
        return _name_query(catalogue, name, anime_id, text, normalize(source), labels=("typo",))

    sources = [a for a in docs if romaji[a] or typeable[a]]
    queries = _collect(sources, n, seed, name, build)
    return QuerySet(
        name,
        "text",
        "romaji title as typed, or a title with 1-2 typos -> the anime (3), its franchise (1)",
        3,
        queries,
    )


TEXT_SETS = (
    "title-paraphrase",
    "multilingual-title",
    "genre-description",
    "plot-en",
    "title-ja",
    "title-zh",
    "title-en",
    "title-misspelled",
)
ALL_SETS = (*TEXT_SETS, "similar-to", "multimodal")


def build_sets(
    catalogue: Catalogue,
    names: Sequence[str],
    *,
    per_set: int | None,
    seed: int,
    pictured: Sequence[str] = (),
    eligible: frozenset[str] | None = None,
) -> list[QuerySet]:
    """The named query sets; multimodal only where `pictured` lists anime with covers, title-zh only where
    the catalogue knows the Chinese titles (`Catalogue.of(..., chinese_titles=...)`). The caller reports
    the sets left out as n/a.

    `eligible`: only queries about these anime (a fine-tune's held-out split), still up to `per_set`
    of them in the seed's order; judgements keep every anime of the catalogue.
    """
    builders = {
        "title-paraphrase": title_paraphrases,
        "multilingual-title": multilingual_titles,
        "genre-description": genre_descriptions,
        "plot-en": plot_descriptions,
        "title-ja": japanese_titles,
        "title-zh": chinese_titles,
        "title-en": english_titles,
        "title-misspelled": misspelled_titles,
        "similar-to": similar_to,
    }
    out = []
    for name in names:
        if name == "multimodal":
            if pictured:
                out.append(multimodal(catalogue, pictured, per_set, seed))
        elif name == "title-zh" and catalogue.chinese_titles is None:
            continue
        elif eligible is None:
            out.append(builders[name](catalogue, per_set, seed))
        else:
            built = builders[name](catalogue, None, seed)
            kept = [q for q in built.queries if q.anime_id in eligible][:per_set]
            out.append(dataclasses.replace(built, queries=kept))
    return out
