"""Assembling the parts (manifests, engine, encoders, store) from settings; shared by app and CLIs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.cache import build_cache
from service.caching import SearchCache
from service.calibration import Calibration
from service.decoding import DecodePool
from service.encoders.base import InferenceEngine
from service.encoders.image import ImageEncoder
from service.encoders.lexical import LexicalEncoder
from service.encoders.text import TextEncoder
from service.errors import ModelMismatch
from service.images import ImageLimits
from service.manifest import (
    CLIP_TEXT_EMBEDDER,
    IMAGE_EMBEDDER,
    TEXT_EMBEDDER,
    ManifestError,
    ModelManifest,
    has_role,
    load_manifest,
)
from service.metrics import InstrumentedEngine, Metrics
from service.resilience import Breakers, GuardedEngine
from service.settings import Settings
from service.store.qdrant_store import AnimeStore
from service.store.types import VectorSchema

# Every name of an anime, one vector each, scored by the best match (MaxSim).
TITLE_VECTOR = "title"
# Type, season, genres, themes and studios as one line: what a description of the kind of show meets.
FACTS_VECTOR = "facts"
# Every synopsis, centred on its language's mean (service/calibration.py), scored by the best match.
SYNOPSIS_VECTOR = "synopsis"
# BM25 term weights of all the text (service/encoders/lexical.py), with Qdrant's IDF: every text model.
TEXT_LEXICAL_VECTOR = "text_lexical"
# BGE-m3's learned lexical weights, where the text model has that head.
TEXT_SPARSE_VECTOR = "text_sparse"
PICTURE_VECTOR = "picture"
THUMBNAIL_VECTOR = "thumbnail"
TEXT_DENSE_VECTORS = (TITLE_VECTOR, FACTS_VECTOR, SYNOPSIS_VECTOR)
TEXT_MULTI_VECTORS = (TITLE_VECTOR, SYNOPSIS_VECTOR)
IMAGE_VECTORS = (PICTURE_VECTOR, THUMBNAIL_VECTOR)


@dataclass
class Runtime:
    settings: Settings
    engine: InferenceEngine
    text: TextEncoder
    store: AnimeStore
    lexical: LexicalEncoder = field(default_factory=LexicalEncoder)
    manifests: dict[str, ModelManifest] = field(default_factory=dict)
    image: ImageEncoder | None = None
    clip_text: TextEncoder | None = None
    metrics: Metrics = field(default_factory=Metrics)
    cache: SearchCache | None = None
    breakers: Breakers | None = None
    decoder: DecodePool = field(default_factory=DecodePool)

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.settings.image_max_bytes, max_pixels=self.settings.image_max_pixels)

    async def calibration(self) -> Calibration | None:
        """The live collection's calibration, once the collection is known to fit the models.

        A calibration of another text model (one that kept the dims) describes other vectors: searching
        or writing with it would centre by the wrong means without any error, so it is refused like a
        store of other dims is (503 model_store_mismatch, cured by a re-embedding reindex).
        """
        await self.store.ensure_ready()
        calibration = await self.store.calibration()
        if calibration is not None and calibration.text_model != self.text.manifest.model_version:
            raise ModelMismatch(
                f"the collection's synopses were centred for {calibration.text_model}, the text model is "
                f"{self.text.manifest.model_version}: rebuild it with "
                'POST /api/v1/admin/reindex {"reembed": true}',
                problems=["calibration of another text model"],
            )
        return calibration

    async def close(self) -> None:
        await self.engine.close()
        await self.store.close()
        self.decoder.close()
        if self.cache is not None:
            await self.cache.close()


def vector_schema(manifests: dict[str, ModelManifest], distance: str) -> VectorSchema:
    text = manifests[TEXT_EMBEDDER]
    dense = dict.fromkeys(TEXT_DENSE_VECTORS, text.dim)
    if IMAGE_EMBEDDER in manifests:
        dense |= dict.fromkeys(IMAGE_VECTORS, manifests[IMAGE_EMBEDDER].dim)
    return VectorSchema(
        dense=dense,
        sparse=[TEXT_LEXICAL_VECTOR] + ([TEXT_SPARSE_VECTOR] if text.has_sparse else []),
        distance=distance,
        multi=frozenset(TEXT_MULTI_VECTORS),
        idf=frozenset({TEXT_LEXICAL_VECTOR}),
    )


def load_manifests(repository: Path) -> dict[str, tuple[ModelManifest, Path]]:
    """text_embedder (required), image_embedder and clip_text_embedder (optional, one shared space)."""
    found = {TEXT_EMBEDDER: load_manifest(repository, TEXT_EMBEDDER)}
    for role in (IMAGE_EMBEDDER, CLIP_TEXT_EMBEDDER):
        if has_role(repository, role):
            found[role] = load_manifest(repository, role)
    if CLIP_TEXT_EMBEDDER in found and IMAGE_EMBEDDER not in found:
        raise ManifestError(
            f"{repository} has {CLIP_TEXT_EMBEDDER} but no {IMAGE_EMBEDDER}: export both with `export clip`"
        )
    if CLIP_TEXT_EMBEDDER in found:
        spaces = {found[r][0].embedding_space for r in (IMAGE_EMBEDDER, CLIP_TEXT_EMBEDDER)}
        if len(spaces) != 1:
            raise ManifestError(
                f"{IMAGE_EMBEDDER} and {CLIP_TEXT_EMBEDDER} come from different exports "
                f"({sorted(map(str, spaces))}): their vectors would not share a space; export them together"
            )
    return found


def build_engine(settings: Settings, models: dict[str, tuple[ModelManifest, Path]]) -> InferenceEngine:
    if settings.encoder_engine == "triton":
        from service.encoders.triton_engine import TritonEngine

        return TritonEngine(settings.triton_url, settings.triton_protocol, settings.triton_timeout_s)
    from service.encoders.onnx_engine import OnnxRuntimeEngine

    paths = {role: directory / manifest.onnx_file for role, (manifest, directory) in models.items()}
    return OnnxRuntimeEngine(paths, threads=settings.ort_threads)


async def build_runtime(
    settings: Settings, engine: InferenceEngine | None = None, metrics: Metrics | None = None
) -> Runtime:
    """Everything the service needs; raises ManifestError when no text model was exported."""
    metrics = metrics or Metrics()
    models = load_manifests(settings.model_repository)
    manifests = {role: manifest for role, (manifest, _) in models.items()}
    breakers = Breakers(settings.breaker_threshold, settings.breaker_reset_s)
    engine = InstrumentedEngine(GuardedEngine(engine or build_engine(settings, models), breakers), metrics)
    refresh = getattr(engine, "refresh_model_info", None)
    if refresh is not None:
        await refresh(list(manifests))
    text_manifest, text_dir = models[TEXT_EMBEDDER]
    text = TextEncoder(text_manifest, text_dir, engine, settings.text_max_tokens)
    image = ImageEncoder(manifests[IMAGE_EMBEDDER], engine) if IMAGE_EMBEDDER in models else None
    clip_text = None
    if CLIP_TEXT_EMBEDDER in models:
        clip_manifest, clip_dir = models[CLIP_TEXT_EMBEDDER]
        clip_text = TextEncoder(clip_manifest, clip_dir, engine, settings.text_max_tokens)
    store = AnimeStore.open(
        vector_schema(manifests, settings.qdrant_distance),
        alias=settings.qdrant_collection,
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key,
        path=settings.qdrant_path,
        timeout_s=settings.qdrant_timeout_s,
        params=settings.index_params(),
        embedded_engine=settings.qdrant_embedded_engine,
    )
    store.observer = metrics.observe_store
    store.breakers = breakers
    cache = SearchCache(
        build_cache(
            settings.redis_url, max_entries=settings.cache_max_entries, max_bytes=settings.cache_max_bytes
        ),
        metrics,
        result_ttl_s=settings.cache_ttl_s,
        embedding_ttl_s=settings.embedding_cache_ttl_s,
        enabled=settings.cache_enabled,
    )
    store.on_write = cache.invalidate
    metrics.describe(
        engine=engine.name, store=store.engine, **{role: m.model_version for role, m in manifests.items()}
    )
    return Runtime(
        settings=settings,
        engine=engine,
        text=text,
        store=store,
        manifests=manifests,
        image=image,
        clip_text=clip_text,
        metrics=metrics,
        cache=cache,
        breakers=breakers,
        decoder=DecodePool(settings.image_decode_threads),
    )
