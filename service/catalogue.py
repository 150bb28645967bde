"""Putting anime in the store: the one path behind the ingest CLI and the admin upsert API.

Per document: check client-provided vectors against the collection, load pictures, embed what is
missing (text with text_embedder, pictures with image_embedder), stamp model versions and time,
then write every good document in one acknowledged upsert. A bad document fails alone.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.documents import AnimeDocument, SparseVectorIn, to_payload
from service.encoders.sparse import SparseVector
from service.image_sources import SLOTS, ImageResolver
from service.runtime import IMAGE_VECTORS, TEXT_SPARSE_VECTOR, TEXT_VECTOR, Runtime
from service.store.types import StoredPoint
from service.text_compose import compose_text

CLIENT_VERSION = "client"
_SLOT_VECTORS = dict(zip(SLOTS, IMAGE_VECTORS, strict=True))


@dataclass(frozen=True)
class ItemError:
    code: str
    message: str
    field: str | None = None


@dataclass
class ItemOutcome:
    index: int
    anime_id: str | None
    errors: list[ItemError] = field(default_factory=list)
    warnings: list[ItemError] = field(default_factory=list)
    vectors: list[str] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return not self.errors


@dataclass
class PutReport:
    items: list[ItemOutcome]
    seconds: float = 0.0

    @property
    def stored(self) -> int:
        return sum(item.stored for item in self.items)

    @property
    def failed(self) -> int:
        return len(self.items) - self.stored


def parse_items(raw_items: Sequence[Any]) -> tuple[list[AnimeDocument | None], list[ItemOutcome]]:
    """Validate each raw JSON object on its own, so one bad document cannot hide the others."""
    documents: list[AnimeDocument | None] = []
    outcomes: list[ItemOutcome] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_items):
        anime_id = raw.get("anime_id") if isinstance(raw, dict) else None
        outcome = ItemOutcome(index=index, anime_id=anime_id if isinstance(anime_id, str) else None)
        try:
            doc = msgspec.convert(raw, AnimeDocument)
        except msgspec.ValidationError as exc:
            outcome.errors.append(ItemError("validation_error", str(exc), _path(str(exc))))
            documents.append(None)
        else:
            if doc.anime_id in seen:
                outcome.errors.append(
                    ItemError("duplicate_id", f"'{doc.anime_id}' appears twice in this batch")
                )
                documents.append(None)
            else:
                seen.add(doc.anime_id)
                documents.append(doc)
        outcomes.append(outcome)
    return documents, outcomes


def _path(message: str) -> str | None:
    marker = "at `$."
    return message.split(marker, 1)[1].split("`")[0] if marker in message else None


def check_client_vectors(runtime: Runtime, doc: AnimeDocument) -> list[ItemError]:
    """Client vectors must name a vector of the collection, with its dims (or indices+values if sparse)."""
    errors = []
    schema = runtime.store.schema
    for name, value in (doc.vectors or {}).items():
        where = f"vectors.{name}"
        if name in schema.dense:
            if isinstance(value, SparseVectorIn):
                errors.append(
                    ItemError("vector_type_mismatch", f"vector '{name}' is dense, got a sparse vector", where)
                )
            elif len(value) != schema.dense[name]:
                errors.append(
                    ItemError(
                        "vector_dimension_mismatch",
                        f"vector '{name}' has {len(value)} values, the collection {schema.dense[name]}",
                        where,
                    )
                )
        elif name in schema.sparse:
            if not isinstance(value, SparseVectorIn):
                errors.append(
                    ItemError(
                        "vector_type_mismatch", f"vector '{name}' is sparse: give indices and values", where
                    )
                )
        else:
            known = ", ".join([*schema.dense, *schema.sparse])
            errors.append(
                ItemError("unknown_vector", f"the collection has no vector '{name}' (it has {known})", where)
            )
    return errors


async def put_documents(
    runtime: Runtime,
    documents: Sequence[AnimeDocument | None],
    outcomes: list[ItemOutcome] | None = None,
    *,
    images: ImageResolver | None = None,
    strict_images: bool = True,
) -> PutReport:
    """Embed and store `documents` (None = already failed validation); acknowledged on return.

    `strict_images`: a picture that cannot be loaded fails its document (the API: the client should
    know); otherwise the document is stored without that vector and the problem is a warning (bulk
    ingest of a catalogue whose URLs partly rot).
    """
    started = time.perf_counter()
    if outcomes is None:
        outcomes = [ItemOutcome(index=i, anime_id=d.anime_id if d else None) for i, d in enumerate(documents)]
    for doc, outcome in zip(documents, outcomes, strict=True):
        if doc is not None:
            outcome.errors += check_client_vectors(runtime, doc)
    candidates = [
        (doc, out) for doc, out in zip(documents, outcomes, strict=True) if doc is not None and out.stored
    ]

    pictures: dict[tuple[str, str], Any] = {}
    if runtime.image is not None and candidates:
        need = [doc for doc, _ in candidates]
        resolver = images or ImageResolver(limits=runtime.image_limits, decoder=runtime.decoder)
        resolved = await resolver.resolve(need)
        by_id = {out.anime_id: out for _, out in candidates}
        for problem in resolved.problems:
            issue = ItemError(problem.code, problem.message, f"{problem.slot}_data")
            (by_id[problem.anime_id].errors if strict_images else by_id[problem.anime_id].warnings).append(
                issue
            )
        for anime_id, slots in resolved.images.items():
            for slot, image in slots.items():
                pictures[(anime_id, slot)] = image
        candidates = [(doc, out) for doc, out in candidates if out.stored]

    points = await embed_documents(runtime, [doc for doc, _ in candidates], pictures)
    await runtime.store.upsert(points)
    for point, (_, outcome) in zip(points, candidates, strict=True):
        outcome.vectors = sorted(point.vectors)
    return PutReport(items=outcomes, seconds=time.perf_counter() - started)


async def embed_documents(
    runtime: Runtime, documents: Sequence[AnimeDocument], pictures: dict[tuple[str, str], Any] | None = None
) -> list[StoredPoint]:
    """Points for `documents`: client vectors as given, the rest embedded, stamped with versions."""
    pictures = pictures or {}
    own_text = [i for i, d in enumerate(documents) if TEXT_VECTOR not in (d.vectors or {})]
    text = await runtime.text.encode([compose_text(documents[i]) for i in own_text])
    text_rows = {i: row for row, i in enumerate(own_text)}

    slots = [
        (doc.anime_id, slot, pictures[(doc.anime_id, slot)])
        for doc in documents
        for slot in SLOTS
        if (doc.anime_id, slot) in pictures and _SLOT_VECTORS[slot] not in (doc.vectors or {})
    ]
    image_vectors: dict[tuple[str, str], list[float]] = {}
    if slots and runtime.image is not None:
        encoded = await runtime.image.encode([image for _, _, image in slots])
        image_vectors = {(a, s): encoded[i].tolist() for i, (a, s, _) in enumerate(slots)}

    stamp = dt.datetime.now(dt.timezone.utc)
    points = []
    for i, doc in enumerate(documents):
        vectors: dict[str, Any] = {}
        versions: dict[str, str] = {}
        if i in text_rows:
            row = text_rows[i]
            vectors[TEXT_VECTOR] = text.dense[row].tolist()
            if text.sparse is not None and len(text.sparse[row]):
                vectors[TEXT_SPARSE_VECTOR] = text.sparse[row]
            versions["text"] = runtime.text.manifest.model_version
        for slot, name in _SLOT_VECTORS.items():
            if (doc.anime_id, slot) in image_vectors:
                vectors[name] = image_vectors[(doc.anime_id, slot)]
                versions["image"] = runtime.image.manifest.model_version  # type: ignore[union-attr]
        for name, value in (doc.vectors or {}).items():
            vectors[name] = (
                SparseVector(value.indices, value.values) if isinstance(value, SparseVectorIn) else value
            )
            versions["text" if name in (TEXT_VECTOR, TEXT_SPARSE_VECTOR) else "image"] = CLIENT_VERSION
        payload = to_payload(doc) | {
            "model_version": versions.get("text", CLIENT_VERSION),
            "model_versions": versions,
            "updated_at": stamp.isoformat(timespec="seconds"),
            "updated_at_ts": stamp.timestamp(),
        }
        points.append(StoredPoint(anime_id=doc.anime_id, vectors=vectors, payload=payload))
    return points
