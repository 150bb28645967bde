"""`python -m finetune text --base CHECKPOINT --out RUN`: train a LoRA adapter, write a merged checkpoint.

Then export it as the next version of text_embedder through the normal path:
`python -m export text RUN/merged --out model_repository --version 2` (README, "Fine-tuning").
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from finetune.run import RunOptions, run_text
from finetune.train import DEFAULT_TARGETS, TrainConfig


def _weights(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        kind, _, share = part.partition("=")
        out[kind.strip()] = float(share)
    return out


def _layers(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    first, _, last = text.partition("-")
    return tuple(range(int(first), int(last or first) + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    text = commands.add_parser("text", help="LoRA on the text model, merged into a new checkpoint")
    text.add_argument("--base", required=True, help="checkpoint folder or Hub id (what `export text` takes)")
    source = text.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="bangumi dataset cache (what `make demo` fetches)")
    source.add_argument("--documents", type=Path, help="a JSON list of anime documents (the ingest format)")
    text.add_argument("--out", type=Path, required=True, help="run folder (record, split, merged checkpoint)")
    text.add_argument("--steps", type=int, default=TrainConfig.steps)
    text.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    text.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    text.add_argument("--rank", type=int, default=TrainConfig.rank)
    text.add_argument("--alpha", type=int, default=TrainConfig.alpha)
    text.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help="linear layers to adapt")
    text.add_argument(
        "--layers", default=None, help="encoder layers to adapt, e.g. 6-11 (default: upper half)"
    )
    text.add_argument("--temperature", type=float, default=TrainConfig.temperature)
    text.add_argument("--query-tokens", type=int, default=TrainConfig.query_tokens)
    text.add_argument("--passage-tokens", type=int, default=TrainConfig.passage_tokens)
    text.add_argument(
        "--kinds", type=_weights, default="plot=0.6,title=0.2,labels=0.2", help="share of batches per kind"
    )
    text.add_argument("--eval-share", type=float, default=0.1, help="share of franchises held out")
    text.add_argument(
        "--hold-out", type=Path, default=None, help="file of anime ids to hold out too (one per line)"
    )
    text.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=min(TrainConfig.warmup_steps, max(1, args.steps // 10)),
        rank=args.rank,
        alpha=args.alpha,
        targets=tuple(t for t in args.targets.split(",") if t),
        layers=_layers(args.layers),
        temperature=args.temperature,
        query_tokens=args.query_tokens,
        passage_tokens=args.passage_tokens,
        kind_weights=args.kinds if isinstance(args.kinds, dict) else _weights(args.kinds),
        seed=args.seed,
    )
    extra = args.hold_out.read_text().split() if args.hold_out else []
    record = run_text(
        RunOptions(
            base=args.base,
            out=args.out,
            dataset=args.dataset,
            documents=args.documents,
            eval_share=args.eval_share,
            hold_out=tuple(extra),
            command=shlex.join(["python", "-m", "finetune", *(argv if argv is not None else sys.argv[1:])]),
        ),
        config,
    )
    print(
        f"merged checkpoint: {args.out / 'merged'}\n"
        f"held-out plot proxy recall@10: {record.proxy_before.get('recall@10', 0):.3f} -> "
        f"{record.proxy_after.get('recall@10', 0):.3f}\n"
        f"next: python -m export text {args.out / 'merged'} --out model_repository --version next"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
