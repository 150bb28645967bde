"""Which version of the text model answers a request, and when a candidate may become the default.

Pure functions and values; the state they describe lives in the collection's metadata (every replica
reads the same one) and the settings that seed it.

- **The split.** A candidate version (a fine-tune) gets a configured share of clients
  (`TEXT_MODEL_SPLIT=2:0.1`). A client is its API key's name, else its `X-Client-Id` header; its
  bucket is a hash of that, so a client sees one version consistently (its cached answers, its
  pagination) and shares hold over many clients. A request with neither goes to the default.
- **The override.** An admin may ask for a version explicitly (`model_version` in the request), to
  test a candidate before any user sees it.
- **Promotion.** A candidate becomes the default only when the relevance harness, comparing it with
  the default on held-out anime, says it is better by the rule (`promotion_verdict`); the previous
  default is kept for `rollback`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# The rule's defaults: the query kind fine-tuning is for must gain (the 95% interval of the paired
# difference above zero), and no other kind may lose more than this much of hit@10 or nDCG@10.
PRIMARY_SET = "plot-en"
PRIMARY_METRIC = "hit10"
GUARDED_METRICS = ("hit10", "ndcg")
MAX_LOSS = 0.02


@dataclass(frozen=True)
class Caller:
    """Who asks, as far as the version choice cares: the client the split buckets (an API key's name,
    else the X-Client-Id header; None: anonymous) and whether it may override the version."""

    client: str | None = None
    may_override: bool = True


class RolloutError(ValueError):
    """A split or a version that cannot be served as asked; the message says why."""


@dataclass(frozen=True)
class Rollout:
    default: int
    # Candidate version -> share of clients (0..1, the shares summing to at most 1).
    shares: Mapping[int, float] = field(default_factory=dict)
    # Earlier defaults, the most recent last: what `rollback` returns to.
    history: tuple[int, ...] = ()

    def pick(self, client: str | None) -> int:
        """The version for a client: a stable bucket in [0, 1) walks the candidates' shares."""
        if client is None or not self.shares:
            return self.default
        point = bucket(client)
        edge = 0.0
        for version, share in sorted(self.shares.items()):
            edge += share
            if point < edge:
                return version
        return self.default

    def promoted(self, version: int) -> Rollout:
        """`version` as the default; the old default joins the history; `version` leaves the split."""
        if version == self.default:
            return self
        shares = {v: s for v, s in self.shares.items() if v != version}
        return Rollout(version, shares, (*self.history, self.default))

    def rolled_back(self) -> Rollout:
        if not self.history:
            raise RolloutError(f"version {self.default} has no earlier default to roll back to")
        return Rollout(self.history[-1], dict(self.shares), self.history[:-1])


def bucket(client: str) -> float:
    """A client's place in [0, 1): the first 8 bytes of SHA-256 of its name (stable across replicas)."""
    return int.from_bytes(hashlib.sha256(client.encode()).digest()[:8], "big") / 2**64


def parse_split(text: str | None) -> dict[int, float]:
    """`2:0.1` or `2:0.1,3:0.05` → {2: 0.1, 3: 0.05}; empty → {}."""
    shares: dict[int, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        version, _, share = part.partition(":")
        try:
            value = float(share)
            number = int(version)
        except ValueError as exc:
            raise RolloutError(f"TEXT_MODEL_SPLIT: expected version:share pairs, got {part!r}") from exc
        if not 0 <= value <= 1:
            raise RolloutError(f"TEXT_MODEL_SPLIT: share of version {number} must lie in [0, 1], got {value}")
        shares[number] = value
    if sum(shares.values()) > 1 + 1e-9:
        raise RolloutError(f"TEXT_MODEL_SPLIT: shares add up to {sum(shares.values()):g}, more than 1")
    return shares


def check_versions(rollout: Rollout, served: Iterable[int]) -> None:
    """Every version the rollout names must be served (exported and loaded)."""
    available = set(served)
    named = {rollout.default, *rollout.shares}
    missing = sorted(named - available)
    if missing:
        raise RolloutError(
            f"text model version(s) {missing} are not served (served: {sorted(available)}): export them or "
            "change TEXT_MODEL_DEFAULT / TEXT_MODEL_SPLIT"
        )


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reasons: list[str]


def promotion_verdict(
    comparisons: Sequence[Mapping[str, object]],
    *,
    primary_set: str = PRIMARY_SET,
    primary_metric: str = PRIMARY_METRIC,
    guarded: Sequence[str] = GUARDED_METRICS,
    max_loss: float = MAX_LOSS,
) -> Verdict:
    """Whether the harness's comparison (candidate against the default, `benchmarks.relevance
    --finetuned`, its JSON `comparisons`) allows promotion: the primary kind's metric must gain with its
    whole 95% interval above zero, and no kind may lose more than `max_loss` on a guarded metric."""
    reasons: list[str] = []
    primary = [
        c for c in comparisons if c.get("query_set") == primary_set and c.get("metric") == primary_metric
    ]
    if not primary:
        return Verdict(False, [f"the evidence has no {primary_metric} comparison on {primary_set}"])
    row = primary[0]
    low = float(row["low"])  # type: ignore[arg-type]
    delta = float(row["delta"])  # type: ignore[arg-type]
    ok = low > 0
    reasons.append(
        f"{primary_set} {primary_metric}: {delta:+.3f} (95% interval lower bound {low:+.3f}) "
        + ("gains" if ok else "does not gain for sure")
    )
    for comparison in comparisons:
        metric = comparison.get("metric")
        if metric not in guarded or comparison.get("query_set") == primary_set:
            continue
        change = float(comparison["delta"])  # type: ignore[arg-type]
        if change < -max_loss:
            ok = False
            reasons.append(f"{comparison['query_set']} {metric} loses {-change:.3f} (more than {max_loss:g})")
    return Verdict(ok, reasons)
