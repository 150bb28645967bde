"""The anime document: what clients send to ingest/upsert and what search results carry.

One struct validates both the PRD's JSON-list files and admin upserts, so bounds live in one place.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

AnimeId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$",
        description="Stable id of the anime on the client's platform (letters, digits, . _ : -).",
        examples=["bangumi-265"],
    ),
]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Url = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://")]
Tags = Annotated[list[ShortText], msgspec.Meta(max_length=200)]
# base64 or a data: URL. Deliberately no length bound here: the image decoder measures it first and
# answers 413 (too large), which is the honest status, where a schema bound would say 422.
ImageData = Annotated[str, msgspec.Meta(description="base64 or data: URL of a JPEG, PNG or WebP")]
Synopsis = Annotated[str, msgspec.Meta(max_length=20_000)]
LanguageCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        max_length=35,
        description="BCP 47 language tag, e.g. `en`, `zh`, `zh-Hant`, `ja`.",
    ),
]

# LIVE_ACTION: an entry of the source catalogue that is not animation (a live-action film or drama).
# Kept so that by-id lookups work; searches leave it out unless a request's type filter names it.
AnimeType = Literal["TV", "MOVIE", "OVA", "ONA", "SPECIAL", "MUSIC", "LIVE_ACTION", "UNKNOWN"]
AnimeStatus = Literal["FINISHED", "ONGOING", "UPCOMING", "UNKNOWN"]
Season = Literal["WINTER", "SPRING", "SUMMER", "FALL"]

# Fixed namespace: the same anime id maps to the same Qdrant point id in every deployment,
# which makes re-ingest idempotent and lets two stores be compared point by point.
POINT_NAMESPACE = uuid.UUID("5f0c7a52-3b7e-4a8e-9a51-6d1f2e8c9b40")


class SparseVectorIn(msgspec.Struct, forbid_unknown_fields=True):
    indices: Annotated[list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(max_length=65_536)]
    values: Annotated[list[float], msgspec.Meta(max_length=65_536)]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise ValueError("a sparse vector needs as many values as indices")


ClientVector = Annotated[list[float], msgspec.Meta(min_length=1, max_length=65_536)] | SparseVectorIn


class AnimeDocument(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    anime_id: AnimeId
    title: ShortText
    title_english: ShortText | None = None
    title_japanese: ShortText | None = None
    synonyms: Tags = []
    synopsis: Synopsis | None = None
    # Further synopses by language, beside `synopsis` (the one results show): the sources often have a
    # Chinese summary and an English overview of the same story, and each is embedded so that a query
    # in either language meets one written in it.
    synopses: Annotated[dict[LanguageCode, Synopsis], msgspec.Meta(max_length=20)] = {}
    genres: Tags = []
    themes: Tags = []
    tags: Tags = []
    type: AnimeType = "UNKNOWN"
    status: AnimeStatus = "UNKNOWN"
    year: Annotated[int, msgspec.Meta(ge=1900, le=2100)] | None = None
    season: Season | None = None
    episodes: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None
    score: Annotated[float, msgspec.Meta(ge=0, le=10)] | None = None
    studios: Tags = []
    picture: Url | None = None
    thumbnail: Url | None = None
    sources: Annotated[list[Url], msgspec.Meta(max_length=50)] = []
    # Image content to embed (not stored): the cover and a small thumbnail, as base64 or data URLs.
    picture_data: ImageData | None = None
    thumbnail_data: ImageData | None = None
    # Vectors computed by the client, by vector name; used as given when their dims fit the collection.
    vectors: dict[str, ClientVector] | None = None


def point_id(anime_id: str) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, anime_id))


# Inputs to embedding, never stored in the payload.
EMBEDDING_INPUT_FIELDS = ("picture_data", "thumbnail_data", "vectors")


def to_payload(doc: AnimeDocument) -> dict:
    """Payload stored beside the vectors: every field present (None included), so filters see them.

    Image bytes are embedded, never stored: the payload keeps the URLs.
    """
    payload = msgspec.structs.asdict(doc)
    for name in EMBEDDING_INPUT_FIELDS:
        payload.pop(name, None)
    return payload


def decode_documents(data: bytes) -> list[AnimeDocument]:
    """A JSON list of documents (the PRD's file format), or `{"documents": [...]}`."""
    if data.lstrip()[:1] == b"{":
        return msgspec.json.decode(data, type=_Wrapped).documents
    return msgspec.json.decode(data, type=list[AnimeDocument])


class _Wrapped(msgspec.Struct, forbid_unknown_fields=True):
    documents: list[AnimeDocument]
