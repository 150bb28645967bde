"""The evaluation as Markdown (stdout) and as a JSON-ready dict (`--json`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.relevance.evaluate import MULTIMODAL_BAR, Evaluation, as_dict
from benchmarks.relevance.judgements import QuerySet

PICTURE_CAVEAT = (
    "Pictures are synthetic covers (random shapes, unrelated to the anime) and the CLIP weights are random: "
    "image and multimodal numbers measure the retrieval and fusion machinery, not CLIP's quality."
)


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def describe_sets(query_sets: Sequence[QuerySet]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "description": s.description,
            "binary_min_grade": s.min_grade,
            "queries": len(s.queries),
            "mean_judged": round(sum(len(q.judgements) for q in s.queries) / max(1, len(s.queries)), 1),
            "examples": [{"anime_id": q.anime_id, "text": q.text} for q in s.queries[:5]],
        }
        for s in query_sets
    ]


# Kinds of query whose rows the summary puts side by side (the targets are stated on these).
SUMMARY_SETS = ("title-ja", "title-zh", "title-en", "title-misspelled", "plot-en", "genre-description")


def summary(evaluation: Evaluation, k: int) -> list[str]:
    """hit@1 / hit@k per query kind (rows) and system (columns): the page a reader wants first."""
    sets = [s for s in SUMMARY_SETS if any(r.query_set == s for r in evaluation.rows)]
    systems = list(dict.fromkeys(r.system for r in evaluation.rows if r.query_set in sets))
    if not sets:
        return []
    cell = {(r.query_set, r.system): r for r in evaluation.rows}
    lines = [
        f"hit@1 / hit@{k} by kind of query:",
        "",
        "| kind | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for name in sets:
        values = []
        for system in systems:
            row = cell.get((name, system))
            if row is None or row.unavailable or row.hit1 is None:
                values.append("n/a")
            else:
                values.append(f"{row.hit1:.2f} / {row.hit10:.2f}")
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return [*lines, ""]


def markdown(meta: dict[str, Any], query_sets: Sequence[QuerySet], evaluation: Evaluation) -> str:
    k = meta["k"]
    lines = [
        f"Relevance on `{meta['workspace']}`: {meta['documents']} anime, text model `{meta['text_model']}`, "
        f"seed {meta['seed']}, up to {meta['per_set']} queries per set, rankings {meta['depth']} deep.",
        "",
        *summary(evaluation, k),
        f"| query set | system | queries | hit@1 | hit@{k} | MRR | nDCG@{k} | recall@{k} "
        "| hub share | s | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in evaluation.rows:
        note = row.unavailable or (f"{row.empty_answers} empty answers" if row.empty_answers else "")
        hub = "n/a" if row.hub_share is None else f"{row.hub_share:.2f}"
        lines.append(
            f"| {row.query_set} | {row.system} | {row.queries} | {_metric(row.hit1)} | "
            f"{_metric(row.hit10)} | {_metric(row.mrr)} | {_metric(row.ndcg)} | {_metric(row.recall)} | "
            f"{hub} | {row.seconds:.1f} | {note} |"
        )
    if evaluation.comparisons:
        first = evaluation.comparisons[0]
        lines += [
            "",
            f"`{first.candidate}` against `{first.base}` on the same queries (mean difference, 95% paired "
            "bootstrap interval):",
            "",
            "| query set | queries | metric | base | candidate | difference | 95% interval |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in evaluation.comparisons:
            lines.append(
                f"| {c.query_set} | {c.queries} | {c.metric} | {c.base_value:.3f} | "
                f"{c.candidate_value:.3f} | {c.delta:+.3f} | [{c.low:+.3f}, {c.high:+.3f}] |"
            )
    if evaluation.gains:
        lines += [
            "",
            f"Multimodal over the best single modality (PRD bar: >= {MULTIMODAL_BAR:.0%} on nDCG@{k}):",
            "",
            "| ranking | metric | multimodal | best single modality | gain | PRD bar |",
            "|---|---|---|---|---|---|",
        ]
        for g in evaluation.gains:
            label = f"nDCG@{k}" if g.metric == "ndcg" else "MRR"
            verdict = ("met" if g.meets_bar else "NOT met") if g.metric == "ndcg" else ""
            single = f"{g.best_single:.3f} ({g.best_single_system})"
            lines.append(
                f"| {g.ranking} | {label} | {g.multimodal:.3f} | {single} | {_percent(g.gain)} | {verdict} |"
            )
    lines += [
        "",
        f"hit@1 / hit@{k}: a relevant anime first / in the top {k}. "
        "Hub share: the largest share of the set's queries that one anime answers first. "
        f"nDCG@{k}: gains 2^grade - 1 over all judged anime. "
        f"recall@{k}: relevant anime in the top {k} out of min({k}, #relevant). "
        f"MRR: 1/rank of the first relevant anime in the top {meta['depth']}. "
        "Relevant = judged at least the set's binary grade.",
        "",
        "Query sets:",
        "",
    ]
    for s in query_sets:
        lines.append(
            f"- `{s.name}` ({len(s.queries)} queries, binary grade >= {s.min_grade}): {s.description}"
        )
    lines += [f"- {note}" for note in evaluation.notes]
    if meta.get("pictures"):
        lines.append(f"- {PICTURE_CAVEAT}")
    return "\n".join(lines)


def as_json(meta: dict[str, Any], query_sets: Sequence[QuerySet], evaluation: Evaluation) -> dict[str, Any]:
    return {**meta, "query_sets": describe_sets(query_sets), **as_dict(evaluation)}
