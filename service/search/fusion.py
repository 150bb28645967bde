"""Every fusion of ranked lists in the service is decided here, whether Qdrant or the façade runs it.

One set of rules for all of them:
* **Which fusion**: text search fuses its candidate lists with confident score fusion (`TEXT_FUSION`,
  `fuse_confident`, weights `TEXT_WEIGHTS`); picture search fuses picture and thumbnail by RRF
  (`IMAGE_FUSION`); multimodal search fuses its parts with the request's ranking (`fuse`: weighted,
  rrf or dbsf); "more like this" over several vectors by RRF (`SIMILARITY_FUSION`).
* **Where it runs**: RRF and DBSF run inside Qdrant (one Query API call, a prefetch per list) when
  nothing else is needed from the lists, except DBSF over a distance metric, which Qdrant gets wrong
  and `dbsf_sum` computes here (`runs_in_qdrant`); every other fusion runs here, on candidate lists the
  store returns in one batch, because it weights parts per request and explains every score.
* **The same formulas either way**: RRF's k (`DEFAULT_RRF_K`) and DBSF's normalisation
  (`dbsf_normalize`) match Qdrant 1.x (the server's segment crate, qdrant-client's local mode), so
  pushing a fusion down or running it here ranks alike; `tests/test_fusion.py` checks it against
  qdrant-client's local mode.
* **Thresholds before fusion**: a similarity threshold applies to each list's own scores before they
  are fused (a fused RRF score, ~0.03, is no scale a client can set a threshold on). Multimodal
  search's `score_threshold` is the documented exception: it is on the fused score.

Pure functions and constants: the search use cases execute what this module decides
(service/search/fused_search.py), the store only carries out a fusion it is handed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from service.domain.vectors import (
    FACTS_VECTOR,
    SYNOPSIS_VECTOR,
    TEXT_LEXICAL_VECTOR,
    TEXT_SPARSE_VECTOR,
    TITLE_VECTOR,
)

__all__ = [
    "CONFIDENCE_POWER",
    "DBSF_SIGMAS",
    "DEFAULT_RRF_K",
    "IMAGE_FUSION",
    "SIMILARITY_FUSION",
    "TEXT_FUSION",
    "TEXT_WEIGHTS",
    "Candidate",
    "Fused",
    "Method",
    "QdrantFusion",
    "RankedList",
    "dbsf_normalize",
    "dbsf_sum",
    "fuse",
    "fuse_confident",
    "min_max",
    "rrf_scores",
    "runs_in_qdrant",
]

Method = Literal["weighted", "rrf", "dbsf"]
QdrantFusion = Literal["rrf", "dbsf"]

# Cormack et al. (SIGIR 2009) found k=60 robust across collections. Qdrant defaults to k=2, which
# lets a single list's top hit outrank a key that several modalities agree on (1/2 vs 1/4 + 1/5 for
# positions 0 vs 2 and 3); multimodal search wants the agreement to win, hence the larger k.
DEFAULT_RRF_K = 60.0

# Qdrant's DBSF maps mean ± 3 sample standard deviations onto [0, 1].
DBSF_SIGMAS = 3.0

# How text search fuses: confident score fusion, here. Rank fusion gives every list's first hit the same
# weight, and DBSF weighs a list that is sure of its best hit like one that is not; the confident sum lets
# the sure list win. Qdrant's own "dbsf"/"rrf" stay selectable for the relevance harness's ablations
# (benchmarks/RESULTS.md: "hybrid" against "hybrid, Qdrant DBSF" and "hybrid, RRF").
TEXT_FUSION: Literal["confident", "rrf", "dbsf"] = "confident"
# Per list: synopses carry a plot description, the only kind of query no other list can answer.
TEXT_WEIGHTS = {
    TITLE_VECTOR: 1.0,
    FACTS_VECTOR: 1.0,
    SYNOPSIS_VECTOR: 1.5,
    TEXT_LEXICAL_VECTOR: 1.0,
    TEXT_SPARSE_VECTOR: 1.0,
}
# Picture and thumbnail come from one model on one scale: rank fusion, inside Qdrant.
IMAGE_FUSION: QdrantFusion = "rrf"
# "More like this" over several vectors (other models, other scales): rank fusion, equal weights.
SIMILARITY_FUSION: Method = "rrf"


@dataclass(frozen=True)
class Candidate:
    key: str  # anime id
    score: float  # raw store score (cosine similarity etc.), higher is better


@dataclass(frozen=True)
class RankedList:
    name: str  # e.g. "text", "text_sparse", "clip_text->picture", "picture", "thumbnail"
    part: str  # modality group, e.g. "text" or "image"; weights are given per part
    items: Sequence[Candidate]  # best first, but fuse() re-sorts rather than trusting callers


@dataclass(frozen=True)
class Fused:
    key: str
    score: float
    part_scores: dict[str, float]  # per part, normalised but unweighted; 0.0 where absent
    list_scores: dict[str, float]  # raw score per list the key appeared in
    list_ranks: dict[str, int]  # 1-based rank per list the key appeared in


def min_max(scores: Sequence[float]) -> list[float]:
    """Map scores linearly onto [0, 1], best → 1.0.

    A list of equal scores (or a single score) gives 1.0 to all: each of them is that list's best
    hit, and 1.0 keeps a lone hit from being worth nothing. (Qdrant's internal min-max gives 0.5 here;
    it is not exposed as a query fusion, so there is nothing to stay equivalent to.)
    """
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(s - low) / (high - low) for s in scores]


def rrf_scores(n: int, k: float = DEFAULT_RRF_K) -> list[float]:
    """Reciprocal-rank scores 1 / (k + position) for 0-based positions 0..n-1.

    Position is 0-based (= 1 / (k + rank - 1) for 1-based rank) because that is what Qdrant computes
    (server and local mode): the same k then means the same curve here and in a pushed-down
    ``RrfQuery``. Against the paper's 1-based 1 / (k + rank) this is only a shift of k by one.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"rrf k must be a positive finite number, got {k}")
    return [1.0 / (k + position) for position in range(n)]


def dbsf_normalize(scores: Sequence[float]) -> list[float]:
    """Qdrant's Distribution-Based Score Fusion normalisation: (s - (μ - 3σ)) / 6σ.

    Matches Qdrant exactly: σ is the *sample* standard deviation (n - 1), a single score or σ = 0
    gives 0.5 (no information about where the list sits), and the result is *not* clipped. For
    n <= 10 no score can lie beyond 3σ anyway (max |z| = (n - 1)/√n); beyond that an outlier may
    leave [0, 1] slightly, and clipping would tie two outliers and lose the very hit that stands out.
    """
    if len(scores) < 2:
        return [0.5] * len(scores)
    mean = math.fsum(scores) / len(scores)
    sigma = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
    if sigma == 0.0:
        return [0.5] * len(scores)
    low = mean - DBSF_SIGMAS * sigma
    return [(s - low) / (2 * DBSF_SIGMAS * sigma) for s in scores]


def runs_in_qdrant(method: QdrantFusion, *, over_distances: bool) -> bool:
    """Whether Qdrant can run this fusion inside one query.

    DBSF normalises raw scores as if higher were better, so on a distance metric it ranks the farthest
    first (qdrant-client's local mode and the server alike: qdrant/qdrant#10611); those lists are fused
    here by `dbsf_sum`, over the similarities the store hands out.
    """
    return not (method == "dbsf" and over_distances)


def dbsf_sum(lists: Sequence[Sequence[Candidate]], *, limit: int) -> list[Candidate]:
    """Qdrant's DBSF computed here: per key, the sum of its DBSF-normalised score in every list."""
    totals: dict[str, float] = {}
    for items in lists:
        for item, value in zip(items, dbsf_normalize([i.score for i in items]), strict=True):
            totals[item.key] = totals.get(item.key, 0.0) + value
    ranked = sorted(totals, key=lambda key: -totals[key])
    return [Candidate(key, totals[key]) for key in ranked[:limit]]


def _ordered(items: Sequence[Candidate]) -> list[Candidate]:
    """Best first, ties by key; a key repeated in one list keeps only its best entry."""
    for item in items:
        if not math.isfinite(item.score):
            raise ValueError(f"non-finite score {item.score!r} for key {item.key!r}")
    seen: set[str] = set()
    ordered: list[Candidate] = []
    for item in sorted(items, key=lambda c: (-c.score, c.key)):
        if item.key not in seen:
            seen.add(item.key)
            ordered.append(item)
    return ordered


def _normalizer(method: Method, rrf_k: float) -> Callable[[Sequence[float]], list[float]]:
    if method == "weighted":
        return min_max
    if method == "dbsf":
        return dbsf_normalize
    if method == "rrf":
        rrf_scores(0, rrf_k)  # validates k even when every list turns out empty
        return lambda scores: rrf_scores(len(scores), rrf_k)
    raise ValueError(f"unknown fusion method {method!r}")


def _part_weights(
    parts: Sequence[str], active: Sequence[str], weights: Mapping[str, float]
) -> dict[str, float]:
    """Weights of the active parts (those with a non-empty list), normalised to sum to 1.

    A part without results is dropped and its weight goes to the others in proportion, so a
    missing modality falls back to the rest. If every active part has weight 0 (e.g. image-only
    weighting but the image search found nothing) they share equally: that is the limit of their
    normalised weights as those weights approach 0 together, so results do not jump at the edge.
    """
    for part, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight for part {part!r} must be finite and >= 0, got {weight!r}")
    missing = [part for part in parts if part not in weights]
    if missing:
        raise ValueError(f"no weight given for part(s) {', '.join(map(repr, missing))}")
    if not any(weight > 0 for weight in weights.values()):
        raise ValueError("all fusion weights are zero")
    total = sum(weights[part] for part in active)
    if not active:
        return {}
    if total == 0:
        return dict.fromkeys(active, 1.0 / len(active))
    return {part: weights[part] / total for part in active}


def fuse(
    lists: Sequence[RankedList],
    weights: Mapping[str, float],
    method: Method = "weighted",
    *,
    rrf_k: float = DEFAULT_RRF_K,
    limit: int | None = None,
) -> list[Fused]:
    """One ranking from several lists: normalise per list, average within a part, weight parts.

    score(key) = Σ_part w'[part] · mean_{non-empty lists of part} norm_list(key), with norm = 0
    where the key is absent and w' the weights normalised over parts that returned anything.
    Linear in the weights, so as one part's weight grows two keys swap at most once.

    Qdrant equivalence (one list per part, equal weights): "rrf" with ``rrf_k=k`` and "dbsf" give
    Qdrant's ``Fusion.RRF``/``Fusion.DBSF`` scores divided by the number of parts, hence the same
    ordering. Unequal weights are *not* Qdrant's weighted RRF (that divides the rank by the weight;
    tests/test_fusion.py states Qdrant's formula): here a weight scales a part's contribution, which keeps the
    linearity above. Ties: fused score, then best rank in any weighted list, then key (Qdrant
    orders ties by internal order, which is not reproducible).

    Empty lists are ignored rather than counted as all-zero lists, for the same reason as a part
    with no results is: "nothing found" should not dilute what the other lists found. Keys that
    appear only in lists of zero-weight parts are left out, so weight 0 switches a part off.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    duplicates = sorted(name for name, count in Counter(r.name for r in lists).items() if count > 1)
    if duplicates:
        raise ValueError(f"list names must be unique, repeated: {', '.join(duplicates)}")

    parts = list(dict.fromkeys(ranked.part for ranked in lists))
    normalize = _normalizer(method, rrf_k)
    ordered = {ranked.name: _ordered(ranked.items) for ranked in lists}
    non_empty = [ranked for ranked in lists if ordered[ranked.name]]
    active = [part for part in parts if any(ranked.part == part for ranked in non_empty)]
    part_weight = _part_weights(parts, active, weights)
    if not active:
        return []

    list_count = {part: sum(ranked.part == part for ranked in non_empty) for part in active}
    part_sums: dict[str, dict[str, float]] = {}
    raw: dict[str, dict[str, float]] = {}
    ranks: dict[str, dict[str, int]] = {}
    for ranked in non_empty:
        items = ordered[ranked.name]
        values = normalize([item.score for item in items])
        for rank, (item, value) in enumerate(zip(items, values, strict=True), start=1):
            sums = part_sums.setdefault(item.key, dict.fromkeys(parts, 0.0))
            sums[ranked.part] += value
            raw.setdefault(item.key, {})[ranked.name] = item.score
            ranks.setdefault(item.key, {})[ranked.name] = rank

    weighted_lists = {ranked.name for ranked in non_empty if part_weight[ranked.part] > 0}
    fused: list[Fused] = []
    for key, sums in part_sums.items():
        if weighted_lists.isdisjoint(ranks[key]):
            continue
        part_scores = {part: sums[part] / list_count[part] if part in list_count else 0.0 for part in parts}
        score = math.fsum(part_weight[part] * part_scores[part] for part in active)
        fused.append(Fused(key, score, part_scores, raw[key], ranks[key]))

    def order(item: Fused) -> tuple[float, int, str]:
        best_rank = min(rank for name, rank in item.list_ranks.items() if name in weighted_lists)
        return (-item.score, best_rank, item.key)

    fused.sort(key=order)
    return fused if limit is None else fused[:limit]


# How much more a list that is sure of an anime counts than one that is not: each list's DBSF-normalised
# score is raised to this power before the weighted sum (text search).
CONFIDENCE_POWER = 2.0


def fuse_confident(
    lists: Sequence[RankedList],
    weights: Mapping[str, float],
    *,
    power: float = CONFIDENCE_POWER,
    limit: int | None = None,
    zero_filled: Mapping[str, int] | None = None,
) -> list[Fused]:
    """Text search's fusion: Σ_list weight · max(0, dbsf(score))^power, over the lists a key is in.

    Qdrant's DBSF is the sum of the same normalised scores (power 1, equal weights), and it weighs a list
    whose best hit stands far above its rest (a title typed exactly: cosine 1.0 where the rest are 0.85)
    like a list whose best hit barely does (the names list for a plot description). Raising the
    normalised score to a power > 1 keeps DBSF's scale but lets the list that is sure win: measured on
    the whole catalogue (benchmarks/RESULTS.md), it is what lets exact titles come first and plot
    descriptions reach their synopsis at the same time. Weights are per list name (0 turns a list off);
    ties go to the best rank in any list, then the key. Lists keep their own raw scores and ranks in
    each result, for explanations.

    `zero_filled` names lists (with the depth asked of them) whose every other candidate scores 0: a
    lexical list holds only the anime that contain a query word, the rest score 0, so its spread is
    measured over the whole depth. Otherwise a word only one anime has (the surest lexical evidence)
    would be a one-item list, which DBSF can only place at 0.5.
    """
    if not (power > 0 and math.isfinite(power)):
        raise ValueError(f"power must be positive and finite, got {power!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    missing = [r.name for r in lists if r.name not in weights]
    if missing:
        raise ValueError(f"no weight given for list(s) {', '.join(map(repr, missing))}")
    totals: dict[str, float] = {}
    raw: dict[str, dict[str, float]] = {}
    ranks: dict[str, dict[str, int]] = {}
    per_list: dict[str, dict[str, float]] = {}
    for ranked in lists:
        weight = weights[ranked.name]
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight for list {ranked.name!r} must be finite and >= 0, got {weight!r}")
        items = _ordered(ranked.items)
        if weight == 0 or not items:
            continue
        scores = [i.score for i in items]
        padding = max(0, (zero_filled or {}).get(ranked.name, 0) - len(scores))
        normalised = dbsf_normalize(scores + [0.0] * padding)[: len(scores)]
        for rank, (item, value) in enumerate(zip(items, normalised, strict=True), start=1):
            contribution = weight * max(0.0, value) ** power
            totals[item.key] = totals.get(item.key, 0.0) + contribution
            per_list.setdefault(item.key, {})[ranked.name] = contribution
            raw.setdefault(item.key, {})[ranked.name] = item.score
            ranks.setdefault(item.key, {})[ranked.name] = rank
    fused = [Fused(key, totals[key], per_list[key], raw[key], ranks[key]) for key in totals]
    fused.sort(key=lambda f: (-f.score, min(f.list_ranks.values()), f.key))
    return fused if limit is None else fused[:limit]
