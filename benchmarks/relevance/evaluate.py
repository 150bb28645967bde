"""Run every applicable ranker on every query set and aggregate the metrics.

Which rankers apply to which set:
- text sets: random, BM25 (bm25s over the composed text, CJK bigrams: a baseline outside the service),
  the service's own lexical channel alone (Qdrant BM25, multilingual tokenizer), dense (/search with
  text_mode=dense: names + centred synopses) and hybrid (/search, the default: + lexical, and BGE-m3's
  learned sparse where the model has it). With several models (`--models`), each model's rows are
  prefixed with its name, and the main model adds ablations (Qdrant's DBSF or RRF instead of the
  confident fusion, no hub correction);
- similar-to: random, BM25 more-like-this, /similarity/{anime,visual,vector} as the store has vectors;
- multimodal: random, text only (/search), image only (/search/image), /search/multimodal with each
  ranking (weighted, rrf, dbsf) at the default weights.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.relevance import metrics
from benchmarks.relevance.judgements import Catalogue, QuerySet
from benchmarks.relevance.systems import (
    Bm25Ranker,
    ImageSearchRanker,
    LexicalRanker,
    MultimodalRanker,
    RandomRanker,
    Ranker,
    SimilarityRanker,
    TextSearchRanker,
)
from service.domain.calibration import hub_share
from service.platform.progress import counter
from service.runtime import Runtime
from service.search.search_service import SearchService
from service.search.similarity import KIND_VECTORS, SimilarityService

# PRD: multimodal search must beat the best single modality by this much (relative, nDCG@10).
MULTIMODAL_BAR = 0.15
TEXT_ONLY = "text only (dense)"
IMAGE_ONLY = "image only"
LEXICAL = "lexical channel alone (Qdrant BM25)"
NO_LEXICAL = "n/a (the collection has no text_lexical vector: reindex it)"


@dataclass(frozen=True)
class Row:
    """One ranker on one query set: mean metrics, or why it could not run."""

    query_set: str
    system: str
    queries: int = 0
    ndcg: float | None = None
    recall: float | None = None
    mrr: float | None = None
    seconds: float = 0.0
    unavailable: str | None = None
    empty_answers: int = 0
    hit1: float | None = None
    hit10: float | None = None
    # The largest share of this set's queries that one anime answers first, and that anime: a hub.
    hub_share: float | None = None
    hub_anime: str | None = None
    # 95% bootstrap interval of hit@k over the set's queries: how far a difference must go to mean much.
    hit10_ci: tuple[float, float] | None = None
    # Per-query values by metric, in the set's query order (paired comparisons); not written to JSON.
    per_query: dict[str, tuple[float, ...]] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Gain:
    """A multimodal ranking against the better of text-only and image-only, per metric."""

    ranking: str
    metric: str
    multimodal: float
    best_single: float
    best_single_system: str
    gain: float | None

    @property
    def meets_bar(self) -> bool:
        return self.gain is not None and self.gain >= MULTIMODAL_BAR


@dataclass(frozen=True)
class Comparison:
    """A candidate system against a base on the same queries of one set: the mean difference of a metric
    with its 95% paired bootstrap interval."""

    query_set: str
    metric: str
    base: str
    candidate: str
    base_value: float
    candidate_value: float
    delta: float
    low: float
    high: float
    queries: int


COMPARED_METRICS = ("hit1", "hit10", "ndcg", "mrr")


@dataclass
class Evaluation:
    rows: list[Row] = field(default_factory=list)
    gains: list[Gain] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)

    def compare(self, base: str, candidate: str, *, seed: int = 0) -> list[Comparison]:
        """`candidate` against `base` on every set both answered (appended to `comparisons` too)."""
        rows = {(r.query_set, r.system): r for r in self.rows if r.unavailable is None}
        found = []
        for query_set in dict.fromkeys(r.query_set for r in self.rows):
            before, after = rows.get((query_set, base)), rows.get((query_set, candidate))
            if before is None or after is None:
                continue
            for metric in COMPARED_METRICS:
                b, c = before.per_query[metric], after.per_query[metric]
                delta, low, high = metrics.paired_difference(c, b, seed=seed)
                found.append(
                    Comparison(
                        query_set,
                        metric,
                        base,
                        candidate,
                        metrics.mean(b),
                        metrics.mean(c),
                        delta,
                        low,
                        high,
                        len(b),
                    )
                )
        self.comparisons += found
        return found


def _silent(_: int) -> None:
    return None


async def _stored_kinds(runtime: Runtime, sample_ids: Sequence[str]) -> dict[str, str | None]:
    """Similarity kind -> None when some sampled anime has its vectors, else why it is n/a."""
    schema = runtime.store.schema
    names = set(schema.dense) | set(schema.sparse)
    records = await runtime.store.get_many(list(sample_ids[:20]))
    held = set().union(*(set(r.vectors) for r in records.values())) if records else set()
    out: dict[str, str | None] = {}
    for kind, vectors in KIND_VECTORS.items():
        if not names & set(vectors):
            out[kind] = f"n/a (the collection has none of {', '.join(vectors)})"
        elif not held & set(vectors):
            out[kind] = f"n/a (no stored anime has {', '.join(sorted(names & set(vectors)))} vectors)"
        else:
            out[kind] = None
    return out


async def rankers_for(
    query_set: QuerySet,
    runtime: Runtime,
    catalogue: Catalogue,
    seed: int,
    bm25: dict[str, Bm25Ranker],
    *,
    model: str | None = None,
    baselines: bool = True,
    ablations: bool = False,
) -> list[Ranker | tuple[str, str]]:
    """The rankers for a set; (name, reason) pairs stand for the ones that cannot run here.

    `model` prefixes the service's rows (several models side by side); `baselines` adds the rankers that
    do not depend on the model (random, BM25, the lexical channel); `ablations` the main model's
    variants that show what each part of the design is worth.
    """
    ids = list(catalogue.documents)
    search = SearchService(runtime)
    docs = list(catalogue.documents.values())
    prefix = f"{model} " if model else ""
    if query_set.kind == "text":
        out: list[Ranker | tuple[str, str]] = []
        if baselines:
            if "text" not in bm25:
                bm25["text"] = Bm25Ranker(docs)
            lexical: Ranker | tuple[str, str] = (
                LexicalRanker(runtime) if search.hybrid_available() else (LEXICAL, NO_LEXICAL)
            )
            out += [RandomRanker(ids, seed), bm25["text"], lexical]
        out.append(TextSearchRanker(search, "dense", f"{prefix}dense"))
        out.append(
            TextSearchRanker(search, "hybrid", f"{prefix}hybrid")
            if search.hybrid_available()
            else (f"{prefix}hybrid", NO_LEXICAL)
        )
        if ablations:
            for label, variant in (
                ("hybrid, Qdrant DBSF", SearchService(runtime, text_fusion="dbsf")),
                ("hybrid, RRF", SearchService(runtime, text_fusion="rrf")),
                ("hybrid, no hub correction", SearchService(runtime, hub_correction=False)),
            ):
                out.append(TextSearchRanker(variant, "hybrid", f"{prefix}{label}"))
        return out
    if query_set.kind == "similar":
        if "mlt" not in bm25:
            bm25["mlt"] = Bm25Ranker(docs, more_like_this=True)
        similarity = SimilarityService(runtime)
        kinds = await _stored_kinds(runtime, [q.anime_id for q in query_set.queries])
        out: list[Ranker | tuple[str, str]] = [RandomRanker(ids, seed, exclude_source=True), bm25["mlt"]]
        for kind, reason in kinds.items():
            out.append(
                SimilarityRanker(similarity, kind) if reason is None else (f"similarity/{kind}", reason)
            )
        return out
    return [
        RandomRanker(ids, seed),
        TextSearchRanker(search, "dense", TEXT_ONLY),
        ImageSearchRanker(search, IMAGE_ONLY),
        MultimodalRanker(search, "weighted"),
        MultimodalRanker(search, "rrf"),
        MultimodalRanker(search, "dbsf"),
    ]


async def run_ranker(
    ranker: Ranker, query_set: QuerySet, *, depth: int, k: int, progress: bool = True
) -> Row:
    ndcg, recall, mrr, hit1, hit10 = [], [], [], [], []
    firsts: list[str] = []
    empty = 0
    started = time.perf_counter()
    title = f"{query_set.name} / {ranker.name}"
    reporter = counter(title, len(query_set.queries), unit="query") if progress else nullcontext(_silent)
    with reporter as advance:
        for query in query_set.queries:
            ranking = await ranker.rank(query, depth)
            empty += not ranking
            firsts += ranking[:1]
            grade = query_set.min_grade
            ndcg.append(metrics.ndcg_at_k(ranking, query.judgements, k))
            recall.append(metrics.recall_at_k(ranking, query.judgements, k, grade))
            mrr.append(metrics.reciprocal_rank(ranking, query.judgements, grade))
            hit1.append(metrics.hit_at_k(ranking, query.judgements, 1, grade))
            hit10.append(metrics.hit_at_k(ranking, query.judgements, k, grade))
            advance(1)
    share, hub = hub_share(firsts)
    return Row(
        query_set.name,
        ranker.name,
        len(query_set.queries),
        metrics.mean(ndcg),
        metrics.mean(recall),
        metrics.mean(mrr),
        round(time.perf_counter() - started, 2),
        empty_answers=empty,
        hit1=metrics.mean(hit1),
        hit10=metrics.mean(hit10),
        hub_share=round(share, 4),
        hub_anime=hub,
        hit10_ci=metrics.bootstrap_interval(hit10) if hit10 else None,
        per_query={
            "hit1": tuple(hit1),
            "hit10": tuple(hit10),
            "ndcg": tuple(ndcg),
            "mrr": tuple(mrr),
        },
    )


def multimodal_gains(rows: Sequence[Row]) -> list[Gain]:
    """Each multimodal ranking against the better single modality, on nDCG@10 and MRR."""
    by_name = {r.system: r for r in rows if r.unavailable is None}
    singles = [by_name[n] for n in (TEXT_ONLY, IMAGE_ONLY) if n in by_name]
    gains = []
    for row in rows:
        if not row.system.startswith("multimodal") or row.unavailable or not singles:
            continue
        for metric in ("ndcg", "mrr"):
            best = max(singles, key=lambda r: getattr(r, metric))
            value, base = getattr(row, metric), getattr(best, metric)
            gains.append(
                Gain(row.system, metric, value, base, best.system, metrics.relative_gain(value, base))
            )
    return gains


async def evaluate(
    runtime: Runtime,
    catalogue: Catalogue,
    query_sets: Sequence[QuerySet],
    *,
    seed: int = 0,
    depth: int = 100,
    k: int = 10,
    progress: bool = True,
    model: str | None = None,
    baselines: bool = True,
    ablations: bool = False,
    into: Evaluation | None = None,
) -> Evaluation:
    """Every applicable ranker on every set, in one runtime (an embedded store admits one client).

    Several models are compared by calling this once per model's workspace with `into` the same
    Evaluation, `model` naming the rows and `baselines` only on the first.
    """
    result = into or Evaluation()
    bm25: dict[str, Bm25Ranker] = {}
    for query_set in query_sets:
        set_rows = []
        rankers = await rankers_for(
            query_set, runtime, catalogue, seed, bm25, model=model, baselines=baselines, ablations=ablations
        )
        for ranker in rankers:
            if isinstance(ranker, tuple):
                set_rows.append(Row(query_set.name, ranker[0], len(query_set.queries), unavailable=ranker[1]))
                continue
            set_rows.append(await run_ranker(ranker, query_set, depth=depth, k=k, progress=progress))
        result.rows += set_rows
        if query_set.kind == "multimodal":
            result.gains += multimodal_gains(set_rows)
    return result


def as_dict(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "rows": [{k: v for k, v in asdict(r).items() if k != "per_query"} for r in evaluation.rows],
        "comparisons": [asdict(c) for c in evaluation.comparisons],
        "multimodal_gains": [asdict(g) | {"meets_bar": g.meets_bar} for g in evaluation.gains],
        "notes": evaluation.notes,
    }
