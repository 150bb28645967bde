"""Dependency failures: a killed or hung tritonserver, an unreachable, failing or stalling Qdrant,
one modality down, the embedded store killed under writes.

The façade runs as deployed (uvicorn); tritonserver is killed with SIGKILL or frozen with SIGSTOP
under load and brought back, and the façade must recover by itself, with no restart.

What is asserted is behaviour, the same on an idle or a loaded machine: every search during an
outage is a 503 naming the dependency (a hang would end in the client's timeout instead), the
circuit opens (its 503s say so) after at most `threshold` attempts and lets through at most one probe
per `reset_s`, it closes again, and every search after the first success succeeds. How fast the
503s come and how long recovery takes are measurements: `python -m benchmarks.resilience`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from service.catalogue.ingest import ingest
from service.domain.manifest import TEXT_EMBEDDER
from service.platform.errors import DependencyUnavailable
from service.runtime import build_runtime
from service.settings import load_settings
from service.triton_local.launcher import LocalTriton, free_port
from tests.builders import encode_image, synthetic_cover
from tests.conftest import copy_index
from tests.processes import Load, ServiceThread, StallingServer, start_service, stop

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def index(real_repository: Path, bangumi_documents, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resilience-index")

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=real_repository, qdrant_path=folder))
        try:
            await ingest(runtime, bangumi_documents[:30], progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


@pytest.fixture
def text_only_triton(real_repository: Path, tmp_path) -> Iterator[LocalTriton]:
    """A tritonserver of our own (this test kills it) serving only text_embedder."""
    triton = LocalTriton(real_repository, workdir=tmp_path / "triton", models=[TEXT_EMBEDDER], ort_threads=1)
    triton.start()
    try:
        yield triton
    finally:
        triton.cleanup()


def test_killed_triton_gives_fast_503s_and_recovery_needs_no_restart(
    real_repository, index, text_only_triton, tmp_path
):
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(real_repository),
        "QDRANT_PATH": str(index),
        "ENCODER_ENGINE": "triton",
        "TRITON_URL": text_only_triton.endpoints.grpc_url,
        "TRITON_TIMEOUT_S": "2",
        "BREAKER_THRESHOLD": "5",
        "BREAKER_RESET_S": "1",
        "CACHE_ENABLED": "false",
    }
    service = start_service(env, port, tmp_path / "service.log")
    base = f"http://127.0.0.1:{port}"
    load = Load(base)
    try:
        load.start()
        load.wait_for(lambda a: a.status == 200, timeout_s=60)
        killed_at = time.monotonic()
        text_only_triton.kill()
        # Down: the attempts fail, then the open circuit refuses (an event, whatever the machine's pace).
        load.wait_for(lambda a: a.start > killed_at and a.circuit == TRITON_CIRCUIT, timeout_s=60)
        assert_triton_degraded(base)
        hold_outage(load, killed_at, settle_s=0.5)

        restarted = LocalTriton(
            real_repository,
            workdir=tmp_path / "triton-again",
            models=[TEXT_EMBEDDER],
            http_port=text_only_triton.endpoints.http_port,
            grpc_port=text_only_triton.endpoints.grpc_port,
            metrics_port=text_only_triton.endpoints.metrics_port,
        )
        restarted.start()
        ready_at = time.monotonic()
        try:
            deadline = ready_at + 30
            while time.monotonic() < deadline and not any(
                a.start > ready_at and a.status == 200 for a in load.records
            ):
                time.sleep(0.1)
            load.stop.set()
            load.join(timeout=30)
        finally:
            restarted.cleanup()
    finally:
        load.stop.set()
        stop(service)

    recovered = check_outage(
        load, killed_at, ready_at, settle_s=0.5, circuit=TRITON_CIRCUIT, threshold=5, reset_s=1.0
    )
    assert all(a.status == 200 for a in load.records if a.start > recovered)


TRITON_CIRCUIT = f"triton:{TEXT_EMBEDDER}:1"
# Searches answered during each outage before it ends: enough to see attempts and refusals.
OUTAGE_SEARCHES = 5


def hold_outage(load: Load, down_at: float, settle_s: float) -> None:
    """Keep the dependency away until OUTAGE_SEARCHES searches sent once the outage had `settle_s` to
    show have been answered, however slowly this machine answers them."""
    load.wait_for(lambda a: a.start > down_at + settle_s, timeout_s=600, count=OUTAGE_SEARCHES)


def check_outage(
    load: Load,
    down_at: float,
    back_at: float,
    *,
    settle_s: float,
    circuit: str,
    threshold: int,
    reset_s: float,
    clients: int = 1,
) -> float:
    """The searches of `load` around an outage from `down_at` to `back_at`: all succeeded before it;
    those sent once it had `settle_s` to show, and answered before its end, were 503s naming the
    dependency (never a hang: that would be the client's timeout), and the circuit did its job: most
    were refused by it at once (their 503 names `circuit`), and the others, the attempts that reached
    the dependency, were at most the `threshold` that open it plus one probe per `reset_s` after
    (each as many times as `clients` sharing the circuit can have calls in flight at once).
    Returns when the first successful search after the outage was sent.
    """
    before = [a for a in load.records if a.start + a.seconds < down_at]
    outage = [a for a in load.records if down_at + settle_s < a.start and a.start + a.seconds < back_at]
    after = [a for a in load.records if a.start > back_at]
    assert before and all(a.status == 200 for a in before)
    assert len(outage) >= OUTAGE_SEARCHES, f"only {len(outage)} searches during the outage"
    assert all(a.status == 503 and a.code == "dependency_unavailable" for a in outage), outage
    refused = [a for a in outage if a.circuit == circuit]
    attempts = [a for a in outage if a.circuit is None]
    assert len(refused) + len(attempts) == len(outage), {a.circuit for a in outage}
    span = outage[-1].start + outage[-1].seconds - outage[0].start
    assert refused, "the circuit never opened"
    allowed = threshold + clients - 1 + (span / reset_s + 1) * clients
    assert len(attempts) <= allowed, (len(attempts), len(refused), span)
    successes = [a for a in after if a.status == 200]
    assert successes, "no search succeeded after the dependency came back"
    return successes[0].start


def assert_triton_degraded(base: str) -> None:
    """Both health endpoints: degraded, the store fine, text_embedder down and its circuit not closed."""
    with httpx.Client(base_url=base, timeout=30) as client:
        for path in ("/health", "/api/v1/admin/health"):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
            health = response.json()
            assert health["status"] == "degraded", (path, health)
            components = health["components"]
            assert components["store"]["status"] == "ok", (path, components)
            assert components[f"triton:{TEXT_EMBEDDER}:1"]["status"] == "down", (path, components)
            circuit = components[f"circuit:triton:{TEXT_EMBEDDER}:1"]
            assert circuit["status"] == "down" and "open" in circuit["detail"], (path, circuit)


def test_hung_triton_times_out_opens_the_circuit_and_recovers_on_sigcont(
    real_repository, index, text_only_triton, tmp_path
):
    """SIGSTOP freezes tritonserver with its sockets open: connections succeed, nothing answers.

    Every search must end within the Triton timeout (a 503, never a hang), then at once while the
    circuit is open; SIGCONT brings the same server back and searches succeed without a restart.
    """
    timeout_s, reset_s = 1.0, 1.0
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(real_repository),
        "QDRANT_PATH": str(index),
        "ENCODER_ENGINE": "triton",
        "TRITON_URL": text_only_triton.endpoints.grpc_url,
        "TRITON_TIMEOUT_S": str(timeout_s),
        "BREAKER_THRESHOLD": "3",
        "BREAKER_RESET_S": str(reset_s),
        "CACHE_ENABLED": "false",
    }
    service = start_service(env, port, tmp_path / "service.log")
    base = f"http://127.0.0.1:{port}"
    assert text_only_triton.process is not None
    # The server process only: its Python-backend stubs keep their heartbeat, as a hung server's would
    # (freezing them too can make the resumed server restart them, which is another failure than this).
    server = text_only_triton.process.pid
    load = Load(base)
    frozen = False
    try:
        load.start()
        load.wait_for(lambda a: a.status == 200, timeout_s=60)
        stopped_at = time.monotonic()
        os.kill(server, signal.SIGSTOP)
        frozen = True
        # Hung, the attempts time out (a 503 without the circuit), then the circuit refuses.
        load.wait_for(lambda a: a.start > stopped_at and a.circuit == TRITON_CIRCUIT, timeout_s=60)
        # Three roles probed in turn, each bounded by the timeout: health answers (the client's
        # 30 s timeout would fail it) and says what is down.
        assert_triton_degraded(base)
        hold_outage(load, stopped_at, settle_s=0.2)

        resumed_at = time.monotonic()
        os.kill(server, signal.SIGCONT)
        frozen = False
        deadline = resumed_at + 30
        while time.monotonic() < deadline and not any(
            a.start > resumed_at and a.status == 200 for a in load.records
        ):
            time.sleep(0.05)
        time.sleep(1)  # a little steady traffic after the recovery
        load.stop.set()
        load.join(timeout=30)
        with httpx.Client(base_url=base, timeout=30) as client:
            health = client.get("/health").json()
        assert health["components"][f"triton:{TEXT_EMBEDDER}:1"]["status"] == "ok", health["components"]
        assert f"circuit:triton:{TEXT_EMBEDDER}:1" not in health["components"], health
    finally:
        if frozen:
            os.kill(server, signal.SIGCONT)  # a stopped server would ignore the fixture's SIGTERM
        load.stop.set()
        stop(service)

    recovered = check_outage(
        load, stopped_at, resumed_at, settle_s=0.2, circuit=TRITON_CIRCUIT, threshold=3, reset_s=reset_s
    )
    assert all(a.status == 200 for a in load.records if a.start > recovered)


def test_one_modality_down_answers_with_the_other(real_repository, index, text_only_triton, tmp_path):
    """Triton serves the text model only: multimodal search answers by text and says why."""
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(real_repository),
        "QDRANT_PATH": str(index),
        "ENCODER_ENGINE": "triton",
        "TRITON_URL": text_only_triton.endpoints.grpc_url,
    }
    service = start_service(env, port, tmp_path / "service.log")
    image = base64.b64encode(encode_image(synthetic_cover(1), "PNG")).decode()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            both = client.post("/api/v1/search/multimodal", json={"query": "robots", "image": image})
            assert both.status_code == 200, both.text
            info = both.json()["query_info"]
            assert info["weights"] == {"text": 1.0}
            assert any(note.startswith("image:") and "image_embedder" in note for note in info["degraded"])
            assert both.json()["results"]
            only_image = client.post("/api/v1/search/image", json={"image": image})
            assert only_image.status_code == 503
            assert only_image.json()["error"]["details"]["dependency"] == "triton"
    finally:
        stop(service)


async def test_an_unreachable_qdrant_answers_503_fast_and_health_says_down(real_repository):
    from litestar.testing import AsyncTestClient

    from service.app import create_app

    settings = load_settings(
        {},
        model_repository=real_repository,
        qdrant_url=f"http://127.0.0.1:{free_port()}",
        qdrant_timeout_s=2,
        breaker_reset_s=30,
    )
    async with AsyncTestClient(create_app(settings)) as client:
        circuits = []
        for _ in range(8):
            response = await client.post("/api/v1/search", json={"query": "robots"})
            assert response.status_code == 503
            details = response.json()["error"]["details"]
            assert details["dependency"] == "qdrant"
            circuits.append(details.get("circuit"))
        # At most `threshold` searches try the store (start-up's own calls may count first); then
        # the open circuit refuses at once, with no more connection attempts, until reset_s.
        assert circuits[settings.breaker_threshold :] == ["qdrant"] * (8 - settings.breaker_threshold)
        write = await client.post(
            "/api/v1/admin/vectors/upsert", json={"documents": [{"anime_id": "a", "title": "A"}]}
        )
        assert write.status_code == 503  # not acknowledged, so nothing is lost
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "down"


def test_embedded_store_killed_under_write_load_keeps_every_acknowledged_upsert(
    real_repository, bangumi_documents, tmp_path
):
    """The local store lives inside the façade process: stopping the store means killing that process.

    SIGKILL (no shutdown hook runs) while writers and searchers are busy, start it again on the same
    folder: every upsert that was answered 200 is there, and searches succeed again.
    """
    folder = tmp_path / "store"
    env = {"MODEL_REPOSITORY": str(real_repository), "QDRANT_PATH": str(folder)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_service(env, port, tmp_path / "service-1.log")
    documents = [msgspec.to_builtins(d) for d in bangumi_documents[:400]]
    acknowledged: list[str] = []
    stop_writing = threading.Event()

    def write(offset: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for start in range(offset, len(documents), 8):  # two writers, interleaved batches of 4
                if stop_writing.is_set():
                    return
                batch = documents[start : start + 4]
                try:
                    response = client.post("/api/v1/admin/vectors/upsert", json={"documents": batch})
                except httpx.HTTPError:
                    return  # the process died with this request in flight: not acknowledged
                if response.status_code == 200:
                    acknowledged.extend(d["anime_id"] for d in batch)

    writers = [threading.Thread(target=write, args=(offset,)) for offset in (0, 4)]
    searches = Load(base)
    for thread in [*writers, searches]:
        thread.start()
    # The kill waits for an event (60 writes acknowledged), with a deadline only a broken run reaches:
    # on a machine shared with other runs, embedding is several times slower than alone.
    deadline = time.monotonic() + 600
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=10)
    stop_writing.set()
    searches.stop.set()
    for thread in [*writers, searches]:
        thread.join(timeout=30)
    assert len(acknowledged) >= 60, "the writers were too slow to test anything"
    assert len(acknowledged) < len(documents), "the kill came after every write: nothing was in flight"
    assert any(a.status == 200 for a in searches.records)

    restarted = start_service(env, port, tmp_path / "service-2.log")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            missing = [
                anime_id
                for anime_id in acknowledged
                if client.get(f"/api/v1/search/by-id/{anime_id}").status_code != 200
            ]
            assert missing == [], f"{len(missing)} acknowledged upserts lost: {missing[:5]}"
            search = client.post("/api/v1/search", json={"query": acknowledged[0], "limit": 5})
            assert search.status_code == 200 and search.json()["results"]
            assert client.get("/health").json()["status"] == "ok"
    finally:
        stop(restarted)


class Writer(threading.Thread):
    """Back-to-back upserts of fresh documents in batches; records (start, status, seconds, stored ids).

    Only what the service answered 200 (or 207, item by item) counts as acknowledged. A refused batch
    is sent again, as a client does with a 503, so refusals never use up the documents: however fast
    the outage's 503s come, there are writes left for after the store returns.
    """

    def __init__(self, base: str, documents: list[dict], batch: int = 4) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.documents = documents
        self.batch = batch
        self.records: list[tuple[float, int, float, list[str]]] = []
        self.stop = threading.Event()

    @property
    def acknowledged(self) -> list[str]:
        return [anime_id for *_, stored in self.records for anime_id in stored]

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            offset = 0
            while offset < len(self.documents) and not self.stop.is_set():
                batch = self.documents[offset : offset + self.batch]
                started = time.monotonic()
                response = client.post("/api/v1/admin/vectors/upsert", json={"documents": batch})
                stored = []
                if response.status_code in (200, 207):
                    stored = [i["anime_id"] for i in response.json()["items"] if i["status"] == "stored"]
                    offset += self.batch
                self.records.append((started, response.status_code, time.monotonic() - started, stored))
                time.sleep(0.02)


async def _swap_store_client(runtime, client):
    """Point the live store at another Qdrant endpoint; returns the one it replaces."""
    previous, runtime.store.backend.client = runtime.store.backend.client, client
    return previous


def test_store_outage_under_load_gives_fast_503s_loses_no_acknowledged_upsert_and_heals(
    real_repository, index, bangumi_documents, tmp_path
):
    """The store becomes unreachable while searches and upserts run, then comes back; no restart.

    No Qdrant server exists here, so the outage is made at the endpoint: the running service's
    store client is replaced by a real qdrant-client aimed at a closed port (what the service sees
    when its Qdrant host goes away), then given its store back. Reads fail fast once the circuit
    opens, writes are refused (503, never acknowledged), both health endpoints say the store is
    down, every acknowledged upsert is there afterwards, and searches heal by themselves.
    """
    from qdrant_client import AsyncQdrantClient

    reset_s = 1.0
    settings = load_settings(
        {},
        model_repository=real_repository,
        qdrant_path=copy_index(index, tmp_path / "store"),
        breaker_threshold=3,
        breaker_reset_s=reset_s,
        qdrant_timeout_s=2,
        cache_enabled=False,
        log_level="WARNING",
    )
    documents = [msgspec.to_builtins(d) for d in bangumi_documents[30:430]]
    service = ServiceThread(settings, free_port()).start()
    searches = Load(service.base)
    writers = [Writer(service.base, documents[0::2]), Writer(service.base, documents[1::2])]
    dead = AsyncQdrantClient(url=f"http://127.0.0.1:{free_port()}", timeout=2, check_compatibility=False)
    try:
        for thread in [searches, *writers]:
            thread.start()
        # The outage starts once searches and writes have been answered, however slow the machine.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (
            any(a.status == 200 for a in searches.records) and all(w.acknowledged for w in writers)
        ):
            time.sleep(0.05)
        down_at = time.monotonic()
        embedded = service.run(_swap_store_client(service.runtime, dead))
        # The outage is under way once the store's circuit refuses a search (after `threshold` failed
        # calls); from then on it is never closed while the store is away (open, or half-open probing).
        searches.wait_for(lambda a: a.start > down_at and a.circuit == "qdrant", timeout_s=60)
        assert service.run(service.runtime.breakers.states())["qdrant"] != "closed"
        with pytest.raises(DependencyUnavailable, match="qdrant"):
            service.run(service.runtime.store.ping())
        with httpx.Client(base_url=service.base, timeout=30) as client:
            for path in ("/health", "/api/v1/admin/health"):
                response = client.get(path)
                assert response.status_code == 503, (path, response.text)
                health = response.json()
                assert health["status"] == "down", (path, health)
                assert health["components"]["store"]["status"] == "down", (path, health)
                assert "qdrant" in health["components"]["store"]["detail"], (path, health)
                assert health["components"]["circuit:qdrant"]["status"] == "down", (path, health)
        hold_outage(searches, down_at, settle_s=0.5)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not any(
            r[0] > down_at + 0.5 for w in writers for r in list(w.records)
        ):
            time.sleep(0.05)  # and a write refused during it
        up_at = time.monotonic()
        service.run(_swap_store_client(service.runtime, embedded))
        deadline = up_at + 20
        while time.monotonic() < deadline and not (
            any(a.start > up_at and a.status == 200 for a in searches.records)
            and any(start > up_at and status == 200 for w in writers for start, status, _, _ in w.records)
        ):
            time.sleep(0.05)
        time.sleep(1)  # steady traffic after the recovery
        for thread in [searches, *writers]:
            thread.stop.set()
        for thread in [searches, *writers]:
            thread.join(timeout=30)

        with httpx.Client(base_url=service.base, timeout=30) as client:
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "ok", health.text
            acknowledged = [anime_id for w in writers for anime_id in w.acknowledged]
            missing = [
                anime_id
                for anime_id in acknowledged
                if client.get(f"/api/v1/search/by-id/{anime_id}").status_code != 200
            ]
    finally:
        for thread in [searches, *writers]:
            thread.stop.set()
        service.stop()
        asyncio.run(dead.close())

    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged upserts lost: {missing[:5]}"
    writes = [r for w in writers for r in w.records]
    # A request that took the store client before the swap may finish against it: that is a real write.
    during = [r for r in writes if down_at + 0.5 < r[0] and r[0] + r[2] < up_at]
    assert during and all(status == 503 and not stored for _, status, _, stored in during)
    assert any(stored for start, _, seconds, stored in writes if start + seconds < down_at)
    assert any(stored for start, _, _, stored in writes if start > up_at)

    recovered = check_outage(
        searches, down_at, up_at, settle_s=0.5, circuit="qdrant", threshold=3, reset_s=reset_s, clients=3
    )
    assert all(a.status == 200 for a in searches.records if a.start > recovered)


@pytest.mark.parametrize("mode", ["silent", "trickle"])
def test_a_stalling_qdrant_times_out_within_qdrant_timeout(real_repository, mode):
    """A Qdrant that accepts connections and never finishes answering: every call ends at
    QDRANT_TIMEOUT_S with a 503 naming qdrant, then at once while the circuit is open.

    `silent` never answers (the HTTP client's read timeout would do); `trickle` sends a byte every
    200 ms, which no per-read timeout catches: only a deadline on the whole store call ends it.
    """
    timeout_s = 1.0
    with StallingServer(mode) as stalling:
        settings = load_settings(
            {},
            model_repository=real_repository,
            qdrant_url=stalling.url,
            qdrant_timeout_s=timeout_s,
            breaker_threshold=3,
            breaker_reset_s=30,
            cache_enabled=False,
            log_level="WARNING",
        )
        service = ServiceThread(settings, free_port()).start()
        try:
            # The client's own timeout is the hang detector: without the store call's deadline a
            # trickled answer never ends, and this client gives up long before that.
            with httpx.Client(base_url=service.base, timeout=30 * timeout_s) as client:
                circuits = []
                for i in range(6):
                    response = client.post("/api/v1/search", json={"query": "robots"})
                    assert response.status_code == 503, response.text
                    details = response.json()["error"]["details"]
                    assert details["dependency"] == "qdrant"
                    circuits.append(details.get("circuit"))
                    if i == 2:
                        accepted = stalling.accepted
                assert accepted >= 1  # the calls really went to the stalling endpoint
                # After three timed-out calls the circuit is open: the rest are refused by it and
                # never reach the endpoint (no new connection).
                assert circuits[3:] == ["qdrant"] * 3, circuits
                assert stalling.accepted == accepted
                write = client.post(
                    "/api/v1/admin/vectors/upsert", json={"documents": [{"anime_id": "a", "title": "A"}]}
                )
                assert write.status_code == 503  # refused, so not acknowledged
                health = client.get("/health")
                assert health.status_code == 503 and health.json()["components"]["store"]["status"] == "down"
        finally:
            stalling.close()  # ends any call still stuck on it, so the server can shut down
            service.stop()
