"""Assembling the parts (manifests, engine, encoders, store) from settings; shared by app and CLIs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from service.cache.backends import build_cache
from service.cache.policy import SearchCache
from service.domain.calibration import Calibration
from service.domain.manifest import (
    CLIP_TEXT_EMBEDDER,
    IMAGE_EMBEDDER,
    TEXT_EMBEDDER,
    ManifestError,
    ModelManifest,
    has_role,
    load_manifest,
    model_ref,
    version_dirs,
)
from service.domain.rollout import Caller, Rollout, RolloutError, check_versions, parse_split
from service.domain.vectors import IMAGE_VECTORS, TEXT_LEXICAL_VECTOR, TextVectorNames
from service.encoders.base import InferenceEngine
from service.encoders.guarded import GuardedEngine
from service.encoders.image import ImageEncoder
from service.encoders.instrumented import InstrumentedEngine
from service.encoders.lexical import LexicalEncoder
from service.encoders.text import TextEncoder
from service.images.checks import ImageLimits
from service.images.pool import DecodePool
from service.platform.errors import DependencyUnavailable, Forbidden, ModelMismatch
from service.platform.metrics import Metrics
from service.platform.resilience import Breakers
from service.settings import Settings
from service.store.backend import check_folder
from service.store.qdrant_store import AnimeStore
from service.store.types import VectorSchema

# Collection metadata key of the rollout (default version, split, history): promotion writes it.
ROLLOUT_METADATA_KEY = "avs_text_rollout"
# How long a replica trusts the rollout it read before reading it again (another replica may promote).
ROLLOUT_RECHECK_S = 5.0


@dataclass(frozen=True)
class TextModel:
    """One served version of the text model: its encoder and the vectors it owns in the collection."""

    version: int
    encoder: TextEncoder
    names: TextVectorNames

    @property
    def manifest(self) -> ModelManifest:
        return self.encoder.manifest

    @property
    def fine_tuned(self) -> bool:
        return self.manifest.lineage is not None


class VersionNotServed(ModelMismatch):
    """A request asked for a text model version this deployment does not serve."""

    status_code = 404
    code = "model_version_not_served"


@dataclass
class Runtime:
    settings: Settings
    engine: InferenceEngine
    text_models: dict[int, TextModel]
    store: AnimeStore
    rollout: Rollout
    lexical: LexicalEncoder = field(default_factory=LexicalEncoder)
    manifests: dict[str, ModelManifest] = field(default_factory=dict)
    image: ImageEncoder | None = None
    clip_text: TextEncoder | None = None
    metrics: Metrics = field(default_factory=Metrics)
    cache: SearchCache | None = None
    breakers: Breakers | None = None
    decoder: DecodePool = field(default_factory=DecodePool)

    _rollout_known: bool = field(default=False, repr=False)

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.settings.image_max_bytes, max_pixels=self.settings.image_max_pixels)

    @property
    def engine_models(self) -> list[str]:
        """Every model the engine runs, as engine references (`text_embedder:1`, `image_embedder`):
        each text version is probed, guarded and measured on its own."""
        return [m.encoder.model for m in self.text_models.values()] + [
            role for role in self.manifests if role != TEXT_EMBEDDER
        ]

    @property
    def default_model(self) -> TextModel:
        return self.text_models[self.rollout.default]

    @property
    def text(self) -> TextEncoder:
        """The default version's encoder (what every request gets unless the split or an admin says)."""
        return self.default_model.encoder

    def text_model(self, version: int | None = None) -> TextModel:
        if version is None:
            return self.default_model
        found = self.text_models.get(version)
        if found is None:
            raise VersionNotServed(
                f"text model version {version} is not served (served: {sorted(self.text_models)})",
                problems=[f"version {version} not served"],
            )
        return found

    async def held_models(self) -> list[TextModel]:
        """The served versions whose vectors the live collection has (a version added later has none
        until a re-embedding reindex builds a collection with them)."""
        if not self.store.checked:
            # Not read since start or since a swap. Once read, what it held is kept while the store is
            # down, so an outage costs no call here (a cached answer may still be served).
            await self.store.ensure_ready()
        return [m for m in self.text_models.values() if not set(m.names.dense) & self.store.missing]

    async def current_rollout(self) -> Rollout:
        """The rollout: read from the collection once, then kept fresh by `watch_rollout` (the app
        runs it) so that a request never waits on that read, and a store outage never blocks it."""
        if not self._rollout_known:
            self._rollout_known = True
            await self.read_rollout()
        return self.rollout

    async def read_rollout(self) -> None:
        """Take the rollout recorded in the collection (a promotion made through any replica)."""
        try:
            recorded = await self.store.metadata(ROLLOUT_METADATA_KEY)
        except DependencyUnavailable:
            return  # the store is down: keep the rollout last read
        if recorded is None:
            return
        try:
            rollout = msgspec.convert(recorded, Rollout)
            check_versions(rollout, self.text_models)
        except (msgspec.ValidationError, RolloutError):
            return  # promoted to a version this replica does not serve: keep its own
        self.rollout = rollout

    async def watch_rollout(self, every_s: float = ROLLOUT_RECHECK_S) -> None:
        """Re-read the rollout every `every_s` until cancelled: another replica's promotion or rollback
        reaches this one within that time."""
        while True:
            await asyncio.sleep(every_s)
            await self.read_rollout()

    async def save_rollout(self, rollout: Rollout) -> None:
        check_versions(rollout, self.text_models)
        await self.store.save_metadata(ROLLOUT_METADATA_KEY, msgspec.to_builtins(rollout))
        self.rollout = rollout
        self._rollout_known = True

    async def choose_model(self, caller: Caller | None = None, override: int | None = None) -> TextModel:
        """The version that answers (service/domain/rollout.py): an admin's override, else the caller's bucket
        of the split; a version the live collection does not hold yet falls back to the default."""
        caller = caller or Caller()
        if override is not None and not caller.may_override:
            raise Forbidden(
                "model_version is for admin keys: the A/B split picks the version for other callers",
                field="model_version",
            )
        if override is not None:
            model = self.text_model(override)
            if model not in await self.held_models():
                raise VersionNotServed(
                    f"the collection has no vectors of text model version {override} yet: rebuild it with "
                    'POST /api/v1/admin/reindex {"reembed": true}',
                    problems=[f"version {override} not in the collection"],
                )
            return model
        rollout = await self.current_rollout()
        model = self.text_models[rollout.pick(caller.client)]
        return model if model in await self.held_models() else self.text_models[rollout.default]

    async def calibration(self, model: TextModel | None = None) -> Calibration | None:
        """A version's calibration (the default's unless given), once the collection is known to fit.

        A calibration of another text model (one that kept the dims) describes other vectors: searching
        or writing with it would centre by the wrong means without any error, so it is refused like a
        store of other dims is (503 model_store_mismatch, cured by a re-embedding reindex).
        """
        model = model or self.default_model
        await self.store.ensure_ready()
        calibration = await self.store.calibration(key=model.names.calibration_key)
        if calibration is not None and calibration.text_model != model.manifest.model_version:
            raise ModelMismatch(
                f"the collection's synopses were centred for {calibration.text_model}, text model version "
                f"{model.version} is {model.manifest.model_version}: rebuild it with "
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


def vector_schema(
    text_versions: dict[int, ModelManifest],
    image: ModelManifest | None,
    distance: str,
    *,
    default: int | None = None,
) -> VectorSchema:
    """Every served text version's vectors, the lexical channel, and the picture vectors.

    Versions other than `default` are optional in an existing collection: one exported after the
    collection was built is served once a re-embedding reindex has added its vectors.
    """
    dense: dict[str, int] = {}
    sparse = [TEXT_LEXICAL_VECTOR]
    multi: set[str] = set()
    optional: set[str] = set()
    score_fields: set[str] = set()
    slot_counts: dict[str, int] = {}
    for version, manifest in sorted(text_versions.items()):
        names = TextVectorNames.of(version)
        score_fields.add(names.hubness)
        dense |= dict.fromkeys(names.dense, manifest.dim)
        multi |= set(names.multi)
        slot_counts |= names.slots
        owned = set(names.dense)
        if manifest.has_sparse:
            sparse.append(names.sparse)
            owned.add(names.sparse)
        if default is not None and version != default:
            optional |= owned
    if image is not None:
        dense |= dict.fromkeys(IMAGE_VECTORS, image.dim)
    return VectorSchema(
        dense=dense,
        sparse=sparse,
        distance=distance,
        multi=frozenset(multi),
        idf=frozenset({TEXT_LEXICAL_VECTOR}),
        optional=frozenset(optional),
        score_fields=frozenset(score_fields),
        slot_counts=slot_counts,
    )


def load_text_versions(
    repository: Path, served: list[int] | None = None
) -> dict[int, tuple[ModelManifest, Path]]:
    """The text_embedder versions to serve: `served` (TEXT_MODEL_VERSIONS), else every exported one."""
    exported = version_dirs(repository / TEXT_EMBEDDER)
    if not exported:
        load_manifest(repository, TEXT_EMBEDDER)  # raises the "export one first" error
    chosen = served or exported
    missing = sorted(set(chosen) - set(exported))
    if missing:
        raise ManifestError(
            f"TEXT_MODEL_VERSIONS names {missing}, but {repository / TEXT_EMBEDDER} has versions {exported}"
        )
    return {version: load_manifest(repository, TEXT_EMBEDDER, version) for version in sorted(chosen)}


def initial_rollout(settings: Settings, versions: dict[int, ModelManifest]) -> Rollout:
    """TEXT_MODEL_DEFAULT, else the newest version that is not a fine-tune (a fine-tune waits for its
    promotion), else the newest; TEXT_MODEL_SPLIT's shares for candidates."""
    if settings.text_model_default is not None:
        default = settings.text_model_default
    else:
        plain = [v for v, m in versions.items() if m.lineage is None]
        default = max(plain or versions)
    shares = {v: s for v, s in parse_split(settings.text_model_split).items() if v != default}
    rollout = Rollout(default, shares)
    check_versions(rollout, versions)
    return rollout


def load_manifests(repository: Path) -> dict[str, tuple[ModelManifest, Path]]:
    """text_embedder (required; its newest version), image_embedder and clip_text_embedder (optional,
    one shared space)."""
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
    """`models` by engine reference (`text_embedder:2`, `image_embedder`)."""
    if settings.encoder_engine == "triton":
        from service.encoders.triton_engine import TritonEngine

        return TritonEngine(settings.triton_url, settings.triton_protocol, settings.triton_timeout_s)
    from service.encoders.onnx_engine import OnnxRuntimeEngine

    paths = {ref: directory / manifest.onnx_file for ref, (manifest, directory) in models.items()}
    return OnnxRuntimeEngine(paths, threads=settings.ort_threads)


def check_store(settings: Settings) -> None:
    """Refuse at once an embedded store the configured engine cannot open, before models are loaded:
    an earlier release's local-mode folder under the edge engine raises `LocalModeFolder`, whose
    message names the command that converts it. Start-up calls this before serving (`python -m service`
    logs it as one line), so it never surfaces as a failure inside the app's start-up."""
    if not settings.qdrant_url:
        check_folder(settings.qdrant_path, settings.qdrant_embedded_engine)


async def build_runtime(
    settings: Settings, engine: InferenceEngine | None = None, metrics: Metrics | None = None
) -> Runtime:
    """Everything the service needs; raises ManifestError when no text model was exported, and
    `LocalModeFolder` for an earlier release's embedded store (`check_store`)."""
    check_store(settings)
    metrics = metrics or Metrics()
    models = load_manifests(settings.model_repository)
    texts = load_text_versions(settings.model_repository, _versions(settings.text_model_versions))
    rollout = initial_rollout(settings, {v: m for v, (m, _) in texts.items()})
    models[TEXT_EMBEDDER] = texts[rollout.default]
    manifests = {role: manifest for role, (manifest, _) in models.items()}
    refs = {model_ref(TEXT_EMBEDDER, v): found for v, found in texts.items()}
    refs |= {role: found for role, found in models.items() if role != TEXT_EMBEDDER}
    breakers = Breakers(settings.breaker_threshold, settings.breaker_reset_s)
    bare = engine or build_engine(settings, refs)
    # Engine-specific, outside the interface: Triton reads each model's batch limit once at start.
    refresh = getattr(bare, "refresh_model_info", None)
    if refresh is not None:
        await refresh(list(refs))
    engine = InstrumentedEngine(GuardedEngine(bare, breakers), metrics)
    text_models = {
        version: TextModel(
            version,
            TextEncoder(manifest, directory, engine, settings.text_max_tokens, version=version),
            TextVectorNames.of(version),
        )
        for version, (manifest, directory) in texts.items()
    }
    image = ImageEncoder(manifests[IMAGE_EMBEDDER], engine) if IMAGE_EMBEDDER in models else None
    clip_text = None
    if CLIP_TEXT_EMBEDDER in models:
        clip_manifest, clip_dir = models[CLIP_TEXT_EMBEDDER]
        clip_text = TextEncoder(clip_manifest, clip_dir, engine, settings.text_max_tokens)
    store = AnimeStore.open(
        vector_schema(
            {v: m for v, (m, _) in texts.items()},
            manifests.get(IMAGE_EMBEDDER),
            settings.qdrant_distance,
            default=rollout.default,
        ),
        alias=settings.qdrant_collection,
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key,
        path=settings.qdrant_path,
        timeout_s=settings.qdrant_timeout_s,
        params=settings.index_params(),
        embedded_engine=settings.qdrant_embedded_engine,
        breakers=breakers,
        observer=metrics.observe_store,
    )
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
        engine=engine.name,
        store=store.engine,
        **{role: m.model_version for role, m in manifests.items()},
        **{model_ref(TEXT_EMBEDDER, v): m.manifest.model_version for v, m in text_models.items()},
    )
    return Runtime(
        settings=settings,
        engine=engine,
        text_models=text_models,
        store=store,
        rollout=rollout,
        manifests=manifests,
        image=image,
        clip_text=clip_text,
        metrics=metrics,
        cache=cache,
        breakers=breakers,
        decoder=DecodePool(settings.image_decode_threads),
    )


def _versions(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise ManifestError(
            f"TEXT_MODEL_VERSIONS: expected comma-separated version numbers, got {text!r}"
        ) from exc
