"""Assembling the parts (manifests, engine, encoders, store) from settings; shared by app and CLIs."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.encoders.base import InferenceEngine
from service.encoders.text import TextEncoder
from service.manifest import TEXT_EMBEDDER, ModelManifest, load_manifest
from service.settings import Settings
from service.store.qdrant_store import AnimeStore, VectorSchema

TEXT_VECTOR = "text"
TEXT_SPARSE_VECTOR = "text_sparse"


@dataclass
class Runtime:
    settings: Settings
    engine: InferenceEngine
    text: TextEncoder
    store: AnimeStore
    manifests: dict[str, ModelManifest] = field(default_factory=dict)

    async def close(self) -> None:
        await self.engine.close()
        await self.store.close()


def vector_schema(manifests: dict[str, ModelManifest], distance: str) -> VectorSchema:
    text = manifests[TEXT_EMBEDDER]
    return VectorSchema(
        dense={TEXT_VECTOR: text.dim},
        sparse=[TEXT_SPARSE_VECTOR] if text.has_sparse else [],
        distance=distance,
    )


def build_engine(settings: Settings, graphs: dict[str, ModelManifest]) -> InferenceEngine:
    if settings.encoder_engine == "triton":
        from service.encoders.triton_engine import TritonEngine

        return TritonEngine(settings.triton_url, settings.triton_protocol, settings.triton_timeout_s)
    from service.encoders.onnx_engine import OnnxRuntimeEngine

    paths = {}
    for role, manifest in graphs.items():
        _, directory = load_manifest(settings.model_repository, role)
        paths[role] = directory / manifest.onnx_file
    return OnnxRuntimeEngine(paths, threads=settings.ort_threads)


async def build_runtime(settings: Settings, engine: InferenceEngine | None = None) -> Runtime:
    """Everything the service needs; raises ManifestError when no text model was exported."""
    text_manifest, text_dir = load_manifest(settings.model_repository, TEXT_EMBEDDER)
    manifests = {TEXT_EMBEDDER: text_manifest}
    engine = engine or build_engine(settings, manifests)
    refresh = getattr(engine, "refresh_model_info", None)
    if refresh is not None:
        await refresh(list(manifests))
    text = TextEncoder(text_manifest, text_dir, engine, settings.text_max_tokens)
    store = AnimeStore.open(
        vector_schema(manifests, settings.qdrant_distance),
        alias=settings.qdrant_collection,
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key,
        path=settings.qdrant_path,
        timeout_s=settings.qdrant_timeout_s,
    )
    return Runtime(settings=settings, engine=engine, text=text, store=store, manifests=manifests)
