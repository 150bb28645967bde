"""Every setting of the service, read once from environment variables into a typed object.

The README's configuration table is the user-facing copy of this file: keep them in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from service.store.params import IndexParams

Engine = Literal["onnx", "triton"]
TritonProtocol = Literal["grpc", "http"]
Distance = Literal["cosine", "dot", "euclid"]


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    # Encoders
    model_repository: Path = Path("model_repository")
    encoder_engine: Engine = "onnx"
    triton_url: str = "localhost:8001"
    triton_protocol: TritonProtocol = "grpc"
    triton_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    ort_threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    text_max_tokens: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Versions of text_embedder served side by side (service/domain/rollout.py): which ones (default: every
    # exported version), the default (default: the newest that is not a fine-tune; a promotion recorded
    # in the collection wins over this), and candidates' shares of clients ("2:0.1").
    text_model_versions: str | None = None
    text_model_default: Annotated[int, msgspec.Meta(ge=1)] | None = None
    text_model_split: str | None = None

    # Search
    text_search_mode: Literal["dense", "hybrid"] = "hybrid"
    # Centre synopsis vectors per language and correct hubs (service/domain/calibration.py) when a new
    # collection is filled. Off only to measure what it is worth (benchmarks/relevance).
    synopsis_centring: bool = True
    fusion_candidates: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 100
    image_max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 10 * 1024 * 1024
    image_max_pixels: Annotated[int, msgspec.Meta(ge=4096)] = 40_000_000
    image_decode_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2

    # Store
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_path: Path = Path("var/qdrant")
    # The embedded store (no QDRANT_URL): Qdrant's engine in-process (qdrant-edge), or qdrant-client's
    # local mode (an exact scan in Python, kept as the stand-in for the server API in tests).
    qdrant_embedded_engine: Literal["edge", "local"] = "edge"
    qdrant_collection: str = "anime"
    qdrant_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    qdrant_distance: Distance = "cosine"
    qdrant_hnsw_m: Annotated[int, msgspec.Meta(ge=4, le=128)] = 16
    qdrant_hnsw_ef_construct: Annotated[int, msgspec.Meta(ge=4, le=2000)] = 100
    qdrant_search_ef: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    qdrant_exact_search_up_to: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 20_000
    qdrant_quantization: Literal["none", "scalar", "binary"] = "none"
    qdrant_quantization_rescore: bool = True
    qdrant_quantization_oversampling: Annotated[float, msgspec.Meta(ge=1.0, le=16.0)] = 2.0
    qdrant_on_disk_payload: bool = False
    qdrant_shards: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    qdrant_replicas: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1

    # Caching (in process; shared through Redis when REDIS_URL is set)
    cache_enabled: bool = True
    cache_ttl_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    embedding_cache_ttl_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    cache_max_entries: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    cache_max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024 * 1024
    redis_url: str | None = None

    # Security: API keys (name:role:sha256 entries; none = open), rate limits ("<per second>/<burst>")
    api_keys: str | None = None
    auth_public_health: bool = True
    auth_public_metrics: bool = True
    rate_limit_search: str | None = None
    rate_limit_admin: str | None = None
    rate_limit_ip: str | None = None
    trusted_proxies: str | None = None
    # With no API keys, admin routes answer loopback clients only; true opens them to the network.
    admin_allow_remote_without_keys: bool = False
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    # Resilience: consecutive outages that open a dependency's circuit, and how long it stays open
    breaker_threshold: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    breaker_reset_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 5.0

    # Admin
    admin_max_batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 256
    reindex_batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256

    # HTTP
    service_host: str = "127.0.0.1"
    service_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    request_max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024 * 1024

    @property
    def store_engine(self) -> str:
        if self.qdrant_url:
            return "qdrant-server"
        return "qdrant-edge" if self.qdrant_embedded_engine == "edge" else "qdrant-local"

    def index_params(self) -> IndexParams:
        return IndexParams(
            hnsw_m=self.qdrant_hnsw_m,
            hnsw_ef_construct=self.qdrant_hnsw_ef_construct,
            search_ef=self.qdrant_search_ef,
            exact_search_up_to=self.qdrant_exact_search_up_to,
            quantization=self.qdrant_quantization,
            quantization_rescore=self.qdrant_quantization_rescore,
            quantization_oversampling=self.qdrant_quantization_oversampling,
            on_disk_payload=self.qdrant_on_disk_payload,
            shards=self.qdrant_shards,
            replicas=self.qdrant_replicas,
        )


def _env_name(field: str) -> str:
    return field.upper()


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from `environ` (default: the process environment), then `overrides`.

    Empty variables count as unset so that `FOO=` in a compose file means "use the default".
    """
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(Settings):
        value = env.get(_env_name(field.name))
        if value is not None and value != "":
            raw[field.name] = value
    raw.update(overrides)
    try:
        return msgspec.convert(raw, Settings, strict=False, dec_hook=_decode_path)
    except msgspec.ValidationError as exc:
        raise SettingsError(_name_variable(str(exc))) from exc


def _decode_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise NotImplementedError


def _name_variable(message: str) -> str:
    # msgspec reports "... - at `$.field_name`"; users set FIELD_NAME, so name that.
    marker = "at `$."
    if marker in message:
        field = message.split(marker, 1)[1].rstrip("`").split("`")[0]
        return f"invalid environment variable {_env_name(field)}: {message.split(' - at ')[0]}"
    return f"invalid settings: {message}"
