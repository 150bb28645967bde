"""Putting anime in the store: the one path behind the ingest CLI and the admin upsert API.

Per document: check client-provided vectors against the collection, load pictures, embed what is
missing (text with text_embedder, pictures with image_embedder), stamp model versions and time,
then write every good document in one acknowledged upsert. A bad document fails alone.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np
from qdrant_client import models

from service.catalogue.pictures import SLOTS, ImageResolver
from service.domain.calibration import (
    Calibration,
    build_calibration,
    center_documents,
    hubness,
    sample_by_language,
)
from service.domain.composition import facts_text, lexical_text, synopsis_texts, title_texts
from service.domain.documents import AnimeDocument, SparseVectorIn, to_payload
from service.domain.sparse import SparseVector
from service.domain.vectors import (
    IMAGE_VECTORS,
    TEXT_LEXICAL_VECTOR,
)
from service.encoders.sparse import merge_max
from service.encoders.text import EmbeddingMemo
from service.runtime import Runtime, TextModel
from service.store.types import StoredPoint

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
    hubs: bool = True,
    memo: EmbeddingMemo | None = None,
) -> PutReport:
    """Embed and store `documents` (None = already failed validation); acknowledged on return.

    `strict_images`: a picture that cannot be loaded fails its document (the API: the client should
    know); otherwise the document is stored without that vector and the problem is a warning (bulk
    ingest of a catalogue whose URLs partly rot). `hubs`: compute the stored anime's hubness now
    (bulk ingest turns it off and refreshes every anime's once at the end).
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

    points = await embed_documents(runtime, [doc for doc, _ in candidates], pictures, memo=memo)
    await runtime.store.upsert(points)
    if hubs and points:
        for model in await runtime.held_models():
            synopsis = model.names.synopsis
            await refresh_hubness(runtime, [p.anime_id for p in points if synopsis in p.vectors], model=model)
    for point, (_, outcome) in zip(points, candidates, strict=True):
        outcome.vectors = sorted(point.vectors)
    return PutReport(items=outcomes, seconds=time.perf_counter() - started)


async def embed_documents(
    runtime: Runtime,
    documents: Sequence[AnimeDocument],
    pictures: dict[tuple[str, str], Any] | None = None,
    *,
    calibrations: Mapping[int, Calibration | None] | Literal["live"] = "live",
    text_models: Sequence[TextModel] | None = None,
    memo: EmbeddingMemo | None = None,
) -> list[StoredPoint]:
    """Points for `documents`: client vectors as given, the rest embedded, stamped with versions.

    Per anime and text model version (`text_models`: those the live collection holds unless given; a
    reindex passes every served one): its `title` holds every name (embedded as queries: name against
    name is a symmetric task), `facts` the facts line (as a document), `synopsis` every synopsis (as
    documents), centred with that version's calibration (the live collection's unless `calibrations`
    gives them: a reindex passes the new ones), `text_sparse` (BGE-m3) the largest learned weight of
    each token over all those texts. `text_lexical` (BM25 over all the text) is the same for every
    version.
    """
    pictures = pictures or {}
    models_ = list(text_models) if text_models is not None else await runtime.held_models()
    if calibrations == "live":
        calibrations = {m.version: await runtime.calibration(m) for m in models_}
    schema = runtime.store.schema
    given = [set(d.vectors or {}) for d in documents]
    embedded = [
        await _embed_text(runtime, model, documents, given, calibrations.get(model.version), memo)
        for model in models_
    ]

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
    default = runtime.default_model.version
    points = []
    for i, doc in enumerate(documents):
        vectors: dict[str, Any] = {}
        versions: dict[str, str] = {}
        languages: list[str] = []
        for text in embedded:
            own = text.vectors.get(i, {})
            vectors |= own
            if own:
                versions[_text_key(text.model.version, default)] = text.model.manifest.model_version
                if text.model.names.synopsis in own:
                    versions[_calibration_key(text.model.version, default)] = (
                        text.calibration.id if text.calibration is not None else "none"
                    )
            languages = languages or text.languages.get(i, [])
        if TEXT_LEXICAL_VECTOR not in given[i]:
            lexical = runtime.lexical.documents([lexical_text(doc)])[0]
            if len(lexical):
                vectors[TEXT_LEXICAL_VECTOR] = lexical
                versions["lexical"] = runtime.lexical.version
        for slot, name in _SLOT_VECTORS.items():
            if (doc.anime_id, slot) in image_vectors:
                vectors[name] = image_vectors[(doc.anime_id, slot)]
                versions["image"] = runtime.image.manifest.model_version  # type: ignore[union-attr]
        for name, value in (doc.vectors or {}).items():
            if isinstance(value, SparseVectorIn):
                vectors[name] = SparseVector(value.indices, value.values)
            else:
                # A client vector for a multivector name is its one entry.
                vectors[name] = [value] if name in schema.multi else value
            # Where the service embedded part of a model's vectors, that model's version stands.
            versions.setdefault(_version_key(runtime, name, default), CLIENT_VERSION)
        payload = to_payload(doc) | {
            "model_version": versions.get("text", CLIENT_VERSION),
            "model_versions": versions,
            "synopsis_languages": languages,
            "updated_at": stamp.isoformat(timespec="seconds"),
            "updated_at_ts": stamp.timestamp(),
        }
        points.append(StoredPoint(anime_id=doc.anime_id, vectors=vectors, payload=payload))
    return points


@dataclass(frozen=True)
class _TextVectors:
    model: TextModel
    calibration: Calibration | None
    # Document position -> this version's vectors of it, and its synopses' languages.
    vectors: dict[int, dict[str, Any]]
    languages: dict[int, list[str]]


async def _embed_text(
    runtime: Runtime,
    model: TextModel,
    documents: Sequence[AnimeDocument],
    given: Sequence[set[str]],
    calibration: Calibration | None,
    memo: EmbeddingMemo | None,
) -> _TextVectors:
    """One text model version's vectors of every document (those the client did not give)."""
    names = model.names
    titles = {i: title_texts(d) for i, d in enumerate(documents) if names.title not in given[i]}
    facts = {i: f for i, d in enumerate(documents) if names.facts not in given[i] if (f := facts_text(d))}
    synopses = {
        i: found
        for i, d in enumerate(documents)
        if names.synopsis not in given[i]
        if (found := synopsis_texts(d))
    }
    text = model.encoder
    # A memo holds one model's vectors: another version embeds the same texts differently.
    memo = memo if model.version == runtime.default_model.version else None
    name_rows = _Rows(titles)
    fact_rows = _Rows({i: [f] for i, f in facts.items()})
    synopsis_rows = _Rows({i: [t for _, t in found] for i, found in synopses.items()})
    name_vectors = await text.encode(name_rows.texts, kind="query", memo=memo)
    fact_vectors = await text.encode(fact_rows.texts, kind="document", memo=memo)
    synopsis_vectors = await text.encode(synopsis_rows.texts, kind="document", memo=memo)
    languages = [lang for i in synopsis_rows.owners_order for lang, _ in synopses[i]]
    centred = (
        center_documents(synopsis_vectors.dense, languages, calibration)
        if calibration is not None
        else synopsis_vectors.dense
    )
    sparse_wanted = names.sparse in runtime.store.schema.sparse
    out: dict[int, dict[str, Any]] = {}
    for i in range(len(documents)):
        vectors: dict[str, Any] = {}
        if name_rows.rows(i):
            vectors[names.title] = [name_vectors.dense[r].tolist() for r in name_rows.rows(i)]
        for r in fact_rows.rows(i):
            vectors[names.facts] = fact_vectors.dense[r].tolist()
        if synopsis_rows.rows(i):
            vectors[names.synopsis] = [centred[r].tolist() for r in synopsis_rows.rows(i)]
        if sparse_wanted and names.sparse not in given[i]:
            learned = merge_max(
                [
                    *(name_vectors.sparse[r] for r in name_rows.rows(i)),  # type: ignore[index]
                    *(fact_vectors.sparse[r] for r in fact_rows.rows(i)),  # type: ignore[index]
                    *(synopsis_vectors.sparse[r] for r in synopsis_rows.rows(i)),  # type: ignore[index]
                ]
            )
            if len(learned):
                vectors[names.sparse] = learned
        if vectors:
            out[i] = vectors
    return _TextVectors(
        model, calibration, out, {i: [lang for lang, _ in found] for i, found in synopses.items()}
    )


def _text_key(version: int, default: int) -> str:
    """`model_versions` key of a text version: `text` for the default (what `model_version` reports)."""
    return "text" if version == default else f"text_v{version}"


def _calibration_key(version: int, default: int) -> str:
    return "calibration" if version == default else f"calibration_v{version}"


def _version_key(runtime: Runtime, name: str, default: int) -> str:
    """Which model a client-given vector stands in for, by the name it was given under."""
    if name == TEXT_LEXICAL_VECTOR:
        return "lexical"
    for model in runtime.text_models.values():
        if name in (*model.names.dense, model.names.sparse):
            return _text_key(model.version, default)
    return "image"


class _Rows:
    """Texts of many documents in one flat list (one encode call), and which rows are whose."""

    def __init__(self, per_document: dict[int, list[str]]) -> None:
        self.texts: list[str] = []
        self._rows: dict[int, list[int]] = {}
        self.owners_order: list[int] = []
        for owner, texts in per_document.items():
            self._rows[owner] = list(range(len(self.texts), len(self.texts) + len(texts)))
            self.texts += texts
            self.owners_order.append(owner)

    def rows(self, owner: int) -> list[int]:
        return self._rows.get(owner, [])


# -- calibration and hubs (service/domain/calibration.py) ---------------------------------------------------


async def calibrate(
    runtime: Runtime,
    documents: Sequence[AnimeDocument],
    memo: EmbeddingMemo | None = None,
    model: TextModel | None = None,
) -> Calibration | None:
    """Language means of a text model version (the default unless given) over a sample of these
    documents' synopses; None when no language has enough synopses to stand for it (a handful of
    documents: nothing to centre on)."""
    model = model or runtime.default_model
    if model is not runtime.default_model:
        memo = None  # the memo holds the default version's vectors
    sample = sample_by_language(
        (doc.anime_id, language, text) for doc in documents for language, text in synopsis_texts(doc)
    )
    if not sample:
        return None
    as_documents: dict[str, np.ndarray] = {}
    as_queries: dict[str, np.ndarray] = {}
    for language, texts in sample.items():
        # With a memo, the document half is the very vectors ingest stores for these synopses.
        as_documents[language] = (await model.encoder.encode(texts, kind="document", memo=memo)).dense
        as_queries[language] = (await model.encoder.encode(texts, kind="query")).dense
    return build_calibration(model.manifest.model_version, as_documents, as_queries)


async def synopsis_vectors(
    runtime: Runtime,
    collection: str | None = None,
    scroll_filter: Any = None,
    model: TextModel | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Every stored synopsis vector of a text model version (the default unless given) in a collection
    (the live one by default), with owner and language."""
    model = model or runtime.default_model
    synopsis = model.names.synopsis
    store = runtime.store
    name = collection or await store.live_collection()
    rows: list[list[float]] = []
    owners: list[str] = []
    languages: list[str] = []
    offset: Any = None
    while name is not None:
        records, offset = await store.scroll(
            name, limit=512, offset=offset, with_vectors=[synopsis], scroll_filter=scroll_filter
        )
        for record in records:
            vectors = record.vectors.get(synopsis) or []
            tags = list(record.payload.get("synopsis_languages") or [])
            for position, vector in enumerate(vectors):
                rows.append(vector)  # type: ignore[arg-type]
                owners.append(record.anime_id)
                languages.append(tags[position] if position < len(tags) else "und")
        if offset is None:
            break
    matrix = np.asarray(rows, dtype=np.float32) if rows else np.zeros((0, model.encoder.dim), np.float32)
    return matrix, owners, languages


async def refresh_hubness(
    runtime: Runtime,
    anime_ids: Sequence[str] | None = None,
    *,
    collection: str | None = None,
    calibration: Calibration | None = None,
    model: TextModel | None = None,
) -> dict[str, float]:
    """Compute and store a text model version's `hubness` (the default's unless given) for these anime
    of the live collection (every anime of `collection` when `anime_ids` is None) against its English
    synopses; returns what was stored. A collection without a calibration has nothing to correct."""
    model = model or runtime.default_model
    calibration = calibration or await runtime.store.calibration(collection, key=model.names.calibration_key)
    if calibration is None:
        return {}
    english = models.Filter(
        must=[
            models.FieldCondition(
                key="synopsis_languages", match=models.MatchAny(any=[calibration.hub_language])
            )
        ]
    )
    if anime_ids is None:
        vectors, owners, languages = await synopsis_vectors(runtime, collection, model=model)
        in_reference = [lang == calibration.hub_language for lang in languages]
        reference = vectors[in_reference]
        reference_owners = [o for o, keep in zip(owners, in_reference, strict=True) if keep]
    else:
        found = await runtime.store.get_many(anime_ids)
        ref_vectors, ref_owners, ref_languages = await synopsis_vectors(runtime, collection, english, model)
        in_reference = [lang == calibration.hub_language for lang in ref_languages]
        reference = ref_vectors[in_reference]
        reference_owners = [o for o, keep in zip(ref_owners, in_reference, strict=True) if keep]
        rows: list[Any] = []
        owners = []
        for anime_id, record in found.items():
            for vector in record.vectors.get(model.names.synopsis) or []:
                rows.append(vector)
                owners.append(anime_id)
        vectors = np.asarray(rows, dtype=np.float32) if rows else np.zeros((0, model.encoder.dim), np.float32)
    values = hubness(vectors, owners, reference, calibration.hub_k, reference_owners)
    field = model.names.hubness
    await runtime.store.set_payloads({a: {field: round(v, 6)} for a, v in values.items()}, collection)
    return values
