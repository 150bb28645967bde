"""Language centring and hub correction for synopsis vectors: pure functions and the record they need.

Two measured failures of a multilingual encoder on a mixed-language catalogue, and their fixes:

- **Language wins over content.** Each language sits in its own region of the space, so an English
  plot description ranks any English synopsis above the Chinese synopsis of the very story it
  describes (one English overview was the first answer to 11 of 25 English plot queries). Centring
  removes that: a synopsis vector minus the mean document vector of its language, a query minus the
  mean *query* vector of its language (the prompt moves queries too), both re-normalised. Measured on
  the whole catalogue (`benchmarks/relevance`): English plot descriptions found in the top 10 went from
  6% to 51%.
- **Hubs.** After centring, a few synopses are still the nearest neighbour of many unrelated queries.
  Following CSLS (Conneau et al., 2018), each anime gets a `hubness`: the mean similarity of its
  synopsis vectors to their k nearest English synopses of the catalogue (stand-ins for English queries,
  which the service does not keep), the largest over its synopses. Searches subtract
  `hub_weight x hubness` from the synopsis similarity, inside Qdrant (a score formula).

The means are statistics of the catalogue under one text model: a `Calibration` records them with the
model version, lives in the collection's metadata (every replica reads the same one), and is rebuilt by
a re-embedding reindex. Languages the catalogue has no synopsis in are centred by the mean of the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

from service.domain.languages import ENGLISH

# Texts per language embedded to estimate its means: the mean of 256 unit vectors is within ~1/16 of
# the catalogue's own (measured: the same relevance as the means over every synopsis).
CALIBRATION_SAMPLES = 256
# Fewer texts than this in a language: no mean of its own (the average of the others is used).
MIN_SAMPLES = 8
HUB_K = 10
HUB_WEIGHT = 1.0


class Calibration(msgspec.Struct, frozen=True, kw_only=True):
    text_model: str
    document_means: dict[str, list[float]]
    query_means: dict[str, list[float]]
    samples: dict[str, int]
    hub_language: str = ENGLISH
    hub_k: int = HUB_K
    hub_weight: float = HUB_WEIGHT
    created_at: str = ""

    @property
    def id(self) -> str:
        """Short digest of the means: stamped on points, so stale synopsis vectors can be told apart."""
        # Keys sorted: the record comes back from a store's JSON in whatever order it keeps.
        canonical = msgspec.json.encode(
            [self.text_model, self.document_means, self.query_means], order="sorted"
        )
        digest = hashlib.sha256(canonical)
        return digest.hexdigest()[:12]

    def document_center(self, language: str) -> np.ndarray:
        return _pick(self.document_means, language)

    def query_center(self, language: str) -> np.ndarray:
        return _pick(self.query_means, language)


def _pick(means: Mapping[str, list[float]], language: str) -> np.ndarray:
    if language in means:
        return np.asarray(means[language], dtype=np.float32)
    if not means:
        raise ValueError("a calibration without any language mean")
    return np.mean([np.asarray(v, dtype=np.float32) for v in means.values()], axis=0)


def sample_by_language(
    texts: Iterable[tuple[str, str, str]], per_language: int = CALIBRATION_SAMPLES
) -> dict[str, list[str]]:
    """Up to `per_language` texts per language from (key, language, text), spread evenly over the keys'
    sorted order (deterministic, and not just the oldest entries of a catalogue sorted by date)."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for key, language, text in texts:
        grouped.setdefault(language, []).append((key, text))
    picked: dict[str, list[str]] = {}
    for language, items in grouped.items():
        if len(items) < MIN_SAMPLES:
            continue
        items.sort()
        step = max(1, len(items) / per_language)
        picked[language] = [items[int(i * step)][1] for i in range(min(per_language, len(items)))]
    return picked


def build_calibration(
    text_model: str,
    documents: Mapping[str, np.ndarray],
    queries: Mapping[str, np.ndarray],
) -> Calibration:
    """Means of the same sample texts embedded as documents and as queries, per language."""
    return Calibration(
        text_model=text_model,
        document_means={lang: _mean(v) for lang, v in documents.items()},
        query_means={lang: _mean(v) for lang, v in queries.items()},
        samples={lang: len(v) for lang, v in documents.items()},
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _mean(vectors: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(vectors, dtype=np.float64).mean(axis=0)]


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def center_documents(vectors: np.ndarray, languages: Sequence[str], calibration: Calibration) -> np.ndarray:
    """Synopsis vectors minus their language's document mean, re-normalised."""
    if len(vectors) == 0:
        return np.asarray(vectors, dtype=np.float32)
    centers = np.stack([calibration.document_center(lang) for lang in languages])
    return normalize(np.asarray(vectors, dtype=np.float32) - centers)


def center_query(vector: np.ndarray, language: str, calibration: Calibration) -> np.ndarray:
    """A query vector minus its language's query mean, re-normalised."""
    return normalize(np.asarray(vector, dtype=np.float32) - calibration.query_center(language))


def hubness(
    vectors: np.ndarray,
    owners: Sequence[str],
    reference: np.ndarray,
    k: int = HUB_K,
    reference_owners: Sequence[str] | None = None,
) -> dict[str, float]:
    """Per owner: the largest, over its vectors, of the mean similarity to the k nearest reference vectors
    owned by other anime.

    An anime's own synopses are left out of its neighbours: its English overview is the nearest English
    text to its Chinese summary (the same story), and counting it would penalise exactly the anime that
    have both, the well-known ones. Without `reference_owners`, an identical vector stands for itself.
    """
    out: dict[str, float] = {}
    reference = np.asarray(reference, dtype=np.float32)
    if len(vectors) == 0 or len(reference) <= k:
        return dict.fromkeys(owners, 0.0)
    ref_owners = np.asarray(reference_owners, dtype=object) if reference_owners is not None else None
    for start in range(0, len(vectors), 1024):
        block = np.asarray(vectors[start : start + 1024], dtype=np.float32)
        block_owners = owners[start : start + 1024]
        sims = block @ reference.T
        if ref_owners is not None:
            sims[np.asarray(block_owners, dtype=object)[:, None] == ref_owners[None, :]] = -np.inf
        else:
            sims[sims > 0.99999] = -np.inf  # itself
        nearest = -np.partition(-sims, k - 1, axis=1)[:, :k]
        for owner, value in zip(block_owners, nearest.mean(axis=1), strict=True):
            out[owner] = max(out.get(owner, -np.inf), float(value))
    return out


def hub_share(top_ids: Sequence[str]) -> tuple[float, str | None]:
    """The largest share of queries that one anime answers first, and which anime: the hub measure
    RESULTS.md reports (1/number of queries when every query has its own first answer)."""
    if not top_ids:
        return 0.0, None
    counts: dict[str, int] = {}
    for anime_id in top_ids:
        counts[anime_id] = counts.get(anime_id, 0) + 1
    anime_id, count = max(counts.items(), key=lambda item: (item[1], item[0]))
    return count / len(top_ids), anime_id
