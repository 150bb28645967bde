"""Which anime may be trained on: a split by franchise, with every plot-en anime held out.

A sequel's overview retells its first season, so a split by anime would leak: the model would see the
story it is then asked to find. Anime are grouped into franchises (connected components of the relevance
harness's title-stem franchises) and whole groups are held out: every group of a `plot-en` query, and a
stable share of the others by a hash of the group's first id (the same split for the same catalogue,
whatever the seed of training). The held-out ids are written into the run record; the harness restricts
its query sets to them (`python -m benchmarks.relevance --held-out RUN/split.json`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from service.domain.documents import AnimeDocument


@dataclass(frozen=True)
class Split:
    train: frozenset[str]
    held_out: frozenset[str]
    # Each anime → every anime of its franchise group (itself included).
    group_of: Mapping[str, frozenset[str]]


class SplitRecord(msgspec.Struct, frozen=True):
    """`split.json` in a run folder: what the harness needs to evaluate on unseen anime only."""

    held_out: list[str]
    train_count: int
    eval_share: float
    always_held_out: int


def franchise_groups(
    anime_ids: Iterable[str], franchise_of: Mapping[str, Iterable[str]]
) -> dict[str, frozenset[str]]:
    """Connected components of the franchise relation (A~B and B~C put A, B, C in one group)."""
    parent: dict[str, str] = {a: a for a in anime_ids}

    def root(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in parent:
        for b in franchise_of.get(a, ()):
            if b in parent:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, set[str]] = {}
    for a in parent:
        members.setdefault(root(a), set()).add(a)
    return {a: frozenset(members[root(a)]) for a in parent}


def _share_of(key: str) -> float:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_catalogue(
    documents: Sequence[AnimeDocument],
    franchise_of: Mapping[str, Iterable[str]],
    *,
    always_held_out: Iterable[str],
    eval_share: float,
) -> Split:
    if not 0 <= eval_share < 1:
        raise ValueError(f"eval_share must be in [0, 1), got {eval_share}")
    group_of = franchise_groups((d.anime_id for d in documents), franchise_of)
    forced = {a for a in always_held_out if a in group_of}
    held_out: set[str] = set()
    for group in set(group_of.values()):
        if group & forced or _share_of(min(group)) < eval_share:
            held_out |= group
    train = frozenset(group_of) - held_out
    return Split(train=train, held_out=frozenset(held_out), group_of=group_of)
