"""Fusion of ranked lists: normalisers, fuse() semantics and properties, equivalence with Qdrant."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from service.search.fusion import (
    Candidate,
    Fused,
    Method,
    RankedList,
    dbsf_normalize,
    fuse,
    fuse_confident,
    min_max,
    rrf_scores,
)

# Qdrant's default RRF k (its `Rrf.k` when none is given).
QDRANT_DEFAULT_RRF_K = 2


def _best_first(items: Sequence[Candidate]) -> list[Candidate]:
    """Best score first, each key once (its best), ties by key: how Qdrant's lists arrive."""
    seen: set[str] = set()
    ordered = []
    for item in sorted(items, key=lambda c: (-c.score, c.key)):
        if item.key not in seen:
            seen.add(item.key)
            ordered.append(item)
    return ordered


def fuse_like_qdrant_rrf(
    lists: Sequence[RankedList],
    *,
    k: float = QDRANT_DEFAULT_RRF_K,
    weights: Mapping[str, float] | None = None,
    limit: int | None = None,
) -> list[Candidate]:
    """Qdrant's (weighted) RRF over lists, as ``RrfQuery(rrf=Rrf(k=k, weights=...))`` computes it.

    Each list contributes 1 / ((position + 1) / w + k - 1) with a 0-based position, 0 if w <= 0,
    summed over lists; ``weights`` are per list name (Qdrant weighs per prefetch), default 1. A weight
    thus stretches the rank axis instead of scaling the contribution, so it is not linear in w and
    ordering can differ from `fuse` with the same unequal weights; with equal weights c it is
    c × fuse's RRF with k' = c (k - 1) + 1. Kept as the executable statement of what the server does,
    here, in the tests, as the oracle the façade's `fuse` is compared against.
    """
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(f"rrf k must be a positive finite number, got {k}")
    if weights is not None and (missing := [r.name for r in lists if r.name not in weights]):
        raise ValueError(f"no weight given for list(s) {', '.join(map(repr, missing))}")
    totals: dict[str, float] = {}
    best_position: dict[str, int] = {}
    for ranked in lists:
        weight = 1.0 if weights is None else weights[ranked.name]
        for position, item in enumerate(_best_first(ranked.items)):
            contribution = 0.0 if weight <= 0 else 1.0 / ((position + 1.0) / weight + k - 1.0)
            totals[item.key] = totals.get(item.key, 0.0) + contribution
            best_position[item.key] = min(position, best_position.get(item.key, position))
    keys = sorted(totals, key=lambda key: (-totals[key], best_position[key], key))
    return [Candidate(key, totals[key]) for key in (keys if limit is None else keys[:limit])]


METHODS: tuple[Method, ...] = ("weighted", "rrf", "dbsf")
# Fused scores are O(1) (O(1/k) for RRF, differences of O(1/k²) between neighbours): far above the
# rounding error of a few float operations, far below any real score gap.
EPS = 1e-9


def ranked(name: str, part: str, pairs: Sequence[tuple[str, float]]) -> RankedList:
    return RankedList(name, part, [Candidate(key, score) for key, score in pairs])


def keys(fused: Sequence[Fused]) -> list[str]:
    return [item.key for item in fused]


# --- normalisers -----------------------------------------------------------------------------------


def test_min_max_maps_best_to_one_and_worst_to_zero():
    assert min_max([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    assert min_max([]) == []


def test_min_max_degenerate_lists_count_as_best_hits():
    assert min_max([0.3]) == [1.0]
    assert min_max([0.7, 0.7, 0.7]) == [1.0, 1.0, 1.0]


def test_dbsf_uses_sample_sigma_and_three_sigma_bounds():
    scores = [1.0, 2.0, 3.0]  # mean 2, sample σ 1 -> [-1, 5] onto [0, 1]
    assert dbsf_normalize(scores) == pytest.approx([2 / 6, 3 / 6, 4 / 6])


def test_dbsf_without_spread_is_neutral_like_qdrant():
    assert dbsf_normalize([]) == []
    assert dbsf_normalize([0.9]) == [0.5]
    assert dbsf_normalize([0.4, 0.4]) == [0.5, 0.5]


def test_dbsf_does_not_clip_outliers_like_qdrant():
    # From 11 scores on one can lie beyond 3σ; clipping would erase its lead, Qdrant does not clip.
    scores = [1.0] + [0.0] * 11
    normalized = dbsf_normalize(scores)
    assert normalized[0] > 1.0
    assert normalized[1] > 0.0


def test_rrf_uses_zero_based_positions_like_qdrant():
    assert rrf_scores(3, k=60) == [1 / 60, 1 / 61, 1 / 62]
    assert rrf_scores(0) == []
    with pytest.raises(ValueError, match="k"):
        rrf_scores(3, k=0)


# --- fuse(): semantics -----------------------------------------------------------------------------


def test_part_score_is_the_mean_over_its_lists_and_parts_are_weighted():
    lists = [
        ranked("dense", "text", [("a", 0.9), ("b", 0.5), ("c", 0.1)]),
        ranked("sparse", "text", [("b", 12.0), ("a", 2.0)]),
        ranked("picture", "image", [("c", 0.8), ("a", 0.4)]),
    ]
    fused = {item.key: item for item in fuse(lists, {"text": 3.0, "image": 1.0})}
    # a: dense 1.0, sparse 0.0 -> text 0.5; picture 0.0.  b: dense 0.5, sparse 1.0 -> text 0.75
    assert fused["a"].part_scores == {"text": 0.5, "image": 0.0}
    assert fused["b"].part_scores == {"text": 0.75, "image": 0.0}
    assert fused["c"].part_scores == {"text": 0.0, "image": 1.0}
    assert fused["b"].score == pytest.approx(0.75 * 0.75)
    assert fused["c"].score == pytest.approx(0.25)
    assert fused["a"].list_scores == {"dense": 0.9, "sparse": 2.0, "picture": 0.4}
    assert fused["a"].list_ranks == {"dense": 1, "sparse": 2, "picture": 2}
    assert fused["b"].list_ranks == {"dense": 2, "sparse": 1}


def test_lists_are_sorted_defensively_before_ranking():
    shuffled = [ranked("dense", "text", [("c", 0.1), ("a", 0.9), ("b", 0.5)])]
    fused = fuse(shuffled, {"text": 1.0}, "rrf", rrf_k=1)
    assert keys(fused) == ["a", "b", "c"]
    assert [item.score for item in fused] == [1.0, 0.5, 1 / 3]
    assert [item.list_ranks["dense"] for item in fused] == [1, 2, 3]


def test_ties_break_by_best_single_list_rank_then_key():
    lists = [
        ranked("dense", "text", [("x", 0.9), ("y", 0.8)]),
        ranked("picture", "image", [("z", 0.5), ("y", 0.1)]),
    ]
    # RRF with k=1: one first place (1/1) is worth two second places (1/2 + 1/2), so all three tie;
    # x and z have a first place, y only second places; x before z by key.
    fused = fuse(lists, {"text": 1.0, "image": 1.0}, "rrf", rrf_k=1)
    assert [item.score for item in fused] == [0.5, 0.5, 0.5]
    assert keys(fused) == ["x", "z", "y"]
    equal = [ranked("dense", "text", [("b", 0.5), ("a", 0.5)])]
    assert keys(fuse(equal, {"text": 1.0}, "weighted")) == ["a", "b"]


def test_missing_modality_falls_back_to_the_other():
    text = ranked("dense", "text", [("a", 0.9), ("b", 0.2)])
    with_empty = [text, ranked("picture", "image", [])]
    fused = fuse(with_empty, {"text": 0.2, "image": 0.8})
    assert [(item.key, item.score) for item in fused] == [("a", 1.0), ("b", 0.0)]
    assert fused[0].part_scores == {"text": 1.0, "image": 0.0}
    # Even an image-only weighting falls back to the text results rather than returning nothing.
    assert keys(fuse(with_empty, {"text": 0.0, "image": 1.0})) == ["a", "b"]
    assert fuse([ranked("picture", "image", [])], {"image": 1.0}) == []


def test_empty_list_does_not_dilute_its_part():
    lists = [ranked("dense", "text", [("a", 0.9), ("b", 0.2)]), ranked("sparse", "text", [])]
    assert fuse(lists, {"text": 1.0})[0].part_scores == {"text": 1.0}


def test_zero_weight_part_is_switched_off():
    lists = [ranked("dense", "text", [("a", 0.9)]), ranked("picture", "image", [("p", 0.9)])]
    assert keys(fuse(lists, {"text": 1.0, "image": 0.0})) == ["a"]


def test_limit_truncates():
    lists = [ranked("dense", "text", [(str(i), i / 10) for i in range(10)])]
    assert keys(fuse(lists, {"text": 1.0}, limit=3)) == ["9", "8", "7"]
    assert fuse(lists, {"text": 1.0}, limit=0) == []


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"text": -0.1, "image": 1.0}, "text"),
        ({"text": 0.0, "image": 0.0}, "zero"),
        ({"text": 1.0}, "'image'"),
        ({"text": math.nan, "image": 1.0}, "text"),
    ],
)
def test_invalid_weights_are_rejected(weights: Mapping[str, float], message: str):
    lists = [ranked("dense", "text", [("a", 0.9)]), ranked("picture", "image", [("a", 0.5)])]
    with pytest.raises(ValueError, match=message):
        fuse(lists, weights)


def test_invalid_inputs_are_rejected():
    text = ranked("dense", "text", [("a", 0.9)])
    with pytest.raises(ValueError, match="unique"):
        fuse([text, text], {"text": 1.0})
    with pytest.raises(ValueError, match="non-finite"):
        fuse([ranked("dense", "text", [("a", math.nan)])], {"text": 1.0})
    with pytest.raises(ValueError, match="method"):
        fuse([text], {"text": 1.0}, "borda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k"):
        fuse([text], {"text": 1.0}, "rrf", rrf_k=-1)


# --- fuse(): properties ----------------------------------------------------------------------------

KEYS = st.sampled_from("abcdefghij")


@st.composite
def ranked_lists(draw: st.DrawFn, name: str, part: str) -> RankedList:
    # Each model scores on its own scale; duplicates of a key within a list cannot happen in Qdrant.
    scale = draw(st.sampled_from([1.0, 0.01, 30.0]))
    scores = draw(st.dictionaries(KEYS, st.floats(-1, 1, allow_nan=False), max_size=8))
    return ranked(name, part, [(key, scale * score) for key, score in scores.items()])


@st.composite
def two_part_lists(draw: st.DrawFn) -> list[RankedList]:
    text = [draw(ranked_lists(name, "text")) for name in ("dense", "sparse")[: draw(st.integers(1, 2))]]
    image = [draw(ranked_lists(name, "image")) for name in ("picture", "thumb")[: draw(st.integers(1, 2))]]
    return text + image


def scores_at(lists: Sequence[RankedList], method: Method, text_weight: float) -> list[Fused]:
    return fuse(lists, {"text": text_weight, "image": 1.0 - text_weight}, method, rrf_k=5)


@settings(max_examples=150, deadline=None)
@given(two_part_lists(), st.sampled_from(METHODS))
def test_full_weight_on_a_part_equals_fusing_that_part_alone(lists: list[RankedList], method: Method):
    for part, other in (("text", "image"), ("image", "text")):
        if not any(r.items for r in lists if r.part == part):
            continue  # then the other part is the fallback, see test_missing_modality_falls_back...
        alone = fuse([r for r in lists if r.part == part], {part: 1.0}, method)
        together = fuse(lists, {part: 1.0, other: 0.0}, method)
        assert [(f.key, f.score) for f in together] == [(f.key, f.score) for f in alone]


@settings(max_examples=200, deadline=None)
@given(
    two_part_lists(),
    st.sampled_from(METHODS),
    st.lists(st.floats(0, 1), min_size=3, max_size=3, unique=True).map(sorted),
)
def test_relative_order_flips_at_most_once_as_the_weight_sweeps(
    lists: list[RankedList], method: Method, sweep: list[float]
):
    w1, w2, w3 = sweep
    first, middle, last = (scores_at(lists, method, w) for w in sweep)
    position_1 = {item.key: i for i, item in enumerate(first)}
    position_3 = {item.key: i for i, item in enumerate(last)}
    score_2 = {item.key: item.score for item in middle}
    for a in position_1.keys() & position_3.keys():
        for b in position_1.keys() & position_3.keys():
            if position_1[a] < position_1[b] and position_3[a] < position_3[b]:
                assert not score_2[b] > score_2[a] + EPS, (a, b, w1, w2, w3)


@settings(max_examples=200, deadline=None)
@given(
    two_part_lists(),
    st.sampled_from(METHODS),
    st.sampled_from(["text", "image"]),
    st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True).map(sorted),
)
def test_a_parts_winner_never_loses_rank_as_its_weight_grows(
    lists: list[RankedList], method: Method, part: str, sweep: list[float]
):
    alone = fuse([r for r in lists if r.part == part], {part: 1.0}, method, rrf_k=5)
    if not alone:
        return
    winner = alone[0].key
    other = "image" if part == "text" else "text"

    def ahead_of_winner(weight: float, eps: float) -> set[str] | None:
        fused = {f.key: f.score for f in fuse(lists, {part: weight, other: 1 - weight}, method, rrf_k=5)}
        if winner not in fused:
            return None  # weight 0 switched the part off and the winner with it
        return {key for key, score in fused.items() if score > fused[winner] + eps}

    low, high = sweep
    before = ahead_of_winner(low, -EPS)
    if before is None:
        return
    # Whoever clearly beats the winner at the higher weight already beat it at the lower one.
    after = ahead_of_winner(high, EPS)
    assert after is not None  # a positive weight keeps the part, and its winner, in
    assert after <= before


def test_a_parts_winner_never_loses_rank_on_a_fine_weight_grid():
    rng = random.Random(7)
    lists = [
        ranked(name, part, [(f"k{rng.randrange(40)}", rng.random()) for _ in range(15)])
        for name, part in (("dense", "text"), ("sparse", "text"), ("picture", "image"), ("thumb", "image"))
    ]
    for method in METHODS:
        winner = fuse(lists[:2], {"text": 1.0}, method)[0].key
        ranks = [
            keys(fuse(lists, {"text": w / 50, "image": 1 - w / 50}, method)).index(winner) for w in range(51)
        ]
        assert ranks == sorted(ranks, reverse=True), method
        assert ranks[-1] == 0


# --- equivalence with Qdrant's own fusion (qdrant-client local mode) ------------------------------

VECTORS = {"text": 8, "picture": 6, "thumbnail": 4}


def build_collection(seed: int, points: int = 30) -> tuple[QdrantClient, random.Random]:
    rng = random.Random(seed)
    client = QdrantClient(":memory:")
    client.create_collection(
        "anime",
        vectors_config={
            name: models.VectorParams(size=size, distance=models.Distance.COSINE)
            for name, size in VECTORS.items()
        },
    )
    structs = []
    for point_id in range(points):
        # About one point in five lacks one of the named vectors, so lists have different members.
        lacking = rng.choice(list(VECTORS)) if rng.random() < 0.2 else None
        vector = {
            name: [rng.gauss(0, 1) for _ in range(size)] for name, size in VECTORS.items() if name != lacking
        }
        structs.append(models.PointStruct(id=point_id, vector=vector))
    client.upsert("anime", structs)
    return client, rng


def per_vector_lists(
    client: QdrantClient, queries: Mapping[str, list[float]], limit: int
) -> list[RankedList]:
    lists = []
    for name, query in queries.items():
        points = client.query_points("anime", query=query, using=name, limit=limit).points
        lists.append(ranked(name, name, [(str(p.id), p.score) for p in points]))
    return lists


def qdrant_fused(
    client: QdrantClient, queries: Mapping[str, list[float]], limit: int, query
) -> dict[str, float]:
    prefetch = [models.Prefetch(query=vector, using=name, limit=limit) for name, vector in queries.items()]
    # The fusion limit covers the union of all prefetches, so no tie is cut at the boundary.
    points = client.query_points("anime", prefetch=prefetch, query=query, limit=limit * len(queries)).points
    return {str(p.id): p.score for p in points}


# Local mode computes raw scores in float32, and a prefetch can differ from the same plain query in
# the last float32 bit (seen: 0.25142872747 vs 0.25142870170), so scores agree to ~1e-7, not 1e-15.
SCORE_TOLERANCE = 1e-6


def assert_same_ranking(ours: Sequence[tuple[str, float]], theirs: Mapping[str, float], factor: float):
    """Same keys, scores equal up to `factor`, and our order is theirs up to ties (near-ties)."""
    assert {key for key, _ in ours} == theirs.keys()
    for key, score in ours:
        assert score * factor == pytest.approx(theirs[key], rel=SCORE_TOLERANCE), key
    ours_scores = [score for _, score in ours]
    assert ours_scores == sorted(ours_scores, reverse=True)
    theirs_order = sorted(theirs, key=lambda key: -theirs[key])
    ours_order = [key for key, _ in ours]
    for i, key in enumerate(ours_order):  # a key may only move within its own tie group
        j = theirs_order.index(key)
        assert math.isclose(theirs[theirs_order[i]], theirs[theirs_order[j]], rel_tol=SCORE_TOLERANCE)


@pytest.mark.parametrize(("seed", "limit"), [(1, 10), (2, 10), (3, 30), (4, 5), (5, 30)])
def test_fuse_matches_qdrant_rrf_and_dbsf(seed: int, limit: int):
    client, rng = build_collection(seed)
    queries = {name: [rng.gauss(0, 1) for _ in range(size)] for name, size in VECTORS.items()}
    lists = per_vector_lists(client, queries, limit)
    equal_weights = dict.fromkeys(VECTORS, 1.0)
    parts = len(VECTORS)

    rrf = qdrant_fused(client, queries, limit, models.FusionQuery(fusion=models.Fusion.RRF))
    ours = fuse(lists, equal_weights, "rrf", rrf_k=QDRANT_DEFAULT_RRF_K)
    assert_same_ranking([(f.key, f.score) for f in ours], rrf, factor=parts)

    dbsf = qdrant_fused(client, queries, limit, models.FusionQuery(fusion=models.Fusion.DBSF))
    ours = fuse(lists, equal_weights, "dbsf")
    assert_same_ranking([(f.key, f.score) for f in ours], dbsf, factor=parts)

    rrf_60 = qdrant_fused(client, queries, limit, models.RrfQuery(rrf=models.Rrf(k=60)))
    ours = fuse(lists, equal_weights, "rrf", rrf_k=60)
    assert_same_ranking([(f.key, f.score) for f in ours], rrf_60, factor=parts)


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_weighted_rrf_matches_qdrant_only_through_fuse_like_qdrant_rrf(seed: int):
    client, rng = build_collection(seed)
    queries = {name: [rng.gauss(0, 1) for _ in range(size)] for name, size in VECTORS.items()}
    lists = per_vector_lists(client, queries, 10)
    weights = {name: rng.choice([0.0, 0.3, 1.0, 2.5]) for name in VECTORS}
    theirs = qdrant_fused(
        client, queries, 10, models.RrfQuery(rrf=models.Rrf(k=60, weights=[*weights.values()]))
    )
    ours = fuse_like_qdrant_rrf(lists, k=60, weights=weights)
    assert_same_ranking([(c.key, c.score) for c in ours], theirs, factor=1.0)

    # Equal weights c: fuse() with k' = c (k - 1) + 1 gives Qdrant's scores divided by c × parts.
    c = 2.5
    theirs = qdrant_fused(client, queries, 10, models.RrfQuery(rrf=models.Rrf(k=60, weights=[c] * 3)))
    mine = fuse(lists, dict.fromkeys(VECTORS, 1.0), "rrf", rrf_k=c * 59 + 1)
    assert_same_ranking([(f.key, f.score) for f in mine], theirs, factor=c * len(VECTORS))


def test_dbsf_outlier_beyond_three_sigma_matches_qdrant_unclipped():
    client = QdrantClient(":memory:")
    size = 64  # random cosines spread ~1/√64, so an exact match sits far beyond 3σ
    client.create_collection(
        "anime", {"text": models.VectorParams(size=size, distance=models.Distance.COSINE)}
    )
    rng = random.Random(3)
    query = [rng.gauss(0, 1) for _ in range(size)]
    vectors = [query] + [[rng.gauss(0, 1) for _ in range(size)] for _ in range(24)]
    client.upsert("anime", [models.PointStruct(id=i, vector={"text": v}) for i, v in enumerate(vectors)])
    lists = per_vector_lists(client, {"text": query}, 25)
    theirs = qdrant_fused(client, {"text": query}, 25, models.FusionQuery(fusion=models.Fusion.DBSF))
    assert theirs["0"] > 1.0  # Qdrant does not clip
    ours = fuse(lists, {"text": 1.0}, "dbsf")
    assert_same_ranking([(f.key, f.score) for f in ours], theirs, factor=1.0)


def test_qdrant_weighted_rrf_stretches_ranks_where_fuse_scales_contributions():
    # Qdrant: 1 / ((position + 1) / w + k - 1). fuse: w' / (k + position), linear in the weights.
    lists = [
        ranked("text", "text", [("t1", 0.9), ("t2", 0.8), ("t3", 0.7), ("x", 0.6)]),
        ranked("picture", "picture", [("x", 0.9), ("p2", 0.8)]),
    ]
    qdrant = fuse_like_qdrant_rrf(lists, k=2, weights={"text": 3.0, "picture": 1.0})
    ours = fuse(lists, {"text": 3.0, "picture": 1.0}, "rrf", rrf_k=2)
    # x: Qdrant 1/(4/3 + 1) + 1/2 = 0.929 beats t1: 1/(1/3 + 1) = 0.75; ours x: (3/5 + 1/2)/4 < t1: 3/8.
    assert qdrant[0].key == "x"
    assert ours[0].key == "t1"
    # With equal weights c, Qdrant's weighted RRF is c × fuse's RRF with k' = c (k - 1) + 1.
    c, k = 2.5, 2
    theirs = fuse_like_qdrant_rrf(lists, k=k, weights={"text": c, "picture": c})
    mine = fuse(lists, {"text": 1.0, "picture": 1.0}, "rrf", rrf_k=c * (k - 1) + 1)
    assert_same_ranking([(f.key, f.score) for f in mine], {q.key: q.score for q in theirs}, factor=2 * c)


# -- text search's confident fusion ---------------------------------------------------------------------


def _lists(**scores: Sequence[tuple[str, float]]) -> list[RankedList]:
    return [RankedList(name, name, [Candidate(k, s) for k, s in items]) for name, items in scores.items()]


def test_confident_fusion_at_power_one_is_qdrants_dbsf_sum():
    rng = random.Random(3)
    lists = _lists(
        a=[(f"k{i}", rng.random()) for i in range(30)],
        b=[(f"k{i}", rng.random()) for i in range(10, 45)],
    )
    confident = fuse_confident(lists, {"a": 1.0, "b": 1.0}, power=1.0)
    dbsf = fuse(lists, {"a": 1.0, "b": 1.0}, "dbsf")
    # Clipping at 0 is the only difference, and DBSF puts nothing of a list below 0 for n <= 10 ...
    # here n = 30-35, so compare where both are positive: the top of the ranking.
    assert [f.key for f in confident[:10]] == [f.key for f in dbsf[:10]]
    assert [f.score for f in confident[:10]] == pytest.approx([2 * f.score for f in dbsf[:10]])


def test_a_list_sure_of_one_anime_outweighs_lists_that_half_agree():
    """An exact title stands far above the rest of the names list; another anime is merely near the top
    of three lists at once. The DBSF sum lets the half-agreement win; the squared sum lets the sure list
    win, as a user who typed the title expects."""
    rng = random.Random(0)

    def noise(name: str, extra: list[tuple[str, float]]) -> list[tuple[str, float]]:
        return [(f"{name}{i}", 0.5 + 0.1 * rng.random()) for i in range(60)] + extra

    lists = _lists(
        title=noise("t", [("exact", 0.75), ("mid", 0.6)]),
        facts=noise("f", [("mid", 0.6)]),
        synopsis=noise("s", [("mid", 0.6)]),
    )
    weights = {"title": 1.0, "facts": 1.0, "synopsis": 1.0}
    assert fuse_confident(lists, weights, power=1.0)[0].key == "mid"
    assert fuse_confident(lists, weights, power=2.0)[0].key == "exact"


def test_a_lexical_list_with_one_hit_is_measured_over_its_whole_depth():
    """A word only one anime contains: one item, which DBSF alone can only place at 0.5."""
    dense = [(f"d{i}", 0.9 - 0.002 * i) for i in range(100)]
    lists = _lists(title=dense, text_lexical=[("rare", 4.0)])
    weights = {"title": 1.0, "text_lexical": 1.0}
    alone = fuse_confident(lists, weights)
    filled = fuse_confident(lists, weights, zero_filled={"text_lexical": 100})
    assert alone[0].key != "rare"
    assert filled[0].key == "rare"
    assert filled[0].list_ranks == {"text_lexical": 1} and filled[0].list_scores == {"text_lexical": 4.0}


def test_confident_fusion_weights_limits_and_errors():
    lists = _lists(a=[("x", 0.9), ("y", 0.5), ("z", 0.1)], b=[("y", 0.9), ("x", 0.2), ("w", 0.1)])
    assert {f.key for f in fuse_confident(lists, {"a": 1.0, "b": 0.0})} == {"x", "y", "z"}
    assert len(fuse_confident(lists, {"a": 1.0, "b": 1.0}, limit=2)) == 2
    heavy_b = fuse_confident(lists, {"a": 1.0, "b": 10.0})
    assert heavy_b[0].key == "y"
    with pytest.raises(ValueError, match="no weight"):
        fuse_confident(lists, {"a": 1.0})
    with pytest.raises(ValueError, match="power"):
        fuse_confident(lists, {"a": 1.0, "b": 1.0}, power=0.0)
    with pytest.raises(ValueError, match="finite"):
        fuse_confident(lists, {"a": 1.0, "b": -1.0})
