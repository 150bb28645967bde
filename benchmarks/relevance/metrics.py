"""Ranking metrics over graded judgements: pure functions of a ranked id list and a {id: grade} map.

Conventions (the same for every system, so they compare fairly):
- `ranking` is the system's answer, best first. A repeated id counts once, at its first position: a system
  cannot earn gain twice for one anime.
- `judgements` maps ids to integer grades; ids not in it, and grades <= 0, are not relevant.
- A query with no relevant anime scores 0.0 on every metric (trec_eval's convention). The judgement
  builders never emit such queries, so this only keeps the functions total.
- Ties in the system's scores are the system's business: it must hand over one order. Ties between equal
  grades in the ideal ranking do not matter, since equal grades give equal gains.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def _unique(ranking: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in ranking:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def gain(grade: int) -> float:
    """Exponential gain 2^grade - 1 (Burges et al.): a grade-3 hit is worth 7 grade-1 hits, so a title
    query is judged mostly on the anime it names, not on its franchise."""
    return float(2**grade - 1) if grade > 0 else 0.0


def dcg_at_k(grades: Sequence[int], k: int) -> float:
    """Discounted cumulative gain of grades in ranked order: sum of gain(g) / log2(position + 1)."""
    return sum(gain(g) / math.log2(i + 2) for i, g in enumerate(grades[:k]))


def ndcg_at_k(ranking: Sequence[str], judgements: Mapping[str, int], k: int = 10) -> float:
    """DCG of the top k divided by the DCG of the best possible top k (all judged grades, sorted)."""
    ideal = dcg_at_k(sorted((g for g in judgements.values() if g > 0), reverse=True), k)
    if ideal == 0.0:
        return 0.0
    return dcg_at_k([judgements.get(item, 0) for item in _unique(ranking)], k) / ideal


def relevant(judgements: Mapping[str, int], min_grade: int = 1) -> set[str]:
    """The ids a binary metric counts as relevant: grade >= min_grade."""
    return {item for item, grade in judgements.items() if grade >= max(min_grade, 1)}


def recall_at_k(
    ranking: Sequence[str], judgements: Mapping[str, int], k: int = 10, min_grade: int = 1
) -> float:
    """Share of the relevant anime found in the top k, out of min(k, #relevant).

    Capped at k so that a perfect top k scores 1.0 even when a query has 150 relevant anime (a genre query):
    plain recall@10 would top out at 10/150 there and say nothing. For known-item queries (one relevant
    anime) it is the plain hit rate.
    """
    wanted = relevant(judgements, min_grade)
    if not wanted:
        return 0.0
    found = sum(1 for item in _unique(ranking)[:k] if item in wanted)
    return found / min(k, len(wanted))


def hit_at_k(ranking: Sequence[str], judgements: Mapping[str, int], k: int = 10, min_grade: int = 1) -> float:
    """1.0 when any relevant anime is in the top k, else 0.0 (success@k).

    The user's own yardstick: hit@1 is "the first answer was it", hit@10 "it was on the first page".
    Unlike recall@k it does not ask for every relevant anime, so a title query with a large franchise
    scores 1.0 as soon as one entry it names shows up.
    """
    wanted = relevant(judgements, min_grade)
    return 1.0 if any(item in wanted for item in _unique(ranking)[:k]) else 0.0


def reciprocal_rank(ranking: Sequence[str], judgements: Mapping[str, int], min_grade: int = 1) -> float:
    """1 / position of the first relevant anime in the whole ranking; 0.0 when none was returned."""
    wanted = relevant(judgements, min_grade)
    for position, item in enumerate(_unique(ranking), start=1):
        if item in wanted:
            return 1.0 / position
    return 0.0


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; 0.0 for no values (an empty query set reports 0, never a division error)."""
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def relative_gain(value: float, baseline: float) -> float | None:
    """(value - baseline) / baseline; None when the baseline is 0 (no meaningful ratio)."""
    if baseline <= 0.0:
        return None
    return (value - baseline) / baseline


def bootstrap_interval(
    values: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over queries (resampled with replacement)."""
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    if len(data) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(
    candidate: Sequence[float], base: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of candidate - base over the same queries, with its 95% paired bootstrap interval.

    Paired: both systems answered the same queries, so the per-query differences are resampled, which
    is much tighter than comparing two independent intervals.
    """
    if len(candidate) != len(base):
        raise ValueError("paired difference needs the same queries on both sides")
    differences = [c - b for c, b in zip(candidate, base, strict=True)]
    low, high = bootstrap_interval(differences, resamples=resamples, seed=seed)
    return mean(differences), low, high
