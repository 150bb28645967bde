"""Text model versions as an operator sees them: which are served, which answers whom, promote, roll back.

One use case behind the admin routes (`/api/v1/admin/models/text`) and the CLI
(`python -m service.admin.versions`). Promotion needs evidence: the relevance harness's comparison of the
candidate with the default on held-out anime (`python -m benchmarks.relevance --finetuned RUN --json F`),
judged by `service.domain.rollout.promotion_verdict`; the evidence must be about this candidate (its run id)
and this default (its source), so a report of another pair cannot promote it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from service.domain.manifest import Lineage
from service.domain.rollout import Verdict, promotion_verdict
from service.platform.errors import InvalidInput, ServiceError
from service.runtime import Runtime, build_runtime
from service.settings import load_settings
from service.store.edge_client import LocalModeFolder, StoreLocked


class PromotionRefused(ServiceError, status_code=409, code="promotion_refused"):
    pass


class _Side(msgspec.Struct, kw_only=True):
    source: str | None = None
    model_version: str | None = None
    run_id: str | None = None


class _Compared(msgspec.Struct, kw_only=True):
    base: _Side
    candidate: _Side


class _Row(msgspec.Struct, kw_only=True):
    query_set: str
    metric: str
    delta: float
    low: float
    high: float


class Evidence(msgspec.Struct, kw_only=True):
    """The parts of the harness's JSON report promotion reads (the rest is ignored)."""

    compared: _Compared | None = None
    comparisons: list[_Row] = []


def read_evidence(raw: Mapping[str, Any]) -> Evidence:
    try:
        return msgspec.convert(raw, Evidence)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"evidence is not a relevance harness report: {exc}", field="evidence") from exc


class TextVersionView(msgspec.Struct, kw_only=True):
    version: int
    model_version: str
    source: str
    precision: str
    lineage: Lineage | None
    # Its vectors are in the live collection (a version added later needs a re-embedding reindex).
    in_collection: bool
    default: bool
    # Share of clients the split sends to it (the default takes what the candidates leave).
    share: float


class TextVersionsView(msgspec.Struct, kw_only=True):
    default: int
    # Earlier defaults, the most recent last: where a rollback goes.
    history: list[int]
    versions: list[TextVersionView]


class PromotionView(msgspec.Struct, kw_only=True):
    promoted: bool
    reasons: list[str]
    versions: TextVersionsView


async def describe(runtime: Runtime) -> TextVersionsView:
    rollout = await runtime.current_rollout()
    held = {m.version for m in await runtime.held_models()}
    candidates = sum(rollout.shares.values())
    return TextVersionsView(
        default=rollout.default,
        history=list(rollout.history),
        versions=[
            TextVersionView(
                version=v,
                model_version=m.manifest.model_version,
                source=m.manifest.source,
                precision=m.manifest.precision,
                lineage=m.manifest.lineage,
                in_collection=v in held,
                default=v == rollout.default,
                share=1.0 - candidates if v == rollout.default else rollout.shares.get(v, 0.0),
            )
            for v, m in sorted(runtime.text_models.items())
        ],
    )


def judge(runtime: Runtime, version: int, evidence: Evidence) -> Verdict:
    """The rule on the harness's report, once the report is known to compare this very pair."""
    candidate = runtime.text_model(version)
    default = runtime.default_model
    reasons: list[str] = []
    if evidence.compared is None:
        return Verdict(False, ["the evidence compares no fine-tune (run the harness with --finetuned)"])
    run_id = evidence.compared.candidate.run_id
    lineage = candidate.manifest.lineage
    if lineage is None:
        reasons.append(
            f"version {version} has no lineage: promotion needs a fine-tune compared with its base"
        )
    elif run_id != lineage.run_id:
        reasons.append(f"the evidence compares run {run_id!r}, version {version} is run {lineage.run_id!r}")
    base_source = evidence.compared.base.source
    if base_source != default.manifest.source:
        reasons.append(
            f"the evidence's base is {base_source!r}, the default (version {default.version}) is "
            f"{default.manifest.source!r}"
        )
    if reasons:
        return Verdict(False, reasons)
    return promotion_verdict([msgspec.structs.asdict(row) for row in evidence.comparisons])


async def promote(runtime: Runtime, version: int, evidence: Mapping[str, Any]) -> PromotionView:
    """Make `version` the default when the evidence allows it (409 promotion_refused otherwise)."""
    rollout = await runtime.current_rollout()
    if version == rollout.default:
        return PromotionView(
            promoted=False,
            reasons=[f"version {version} is the default already"],
            versions=await describe(runtime),
        )
    model = runtime.text_model(version)
    if model not in await runtime.held_models():
        raise PromotionRefused(
            f"the collection has no vectors of version {version}: run POST /api/v1/admin/reindex "
            '{"reembed": true} first',
            version=version,
        )
    verdict = judge(runtime, version, read_evidence(evidence))
    if not verdict.promote:
        raise PromotionRefused(
            f"version {version} is not better by the rule: " + "; ".join(verdict.reasons),
            version=version,
            reasons=verdict.reasons,
        )
    await runtime.save_rollout(rollout.promoted(version))
    return PromotionView(promoted=True, reasons=verdict.reasons, versions=await describe(runtime))


async def rollback(runtime: Runtime) -> TextVersionsView:
    """Return to the previous default (409 when there is none)."""
    rollout = await runtime.current_rollout()
    if not rollout.history:
        raise PromotionRefused(f"version {rollout.default} has no earlier default to roll back to")
    await runtime.save_rollout(rollout.rolled_back())
    return await describe(runtime)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.admin.versions", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the served text model versions, the default and the split")
    promote_ = commands.add_parser("promote", help="make a version the default, if the evidence allows")
    promote_.add_argument("version", type=int)
    promote_.add_argument(
        "--evidence",
        type=Path,
        required=True,
        help="the JSON of `python -m benchmarks.relevance --finetuned`",
    )
    commands.add_parser("rollback", help="return to the previous default")
    return parser


async def _run(args: argparse.Namespace) -> Any:
    runtime = await build_runtime(load_settings())
    try:
        if args.command == "list":
            return await describe(runtime)
        if args.command == "promote":
            evidence = msgspec.json.decode(args.evidence.read_bytes())
            return await promote(runtime, args.version, evidence)
        return await rollback(runtime)
    finally:
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = asyncio.run(_run(args))
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (LocalModeFolder, StoreLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
