"""The run record: what was trained, on what, how it went — enough to reproduce a run or doubt it.

`run.json` (base model, LoRA settings, data hash, pair counts, steps, losses, the proxy before/after),
`split.json` (the held-out anime), `loss.png`. The merged checkpoint carries `lineage.json`, a digest of
the record that export copies into the manifest, so a served version says where it came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from finetune.pairs import Pair

RUN_FILE = "run.json"
SPLIT_FILE = "split.json"
LOSS_PLOT = "loss.png"


class RunRecord(msgspec.Struct, kw_only=True):
    run_id: str
    base_source: str
    base_weights_sha256: str
    method: str
    lora: dict[str, object]
    train: dict[str, object]
    data_sha256: str
    pairs: dict[str, int]
    held_out_pairs: dict[str, int]
    split: dict[str, int]
    steps: int
    seconds: float
    batches_per_kind: dict[str, int]
    losses: list[float]
    loss_kinds: list[str]
    proxy_before: dict[str, float]
    proxy_after: dict[str, float]
    versions: dict[str, str]
    command: str


def data_hash(pairs: Mapping[str, Sequence[Pair]]) -> str:
    """A digest of every training pair in order: two runs on the same data say the same hash."""
    digest = hashlib.sha256()
    for kind in sorted(pairs):
        for pair in pairs[kind]:
            digest.update(f"{kind}\x1f{pair.anime_id}\x1f{pair.query}\x1f{pair.passage}\x1e".encode())
    return digest.hexdigest()


def file_hash(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, value: object) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n")


def plot_losses(losses: Sequence[float], kinds: Sequence[str], path: Path, title: str) -> None:
    """Each kind's batch losses against the step, with a running mean: kinds differ in scale (a batch
    of genre phrases has many right answers masked), so one mixed curve would mostly show the mix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for kind in sorted(set(kinds)):
        steps = [i + 1 for i, k in enumerate(kinds) if k == kind]
        values = [losses[i - 1] for i in steps]
        window = max(1, len(values) // 8)
        smoothed = [
            sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
            for i in range(len(values))
        ]
        (line,) = axes.plot(steps, smoothed, label=f"{kind} (mean of {window} batches)")
        axes.scatter(steps, values, s=4, alpha=0.3, color=line.get_color())
    axes.set_xlabel("step")
    axes.set_ylabel("contrastive loss")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
