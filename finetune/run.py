"""One fine-tuning run end to end: documents → split → pairs → LoRA training → merged checkpoint + record."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import msgspec

from export.checkpoint import SPARSE_HEAD_FILE
from finetune.pairs import Pair, mine_pairs
from finetune.record import (
    LOSS_PLOT,
    RUN_FILE,
    SPLIT_FILE,
    RunRecord,
    data_hash,
    file_hash,
    plot_losses,
    write_json,
)
from finetune.split import SplitRecord, split_catalogue
from finetune.train import Embedder, TrainConfig, add_adapters, merge_adapters, retrieval_accuracy, train
from service.domain.documents import AnimeDocument, decode_documents
from service.domain.languages import ENGLISH, detect_language

# Files beside the encoder that say how it pools and prompts, and BGE-m3's sparse head: copied unchanged,
# since the adapter changes the encoder's weights only.
_UNCHANGED_FILES = (
    SPARSE_HEAD_FILE,
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "1_Pooling",
)
MERGED_DIR = "merged"


@dataclass(frozen=True)
class RunOptions:
    base: str
    out: Path
    dataset: Path | None = None
    documents: Path | None = None
    eval_share: float = 0.1
    hold_out: tuple[str, ...] = ()
    command: str = ""


def load_documents(options: RunOptions) -> list[AnimeDocument]:
    if options.documents is not None:
        return decode_documents(options.documents.read_bytes())
    from service.datasets.bangumi import load_bangumi

    assert options.dataset is not None
    return load_bangumi(options.dataset)


def plot_query_ids() -> list[str]:
    """Every anime a plot-en query is about: never trained on, whatever the split's share."""
    from benchmarks.relevance.plot_queries import PLOT_QUERIES

    return [anime_id for entry in PLOT_QUERIES for anime_id in entry.anime_ids]


def run_text(options: RunOptions, config: TrainConfig) -> RunRecord:
    from transformers import AutoTokenizer

    from benchmarks.relevance.judgements import Catalogue
    from export.checkpoint import inspect_text
    from export.text_model import load_text_module

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    report = _reporter()
    documents = load_documents(options)
    catalogue = Catalogue.of(documents)
    franchise_of = {a: frozenset(ids) for a, ids in catalogue.franchise_of.items()}
    split = split_catalogue(
        documents,
        franchise_of,
        always_held_out=[*plot_query_ids(), *options.hold_out],
        eval_share=options.eval_share,
    )
    train_docs = [d for d in documents if d.anime_id in split.train]
    held_docs = [d for d in documents if d.anime_id in split.held_out]
    pairs = mine_pairs(train_docs, franchise_of, config.seed)
    held_pairs = mine_pairs(held_docs, franchise_of, config.seed)
    report(
        f"[finetune] {len(documents)} anime: {len(split.train)} to train on, {len(split.held_out)} held out; "
        f"pairs { ({k: len(v) for k, v in pairs.items()}) }"
    )
    write_json(
        out / SPLIT_FILE,
        SplitRecord(
            held_out=sorted(split.held_out),
            train_count=len(split.train),
            eval_share=options.eval_share,
            always_held_out=len(set(plot_query_ids()) | set(options.hold_out)),
        ),
    )

    checkpoint = inspect_text(options.base)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint.path), use_fast=True)
    module = load_text_module(checkpoint)
    embed = Embedder(module, tokenizer, checkpoint.query_prompt, checkpoint.document_prompt)
    # The proxy asks what the harness's plot-en set asks: English plot text against the other scripts.
    proxy_pairs: list[Pair] = [p for p in held_pairs["plot"] if detect_language(p.query) == ENGLISH]
    report(f"[finetune] proxy before training: {len(proxy_pairs)} held-out English→CJK plot pairs")
    before = retrieval_accuracy(embed, proxy_pairs, config.passage_tokens)
    layers = add_adapters(module, config)
    result = train(embed, pairs, config, report)
    merge_adapters(module)
    after = retrieval_accuracy(embed, proxy_pairs, config.passage_tokens)
    report(f"[finetune] proxy recall@10 {before.get('recall@10', 0):.3f} -> {after.get('recall@10', 0):.3f}")

    run_id = f"{out.name}-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    weights = sorted(checkpoint.path.glob("*.safetensors")) or sorted(checkpoint.path.glob("*.bin"))
    record = RunRecord(
        run_id=run_id,
        base_source=checkpoint.source,
        base_weights_sha256=file_hash(weights),
        method=(
            f"lora r={config.rank} alpha={config.alpha} on {','.join(config.targets)} "
            f"of layers {layers[0]}-{layers[-1]}, merged"
        ),
        lora={
            "rank": config.rank,
            "alpha": config.alpha,
            "dropout": config.dropout,
            "targets": list(config.targets),
            "layers": list(layers),
        },
        train={
            k: v
            for k, v in asdict(config).items()
            if k not in ("rank", "alpha", "dropout", "targets", "layers")
        },
        data_sha256=data_hash(pairs),
        pairs={k: len(v) for k, v in pairs.items()},
        held_out_pairs={k: len(v) for k, v in held_pairs.items()},
        split={"train": len(split.train), "held_out": len(split.held_out)},
        steps=config.steps,
        seconds=round(result.seconds, 1),
        batches_per_kind=result.batches_per_kind,
        losses=[round(x, 5) for x in result.losses],
        loss_kinds=result.kinds,
        proxy_before=before,
        proxy_after=after,
        versions={p: version(p) for p in ("torch", "transformers", "peft")},
        command=options.command,
    )
    write_json(out / RUN_FILE, record)
    plot_losses(
        result.losses, result.kinds, out / LOSS_PLOT, f"{run_id}: LoRA r={config.rank} on {checkpoint.source}"
    )
    save_merged(module, tokenizer, checkpoint.path, out / MERGED_DIR, record)
    return record


def save_merged(module, tokenizer, base: Path, target: Path, record: RunRecord) -> None:
    """The merged encoder as a plain checkpoint, with the base's pooling/prompt files and its lineage."""
    from export.checkpoint import LINEAGE_FILE, PROVENANCE_FILE, read_provenance

    if target.exists():
        shutil.rmtree(target)
    module.encoder.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    for name in _UNCHANGED_FILES:
        source = base / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        elif source.is_file():
            shutil.copy2(source, target / name)
    base_provenance = read_provenance(base)
    provenance = {
        "source": f"{record.base_source} + lora:{record.run_id}",
        "upstream": base_provenance.upstream if base_provenance else None,
        "weights": (
            f"{record.method}; trained on {sum(record.pairs.values())} pairs (data {record.data_sha256[:12]})"
        ),
        "license": base_provenance.license if base_provenance else None,
        # No reference engine: the base package's own engine computes the base weights, not these.
    }
    (target / PROVENANCE_FILE).write_bytes(msgspec.json.encode(provenance))
    lineage = {
        "base_source": record.base_source,
        "base_weights_sha256": record.base_weights_sha256,
        "run_id": record.run_id,
        "method": record.method,
        "data_sha256": record.data_sha256,
        "steps": record.steps,
    }
    write_json(target / LINEAGE_FILE, lineage)


def _reporter():
    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return report
