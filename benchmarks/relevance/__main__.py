"""Relevance evaluation: query sets judged from the catalogue's own fields, rankers side by side.

    # text models side by side, whole catalogue, one workspace per model under --root (resumable builds)
    python -m benchmarks.relevance --models e5-int8 e5 minilm e5-int8-uncentred --build --root var/relevance
    python -m benchmarks.relevance --build --workspace var/relevance/minilm     # one workspace, MiniLM
    python -m benchmarks.relevance --workspace var/bench --json out.json  # + multimodal (synthetic covers)

Prints a Markdown table (nDCG@10, recall@10, MRR per query set and system) on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.relevance.evaluate import Evaluation, evaluate
from benchmarks.relevance.judgements import ALL_SETS, TEXT_SETS, Catalogue, build_sets
from benchmarks.relevance.pictures import pictured_ids
from benchmarks.relevance.report import as_json, markdown
from benchmarks.relevance.workspace import (
    MODELS,
    MODELS_MAX_TOKENS,
    WorkspaceError,
    export_finetuned,
    export_minilm,
    export_model,
    fill,
    open_runtime,
    stored_documents,
)
from benchmarks.reporting import portable_source, write_results
from service.platform.logs import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.relevance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workspace", type=Path, default=Path("var/relevance"))
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=None,
        help="compare these text models side by side (text sets), one workspace each under --root; "
        "the first is the main model, which also gets the ablation rows",
    )
    parser.add_argument("--root", type=Path, default=Path("var/relevance"), help="workspaces of --models")
    parser.add_argument(
        "--finetuned",
        type=Path,
        default=None,
        help="a `python -m finetune` run folder: its merged checkpoint is exported like the first of "
        "--models and compared with it (paired bootstrap intervals) on the run's held-out anime",
    )
    parser.add_argument(
        "--held-out",
        type=Path,
        default=None,
        help="split.json of a fine-tuning run: queries only about its held-out anime (default with "
        "--finetuned: that run's)",
    )
    parser.add_argument(
        "--build",
        action="store_true",
        help="export MiniLM and embed the whole bangumi dataset into the workspace first (resumable)",
    )
    parser.add_argument("--dataset-cache", type=Path, default=Path("var/datasets"))
    parser.add_argument("--queries", type=int, default=200, help="queries per set (0: every candidate)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", choices=ALL_SETS, default=list(ALL_SETS))
    parser.add_argument("--depth", type=int, default=100, help="ranking depth asked of each system (1..100)")
    parser.add_argument("--k", type=int, default=10, help="cut-off of nDCG@k and recall@k")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


async def run_models(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Every model of --models on the text sets, one workspace after the other, into one table."""
    started = time.perf_counter()
    from service.datasets.bangumi import load_bangumi, load_chinese_titles

    documents = load_bangumi(args.dataset_cache) if args.build else None
    evaluation = Evaluation()
    catalogue: Catalogue | None = None
    query_sets: list = []
    sets = [s for s in args.sets if s in TEXT_SETS]
    built: dict[str, Any] = {}
    names = list(args.models)
    descriptions = {n: MODELS[n].description for n in names}
    finetuned = None
    if args.finetuned is not None:
        finetuned = f"{names[0]}+{args.finetuned.name}"
        descriptions[finetuned] = f"{names[0]} fine-tuned by the run {args.finetuned.name}"
        names.append(finetuned)
    eligible = held_out_ids(args.held_out or (args.finetuned / "split.json" if args.finetuned else None))
    served: dict[str, Any] = {}
    for position, name in enumerate(names):
        recipe = MODELS[names[0]] if name == finetuned else MODELS[name]
        workspace = args.root / name
        if args.build:
            with contextlib.redirect_stdout(sys.stderr):
                if name == finetuned:
                    export_finetuned(recipe, workspace, args.finetuned / "merged")
                else:
                    export_model(recipe, workspace, args.root / "checkpoints")
        runtime = await open_runtime(
            workspace, text_max_tokens=MODELS_MAX_TOKENS, synopsis_centring=recipe.synopsis_centring
        )
        try:
            manifest = runtime.text.manifest
            served[name] = {
                "source": manifest.source,
                "model_version": manifest.model_version,
                "run_id": manifest.lineage.run_id if manifest.lineage else None,
            }
            if args.build:
                began = time.perf_counter()
                await fill(runtime, documents or [])
                built[name] = round(time.perf_counter() - began, 1)
            if catalogue is None:
                catalogue = Catalogue.of(
                    await stored_documents(runtime), chinese_titles=load_chinese_titles(args.dataset_cache)
                )
                query_sets = build_sets(
                    catalogue, sets, per_set=args.queries or None, seed=args.seed, eligible=eligible
                )
            await evaluate(
                runtime,
                catalogue,
                query_sets,
                seed=args.seed,
                depth=args.depth,
                k=args.k,
                progress=not args.quiet,
                model=name,
                baselines=position == 0,
                ablations=position == 0,
                into=evaluation,
            )
        finally:
            await runtime.close()
    evaluation.rows.sort(key=lambda row: [s.name for s in query_sets].index(row.query_set))
    if finetuned is not None:
        evaluation.compare(f"{names[0]} hybrid", f"{finetuned} hybrid", seed=args.seed)
    meta = {
        "workspace": str(args.root),
        "documents": len(catalogue.documents) if catalogue else 0,
        "text_model": ", ".join(f"{n} ({d})" for n, d in descriptions.items()),
        "held_out": None if eligible is None else len(eligible),
        # What `python -m service.admin.versions promote --evidence` checks this report is about.
        "compared": {"base": served[names[0]], "candidate": served[finetuned]} if finetuned else None,
        "pictures": False,
        "seed": args.seed,
        "per_set": args.queries or "all",
        "depth": args.depth,
        "k": args.k,
        "max_tokens": MODELS_MAX_TOKENS,
        "build_seconds": built,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return markdown(meta, query_sets, evaluation), as_json(meta, query_sets, evaluation)


async def run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.models:
        return await run_models(args)
    started = time.perf_counter()
    if args.build:
        with contextlib.redirect_stdout(sys.stderr):  # the export's parity report; stdout is the table
            export_minilm(args.workspace)
    runtime = await open_runtime(args.workspace)
    try:
        if args.build:
            from service.datasets.bangumi import load_bangumi

            await fill(runtime, load_bangumi(args.dataset_cache))
        documents = await stored_documents(runtime)
        from service.datasets.bangumi import load_chinese_titles

        chinese = load_chinese_titles(args.dataset_cache) if "title-zh" in args.sets else None
        catalogue = Catalogue.of(documents, chinese_titles=chinese)
        pictured = pictured_ids(args.workspace) if runtime.image is not None else []
        query_sets = build_sets(
            catalogue, args.sets, per_set=args.queries or None, seed=args.seed, pictured=pictured
        )
        evaluation = await evaluate(
            runtime,
            catalogue,
            query_sets,
            seed=args.seed,
            depth=args.depth,
            k=args.k,
            progress=not args.quiet,
        )
        if "multimodal" in args.sets and not pictured:
            evaluation.notes.append(
                "multimodal: n/a (no pictures in this workspace; use one built by "
                "`python -m benchmarks.latency setup`)"
            )
        meta = {
            "workspace": str(args.workspace),
            "documents": len(documents),
            "text_model": portable_source(runtime.text.manifest.source),
            "image_model": portable_source(runtime.image.manifest.source) if runtime.image else None,
            "pictures": bool(pictured),
            "seed": args.seed,
            "per_set": args.queries or "all",
            "depth": args.depth,
            "k": args.k,
        }
    finally:
        await runtime.close()
    meta["seconds"] = round(time.perf_counter() - started, 1)
    return markdown(meta, query_sets, evaluation), as_json(meta, query_sets, evaluation)


def held_out_ids(split: Path | None) -> frozenset[str] | None:
    """The held-out anime of a fine-tuning run's split.json (finetune/split.py), or None."""
    if split is None:
        return None
    import msgspec

    return frozenset(msgspec.json.decode(split.read_bytes())["held_out"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("WARNING" if args.quiet else "INFO")  # JSON lines on stderr, never on stdout
    if not 1 <= args.depth <= 100 or not 1 <= args.k <= args.depth:
        print("error: need 1 <= k <= depth <= 100 (the service returns at most 100)", file=sys.stderr)
        return 2
    try:
        table, results = asyncio.run(run(args))
    except WorkspaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table)
    if args.json:
        write_results(args.json, "benchmarks.relevance", argv, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
