"""The contrastive LoRA loop: in-batch negatives, one kind of pair per batch, on the embedding module.

The module trained is the one export turns into ONNX (`export.text_model.TextEmbeddingModule`: encoder,
the checkpoint's pooling, L2 norm), so training and serving agree on what an embedding is, prompts
included (E5's `query: ` / `passage: `). Adapters (peft's LoRA) go on the encoder's linear layers;
everything else stays frozen, which is what lets 2 CPU cores train a useful adapter in minutes.

Each batch holds pairs of one kind: mixing titles with plots would give the model an easy way to tell
a batch's negatives apart (a name is never a synopsis) instead of the hard one we want it to learn.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from finetune.pairs import Pair

# peft's names for the encoder's linear layers in BERT/XLM-R (attention projections and the MLP).
DEFAULT_TARGETS = ("query", "key", "value", "dense")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-4
    warmup_steps: int = 20
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    targets: tuple[str, ...] = DEFAULT_TARGETS
    # Encoder layers that get adapters; None: the upper half. Gradients then stop halfway down, which
    # nearly halves a step's time on CPU (measured 9.0 s -> 5.2 s for 32 pairs on e5-small).
    layers: tuple[int, ...] | None = None
    # InfoNCE temperature: E5 was trained at 0.01; a little softer keeps a small adapter stable.
    temperature: float = 0.05
    query_tokens: int = 64
    passage_tokens: int = 128
    # Share of batches per kind of pair (normalised; a kind with no pairs is skipped).
    kind_weights: Mapping[str, float] = field(
        default_factory=lambda: {"plot": 0.6, "title": 0.2, "labels": 0.2}
    )
    seed: int = 0
    log_every: int = 10


@dataclass
class TrainResult:
    losses: list[float]
    seconds: float
    batches_per_kind: dict[str, int]
    # The kind of pair of each step's batch (losses of different kinds are not on one scale).
    kinds: list[str]


class Embedder:
    """Tokenize with the model's prompt, run the embedding module: the service's `TextEncoder` in torch."""

    def __init__(self, module: torch.nn.Module, tokenizer, query_prompt: str, document_prompt: str) -> None:
        self.module = module
        self.tokenizer = tokenizer
        self.prompts = {"query": query_prompt, "document": document_prompt}

    def __call__(self, texts: Sequence[str], kind: str, max_tokens: int) -> torch.Tensor:
        batch = self.tokenizer(
            [self.prompts[kind] + t for t in texts],
            padding=True,
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        return self.module(batch["input_ids"], batch["attention_mask"])[0]


def negatives_mask(pairs: Sequence[Pair]) -> torch.Tensor:
    """True where pair j's passage is also a right answer to pair i's query (off the diagonal).

    Symmetric, so the same mask serves the query→passage and passage→query directions.
    """
    n = len(pairs)
    mask = torch.zeros((n, n), dtype=torch.bool)
    for i, a in enumerate(pairs):
        for j, b in enumerate(pairs):
            if i != j and (
                b.anime_id in a.also_right or a.anime_id in b.also_right or a.anime_id == b.anime_id
            ):
                mask[i, j] = True
    return mask


def contrastive_loss(
    queries: torch.Tensor, passages: torch.Tensor, mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Symmetric InfoNCE over the batch; masked entries are neither positives nor negatives."""
    logits = queries @ passages.T / temperature
    logits = logits.masked_fill(mask, float("-inf"))
    target = torch.arange(len(queries))
    forward = torch.nn.functional.cross_entropy(logits, target)
    backward = torch.nn.functional.cross_entropy(logits.T, target)
    return (forward + backward) / 2


class BatchSampler:
    """Batches of one kind, the kind drawn by weight; each kind walks a reshuffled order (epochs)."""

    def __init__(
        self, pairs: Mapping[str, Sequence[Pair]], weights: Mapping[str, float], batch_size: int, seed: int
    ):
        self.pairs = {k: list(v) for k, v in pairs.items() if v and weights.get(k, 0) > 0}
        if not self.pairs:
            raise ValueError("no pairs of any weighted kind to train on")
        self.kinds = sorted(self.pairs)
        total = sum(weights[k] for k in self.kinds)
        self.weights = [weights[k] / total for k in self.kinds]
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.orders: dict[str, list[int]] = {}
        self.positions: dict[str, int] = {}

    def _next_index(self, kind: str) -> int:
        order = self.orders.get(kind)
        if order is None or self.positions[kind] >= len(order):
            order = list(range(len(self.pairs[kind])))
            self.rng.shuffle(order)
            self.orders[kind] = order
            self.positions[kind] = 0
        index = order[self.positions[kind]]
        self.positions[kind] += 1
        return index

    def next(self) -> tuple[str, list[Pair]]:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        size = min(self.batch_size, len(self.pairs[kind]))
        chosen: list[Pair] = []
        seen: set[int] = set()
        while len(chosen) < size:
            index = self._next_index(kind)
            if index not in seen:
                seen.add(index)
                chosen.append(self.pairs[kind][index])
        return kind, chosen


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def add_adapters(module: torch.nn.Module, config: TrainConfig) -> tuple[int, ...]:
    """LoRA on the encoder's target linear layers of `config.layers`; every other weight frozen.

    Returns the layers adapted (the run record keeps them)."""
    from peft import LoraConfig, get_peft_model

    layers = config.layers
    if layers is None:
        count = int(module.encoder.config.num_hidden_layers)
        layers = tuple(range(count // 2, count))
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.targets),
        layers_to_transform=list(layers),
    )
    module.encoder = get_peft_model(module.encoder, lora)
    return layers


def merge_adapters(module: torch.nn.Module) -> torch.nn.Module:
    """The encoder with LoRA folded into its weights: a plain checkpoint export reads like any other."""
    module.encoder = module.encoder.merge_and_unload()
    return module.eval()


def train(
    embed: Embedder,
    pairs: Mapping[str, Sequence[Pair]],
    config: TrainConfig,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> TrainResult:
    seed_everything(config.seed)
    module = embed.module
    module.train()
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.01)
    sampler = BatchSampler(pairs, config.kind_weights, config.batch_size, config.seed)
    losses: list[float] = []
    kinds: list[str] = []
    per_kind: dict[str, int] = dict.fromkeys(sampler.kinds, 0)
    started = time.monotonic()
    report(
        f"[finetune] {config.steps} steps of {config.batch_size} pairs; "
        f"kinds {dict(zip(sampler.kinds, sampler.weights, strict=True))}"
    )
    for step in range(config.steps):
        kind, batch = sampler.next()
        per_kind[kind] += 1
        kinds.append(kind)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        queries = embed([p.query for p in batch], "query", config.query_tokens)
        # One kind per batch, so one way of embedding its passages (the way the service stores them).
        passages = embed([p.passage for p in batch], batch[0].passage_kind, config.passage_tokens)
        loss = contrastive_loss(queries, passages, negatives_mask(batch), config.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            elapsed = time.monotonic() - started
            recent = losses[-config.log_every :]
            report(
                f"[finetune] step {done}/{config.steps} ({done / config.steps:.0%}) "
                f"loss {sum(recent) / len(recent):.4f} "
                f"{elapsed:.0f}s elapsed, eta {elapsed / done * (config.steps - done):.0f}s"
            )
    module.eval()
    return TrainResult(
        losses=losses, seconds=time.monotonic() - started, batches_per_kind=per_kind, kinds=kinds
    )


@torch.no_grad()
def retrieval_accuracy(
    embed: Embedder, pairs: Sequence[Pair], passage_tokens: int, batch: int = 32
) -> dict[str, float]:
    """Each query's rank of its own passage among every pair's passage (held-out pairs): recall@1/@10.

    A quick proxy run before and after training; the relevance harness on the whole index is the judge.
    """
    if not pairs:
        return {}
    passages = sorted({p.passage for p in pairs})
    position = {text: i for i, text in enumerate(passages)}
    encoded_passages = torch.cat(
        [embed(passages[i : i + batch], "document", passage_tokens) for i in range(0, len(passages), batch)]
    )
    hits1 = hits10 = 0
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        scores = embed([p.query for p in chunk], "query", passage_tokens) @ encoded_passages.T
        order = scores.argsort(dim=1, descending=True)
        for row, pair in enumerate(chunk):
            rank = int((order[row] == position[pair.passage]).nonzero()[0, 0])
            hits1 += rank < 1
            hits10 += rank < 10
    return {
        "recall@1": hits1 / len(pairs),
        "recall@10": hits10 / len(pairs),
        "queries": float(len(pairs)),
        "passages": float(len(passages)),
    }
