"""Request and response bodies of the HTTP API (msgspec structs: validation and OpenAPI in one place)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from service.domain.documents import AnimeId, AnimeStatus, AnimeType, ImageData, Season

# Filters are what the store turns into Qdrant conditions, so their struct lives with that translation.
from service.store.filters import SearchFilters

Limit = Annotated[int, msgspec.Meta(ge=1, le=100, description="How many results to return (1..100).")]
ScoreThreshold = Annotated[
    float,
    msgspec.Meta(
        ge=-1e6,
        le=1e6,
        description="Least similarity a match must have (cosine for the default metric; for euclid "
        "1/(1+distance)). Where several vectors are fused (image search, hybrid text, similarity) it "
        "applies to each vector's own similarity, before fusion.",
    ),
]


Query = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2000,
        description="Natural-language query.",
        examples=["giant robots and angels"],
    ),
]
Image = Annotated[
    ImageData,
    msgspec.Meta(
        min_length=1,
        description="JPEG, PNG or WebP as base64 or a data: URL; at most 10 MB once decoded.",
    ),
]
Weight = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
TextMode = Literal["dense", "hybrid"]
Ranking = Literal["weighted", "rrf", "dbsf"]
SimilarityKind = Literal["anime", "visual", "vector"]
ModelVersion = Annotated[
    int,
    msgspec.Meta(
        ge=1,
        description="Admin only: answer with this version of the text model (a candidate under test) "
        "instead of the one the A/B split picks for the caller.",
    ),
]


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    query: Query
    limit: Limit = 10
    filters: SearchFilters | None = None
    score_threshold: ScoreThreshold | None = None
    text_mode: Annotated[
        TextMode | None,
        msgspec.Meta(
            description="dense: the title, facts and synopsis vectors; hybrid (the default): those "
            "plus the BM25 lexical vector (and BGE-m3's learned sparse where served), fused by "
            "confident score fusion."
        ),
    ] = None
    model_version: ModelVersion | None = None


class ImageSearchRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    image: Image
    limit: Limit = 10
    filters: SearchFilters | None = None
    score_threshold: ScoreThreshold | None = None


class MultimodalSearchRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    query: Query | None = None
    image: Image | None = None
    text_weight: Weight = 0.5
    image_weight: Weight = 0.5
    ranking: Annotated[
        Ranking,
        msgspec.Meta(
            description="weighted: min-max normalised scores, weighted sum; rrf: weighted reciprocal rank "
            "fusion; dbsf: distribution-based score fusion, weighted."
        ),
    ] = "weighted"
    limit: Limit = 10
    filters: SearchFilters | None = None
    score_threshold: (
        Annotated[float, msgspec.Meta(ge=0.0, le=1.0, description="On the fused score.")] | None
    ) = None
    model_version: ModelVersion | None = None

    def __post_init__(self) -> None:
        if self.query is None and self.image is None:
            raise ValueError("give a query, an image, or both")
        if self.text_weight == 0 and self.image_weight == 0:
            raise ValueError("text_weight and image_weight cannot both be 0")


class SimilarityBatchRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    anime_ids: Annotated[list[AnimeId], msgspec.Meta(min_length=1, max_length=50)]
    kind: SimilarityKind = "vector"
    limit: Limit = 10
    filters: SearchFilters | None = None
    score_threshold: ScoreThreshold | None = None
    model_version: ModelVersion | None = None


class VectorMatch(msgspec.Struct, kw_only=True):
    vector: str
    score: float
    rank: int


class Explanation(msgspec.Struct, kw_only=True):
    vectors: list[VectorMatch]
    part_scores: dict[str, float] | None = None
    shared_genres: list[str] = []
    shared_themes: list[str] = []
    shared_tags: list[str] = []


class AnimeResult(msgspec.Struct, kw_only=True):
    anime_id: AnimeId
    title: str
    score: float
    title_english: str | None = None
    title_japanese: str | None = None
    type: AnimeType = "UNKNOWN"
    status: AnimeStatus = "UNKNOWN"
    year: int | None = None
    season: Season | None = None
    episodes: int | None = None
    genres: list[str] = []
    themes: list[str] = []
    studios: list[str] = []
    # Other names, the Chinese one among them where the source has it (bangumi's `name_cn`).
    synonyms: list[str] = []
    synopsis: str | None = None
    picture: str | None = None
    thumbnail: str | None = None
    sources: list[str] = []
    explanation: Explanation | None = None


class QueryInfo(msgspec.Struct, kw_only=True):
    engine: str
    model: str
    model_version: str
    # Which version of text_embedder answered (the A/B split's pick, or an admin's override).
    text_version: int | None = None
    store: str
    took_ms: float
    tokens: int | None = None
    truncated: bool = False
    mode: str | None = None
    ranking: str | None = None
    weights: dict[str, float] | None = None
    vectors: list[str] = []
    degraded: list[str] = []
    cached: bool = False


class SearchResponse(msgspec.Struct, kw_only=True):
    results: list[AnimeResult]
    total: int
    query_info: QueryInfo


class SimilarityResponse(msgspec.Struct, kw_only=True):
    anime_id: AnimeId
    kind: SimilarityKind
    results: list[AnimeResult]
    total: int
    query_info: QueryInfo


class SimilarityBatchItem(msgspec.Struct, kw_only=True):
    anime_id: AnimeId
    status_code: int
    results: list[AnimeResult] = []
    error: ErrorBody | None = None


class SimilarityBatchResponse(msgspec.Struct, kw_only=True):
    kind: SimilarityKind
    results: list[SimilarityBatchItem]
    took_ms: float


class AnimeRecord(msgspec.Struct, kw_only=True):
    anime_id: AnimeId
    document: dict[str, Any]
    vectors: list[str]
    model_version: str | None = None
    updated_at: str | None = None


class FacetValue(msgspec.Struct, kw_only=True):
    value: str
    count: Annotated[int, msgspec.Meta(ge=0, description="How many searchable anime hold this value.")]


class FacetsResponse(msgspec.Struct, kw_only=True):
    """The values a search can filter on, as the collection holds them (anime a search would leave out,
    such as live-action entries, are not counted). Each list: most frequent first, ties by value."""

    genres: list[FacetValue]
    themes: list[FacetValue]
    types: list[FacetValue]
    statuses: list[FacetValue]
    year_min: Annotated[int | None, msgspec.Meta(description="Earliest year; null when no anime has one.")]
    year_max: Annotated[int | None, msgspec.Meta(description="Latest year; null when no anime has one.")]
    total: Annotated[int, msgspec.Meta(ge=0, description="How many anime were counted.")]


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: Any = None


class ErrorResponse(msgspec.Struct, kw_only=True):
    error: ErrorBody
    status_code: int


class ModelPrompts(msgspec.Struct, kw_only=True):
    query: str
    document: str


class ReferenceParityInfo(msgspec.Struct, kw_only=True):
    engine: str
    texts: int
    min_cosine: float
    token_ids_identical: bool | None


class ModelInfo(msgspec.Struct, kw_only=True):
    role: str
    source: str
    architecture: str
    dim: int
    pooling: str
    sparse: bool
    max_length: int | None
    model_version: str
    # max |PyTorch - ONNX Runtime| over the export's sample batches.
    parity_max_abs_diff: float
    license: str | None = None
    upstream: str | None = None
    weights_note: str | None = None
    prompts: ModelPrompts | None = None
    # Our graph + tokenizer against the engine the weights came from, where there is one.
    reference_parity: ReferenceParityInfo | None = None
    precision: str = "fp32"
    # Worst cosine of the quantized graph's vectors to the fp32 graph's, when quantized.
    quantized_min_cosine: float | None = None
    # text_embedder's versions side by side: which one this is, whether it is the default, and the
    # fine-tuning run it came from.
    version: int | None = None
    default: bool | None = None
    lineage_run: str | None = None


class ServiceInfo(msgspec.Struct, kw_only=True):
    name: str
    version: str
    engine: str
    store: str
    collection: str
    models: list[ModelInfo]
    docs: str = "/docs"
    playground: str = "/playground"


class ComponentHealth(msgspec.Struct, kw_only=True):
    status: str
    detail: str | None = None
    latency_ms: float | None = None


class HealthResponse(msgspec.Struct, kw_only=True):
    status: str
    components: dict[str, ComponentHealth]


# -- admin ------------------------------------------------------------------------------------------


class UpsertRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    documents: Annotated[
        list[dict[str, Any]],
        msgspec.Meta(
            min_length=1,
            max_length=1000,
            description="Anime documents (the ingest file format; optional picture_data/thumbnail_data "
            "base64 and client-computed `vectors`). Each is validated on its own.",
        ),
    ]


class ItemProblem(msgspec.Struct, kw_only=True):
    code: str
    message: str
    field: str | None = None


class UpsertItemResult(msgspec.Struct, kw_only=True):
    index: int
    anime_id: str | None
    status: Literal["stored", "failed"]
    vectors: list[str] = []
    errors: list[ItemProblem] = []
    warnings: list[ItemProblem] = []


class UpsertResponse(msgspec.Struct, kw_only=True):
    stored: int
    failed: int
    items: list[UpsertItemResult]
    model_versions: dict[str, str]
    took_ms: float


class DeleteResponse(msgspec.Struct, kw_only=True):
    anime_id: str
    deleted: bool


class IndexParamsPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Index settings for the new collection; unset fields keep the live collection's settings."""

    hnsw_m: Annotated[int, msgspec.Meta(ge=4, le=128)] | None = None
    hnsw_ef_construct: Annotated[int, msgspec.Meta(ge=4, le=2000)] | None = None
    search_ef: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    quantization: Literal["none", "scalar", "binary"] | None = None
    quantization_rescore: bool | None = None
    quantization_oversampling: Annotated[float, msgspec.Meta(ge=1.0, le=16.0)] | None = None
    on_disk_payload: bool | None = None
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)] | None = None
    replicas: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None


class ReindexRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    reembed: Annotated[
        bool, msgspec.Meta(description="Re-embed every anime's text with the deployed text model.")
    ] = False
    index: IndexParamsPatch | None = None
    keep_old: Annotated[bool, msgspec.Meta(description="Keep the previous collection after the swap.")] = (
        False
    )


class ReindexJobView(msgspec.Struct, kw_only=True):
    job_id: str
    state: Literal["running", "succeeded", "failed", "cancelled"]
    phase: str
    reembed: bool
    source: str | None
    target: str | None
    total: int
    copied: int
    reembedded: int
    caught_up: int
    dropped_vectors: dict[str, int]
    progress: float
    started_at: str
    finished_at: str | None
    seconds: float
    error: str | None
    params: dict[str, Any]
    keep_old: bool
