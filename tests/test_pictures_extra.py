"""Pictures from URLs (against a real local HTTP server) and score thresholds on the picture endpoints.

The server is a plain `http.server` on 127.0.0.1 in a thread, so httpx runs its real code: framing,
chunked bodies, close-delimited bodies, slow peers. Nothing here needs the internet.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from export.clip_export import export_clip
from service.app import create_app
from service.catalogue.ingest import ingest
from service.catalogue.pictures import ImageResolver
from service.domain.documents import AnimeDocument
from service.images.checks import ImageLimits
from service.runtime import build_runtime
from service.settings import load_settings
from tests.api_calls import ids, post
from tests.builders import encode_image, near_duplicate, synthetic_cover
from tests.conftest import copy_index
from tests.test_image_search import b64, picture_docs, picture_index
from tests.thresholds import assert_threshold_applies_per_list

__all__ = ["picture_docs", "picture_index"]  # fixtures shared with test_image_search, used below

# Small enough that the oversized bodies stay cheap, large enough for the synthetic covers.
CAP = 256 * 1024
DEADLINE_S = 1.5
# The slack a shared 2-core CI box needs on top of the deadline before we call it "not enforced".
SLACK_S = 2.5
_CHUNK = b"\0" * 16384
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- a real HTTP server -----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _PictureServer

    def log_message(self, format: str, *args: object) -> None:
        return None  # keep pytest output clean

    def _head(self, status: int, content_type: str, length: int | None = None, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()

    def _flood(self, write) -> None:
        """Write zeros until the client hangs up (or 64 MB: a client that reads it all has failed)."""
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                write(_CHUNK)
                sent += len(_CHUNK)
        except OSError:
            pass  # the client stopped reading: what we want
        self.server.flood_sent[self.path] = sent
        self.server.flood_done(self.path).set()

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        self.server.requests.append(path)
        if path.startswith("/cover/"):
            body = self.server.covers[int(path.removeprefix("/cover/").split(".")[0])]
            self._head(200, "image/png", len(body))
            self.wfile.write(body)
        elif path == "/missing.png":
            self._head(404, "text/plain", 9)
            self.wfile.write(b"not found")
        elif path == "/notes.txt":
            body = b"just some notes\n" * 40
            self._head(200, "text/plain", len(body))
            self.wfile.write(body)
        elif path == "/html-as.png":
            body = b"<!doctype html><html><body>Login required</body></html>" * 4
            self._head(200, "image/png", len(body))  # the header lies; the bytes are sniffed
            self.wfile.write(body)
        elif path == "/huge-chunked.png":
            # No Content-Length at all: nothing to check up front, only the bytes counted as they come.
            self._head(200, "image/png", Transfer_Encoding="chunked")

            def chunk(data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

            self._flood(lambda data: chunk(_PNG_SIGNATURE + data[8:]))
        elif path == "/huge-until-close.png":
            # HTTP/1.0 style: the body ends when the connection does.
            self.close_connection = True
            self._head(200, "image/png", Connection="close")
            self._flood(self.wfile.write)
        elif path == "/huge-declared.png":
            self._head(200, "image/png", 64 * 1024 * 1024)
            self._flood(self.wfile.write)
        elif path == "/understated.png":
            # Claims 2 KB, then keeps sending: HTTP framing reads only the declared bytes.
            self._head(200, "image/png", 2048)
            self._flood(lambda data: self.wfile.write(self.server.covers[0][:8] + data))
        elif path == "/drip.png":
            # An honest, small picture sent a few bytes at a time: every read succeeds well within
            # httpx's per-operation timeout, so only a deadline on the whole download stops it.
            body = self.server.covers[0]
            self._head(200, "image/png", len(body))
            try:
                for start in range(0, len(body), 4):
                    self.wfile.write(body[start : start + 4])
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        else:
            self._head(404, "text/plain", 0)


class _PictureServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.covers = {i: encode_image(synthetic_cover(i), "PNG") for i in range(4)}
        self.requests: list[str] = []
        self.flood_sent: dict[str, int] = {}
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        # The client hanging up mid-body is what the cap and deadline tests provoke: not worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def flood_done(self, path: str) -> threading.Event:
        """Set once the flood answering `path` (query string included) has stopped."""
        with self._lock:
            return self._events.setdefault(path, threading.Event())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture(scope="module")
def picture_server() -> Iterator[_PictureServer]:
    server = _PictureServer()
    thread = threading.Thread(target=server.serve_forever, name="picture-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _doc(anime_id: str, picture: str | None) -> AnimeDocument:
    return AnimeDocument(anime_id=anime_id, title=f"Anime {anime_id}", genres=["Mecha"], picture=picture)


def _resolver(limits: ImageLimits | None = None) -> ImageResolver:
    return ImageResolver(fetch_urls=True, limits=limits or ImageLimits(max_bytes=CAP), timeout_s=DEADLINE_S)


async def _resolve_one(server: _PictureServer, path: str) -> tuple[object, float]:
    """The outcome for one URL (an image or the problem) and how long it took."""
    started = time.perf_counter()
    resolved = await _resolver().resolve([_doc("a", server.url(path))])
    elapsed = time.perf_counter() - started
    assert len(resolved.problems) + len(resolved.images) == 1, resolved
    if resolved.images:
        return resolved.images["a"]["picture"], elapsed
    (problem,) = resolved.problems
    assert (problem.anime_id, problem.slot) == ("a", "picture")
    return problem, elapsed


# -- URL fetch: one URL at a time -------------------------------------------------------------


async def test_a_picture_at_a_url_is_fetched_and_decoded(picture_server):
    image, _ = await _resolve_one(picture_server, "/cover/1.png")
    assert getattr(image, "size", None) == synthetic_cover(1).size
    assert np.array_equal(np.asarray(image), np.asarray(synthetic_cover(1).convert("RGB")))


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("/missing.png", "image_fetch_failed", "HTTP 404"),
        ("/notes.txt", "unsupported_image_format", ""),
        ("/html-as.png", "unsupported_image_format", ""),
        ("/huge-declared.png", "image_too_large", "declares"),
        ("/huge-chunked.png", "image_too_large", f"more than {CAP} bytes"),
        ("/huge-until-close.png", "image_too_large", f"more than {CAP} bytes"),
    ],
)
async def test_a_bad_url_is_a_clear_problem_for_that_item(picture_server, path, code, words):
    problem, elapsed = await _resolve_one(picture_server, path)
    assert problem.code == code, problem  # type: ignore[attr-defined]
    assert words in problem.message  # type: ignore[attr-defined]
    assert "Traceback" not in problem.message  # type: ignore[attr-defined]
    assert elapsed < DEADLINE_S + SLACK_S


async def test_an_oversized_body_is_refused_while_streaming_not_after(picture_server):
    """Without a Content-Length the cap is all there is: the client must stop reading near it."""
    for path in ("/huge-chunked.png?streaming", "/huge-until-close.png?streaming"):
        problem, _ = await _resolve_one(picture_server, path)
        assert problem.code == "image_too_large"  # type: ignore[attr-defined]
        assert await asyncio.to_thread(picture_server.flood_done(path).wait, 10), path
        # Socket buffers hold a few MB at most; a client that read on would take all 64 MB.
        assert picture_server.flood_sent[path] < 16 * 1024 * 1024, path


async def test_an_understated_content_length_reads_only_the_declared_bytes(picture_server):
    problem, elapsed = await _resolve_one(picture_server, "/understated.png")
    assert problem.code == "corrupt_image"  # type: ignore[attr-defined]
    assert elapsed < DEADLINE_S + SLACK_S


async def test_a_server_dripping_bytes_is_cut_off_at_the_deadline(picture_server):
    """~3 KB/s never trips a per-read timeout of DEADLINE_S, and the whole body would take far longer."""
    assert len(picture_server.covers[0]) / 4 * 0.05 > 4 * DEADLINE_S  # the drip really is too slow
    problem, elapsed = await _resolve_one(picture_server, "/drip.png")
    assert problem.code == "image_fetch_timeout"  # type: ignore[attr-defined]
    assert f"{DEADLINE_S:g}s" in problem.message  # type: ignore[attr-defined]
    assert DEADLINE_S * 0.9 <= elapsed < DEADLINE_S + SLACK_S


async def test_unreachable_hosts_and_bad_schemes_are_problems_not_crashes(picture_server):
    # A port nobody listens on: grab a free one and close it.
    with ThreadingHTTPServer(("127.0.0.1", 0), _Handler) as probe:
        closed_port = probe.server_address[1]
    docs = [
        _doc("refused", f"http://127.0.0.1:{closed_port}/cover.png"),
        _doc("ok", picture_server.url("/cover/2.png")),
    ]
    resolved = await _resolver().resolve(docs)
    assert set(resolved.images) == {"ok"}
    (problem,) = resolved.problems
    assert (problem.anime_id, problem.code) == ("refused", "image_fetch_failed")
    assert "cannot fetch" in problem.message


async def test_urls_are_not_fetched_unless_asked(picture_server):
    before = len(picture_server.requests)
    resolved = await ImageResolver().resolve([_doc("a", picture_server.url("/cover/1.png"))])
    assert resolved.images == {} and resolved.problems == []
    assert len(picture_server.requests) == before


# -- URL fetch through ingest -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pictured_tiny_repository(tiny_repository: Path, clip_checkpoint: Path, tmp_path_factory) -> Path:
    """The tiny text model plus the tiny CLIP: the cheapest repository with an image embedder."""
    repository = tmp_path_factory.mktemp("pictured-tiny") / "repo"
    shutil.copytree(tiny_repository, repository)
    export_clip(str(clip_checkpoint), repository)
    return repository


async def test_ingest_embeds_fetched_pictures_and_reports_the_ones_it_could_not_get(
    picture_server, pictured_tiny_repository, tmp_path
):
    urls = {
        "good-1": "/cover/1.png",
        "good-2": "/cover/2.png",
        "missing": "/missing.png",
        "text": "/notes.txt",
        "huge": "/huge-chunked.png",
        "drip": "/drip.png",
    }
    docs = [_doc(anime_id, picture_server.url(path)) for anime_id, path in urls.items()]
    docs.append(_doc("no-url", None))
    runtime = await build_runtime(
        load_settings({}, model_repository=pictured_tiny_repository, qdrant_path=tmp_path / "q")
    )
    try:
        started = time.perf_counter()
        report = await ingest(runtime, docs, progress=False, images=_resolver())
        elapsed = time.perf_counter() - started
        stored = await runtime.store.get_many([d.anime_id for d in docs])
        expected = await runtime.image.encode([synthetic_cover(1), synthetic_cover(2)])  # type: ignore[union-attr]
    finally:
        await runtime.close()

    # Every document is stored; a picture that could not be fetched only costs its vector.
    assert report.upserted == len(docs) and report.failed == []
    # The tiny text model also has a sparse head: only the picture vector is in question here.
    assert {k: "picture" in v.vectors for k, v in stored.items()} == {
        "good-1": True,
        "good-2": True,
        "missing": False,
        "text": False,
        "huge": False,
        "drip": False,
        "no-url": False,
    }
    assert all("title" in v.vectors for v in stored.values())
    for row, anime_id in enumerate(("good-1", "good-2")):
        np.testing.assert_allclose(stored[anime_id].vectors["picture"], expected[row], atol=1e-5)
        assert stored[anime_id].payload["picture"] == picture_server.url(urls[anime_id])
    reasons = {p.anime_id: p.code for p in report.image_problems}
    assert reasons == {
        "missing": "image_fetch_failed",
        "text": "unsupported_image_format",
        "huge": "image_too_large",
        "drip": "image_fetch_timeout",
    }
    assert all(p.slot == "picture_data" for p in report.image_problems)
    # Downloads run concurrently: the slow one costs one deadline, not one per document.
    assert elapsed < DEADLINE_S + SLACK_S + 10


def test_the_ingest_cli_fetches_pictures_with_fetch_images(
    picture_server, pictured_tiny_repository, tmp_path, monkeypatch, capsys
):
    from service.catalogue.ingest import main as ingest_main

    docs = [
        _doc("good", picture_server.url("/cover/3.png")),
        _doc("gone", picture_server.url("/missing.png")),
    ]
    (tmp_path / "docs.json").write_bytes(msgspec.json.encode(docs))
    monkeypatch.setenv("MODEL_REPOSITORY", str(pictured_tiny_repository))
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "q"))
    assert ingest_main(["file", str(tmp_path / "docs.json")]) == 0
    assert "0 image problems" in capsys.readouterr().out  # without the flag, URLs stay URLs
    assert ingest_main(["file", str(tmp_path / "docs.json"), "--fetch-images"]) == 0
    captured = capsys.readouterr()
    assert "1 image problems" in captured.out
    assert "gone picture_data: image_fetch_failed" in captured.err and "HTTP 404" in captured.err

    async def pictured() -> dict[str, bool]:
        runtime = await build_runtime(
            load_settings({}, model_repository=pictured_tiny_repository, qdrant_path=tmp_path / "q")
        )
        try:
            found = await runtime.store.get_many(["good", "gone"])
        finally:
            await runtime.close()
        return {k: "picture" in v.vectors for k, v in found.items()}

    assert asyncio.run(pictured()) == {"good": True, "gone": False}


# -- score_threshold on the picture endpoints -------------------------------------------------


@pytest.fixture(scope="module")
async def client(real_repository, picture_index, tmp_path_factory) -> AsyncIterator[AsyncTestClient]:
    # Thresholds are applied by the store and the façade, not the encoder: one engine is enough.
    index = copy_index(picture_index, tmp_path_factory.mktemp("thresholds") / "q")
    async with AsyncTestClient(
        create_app(load_settings({}, model_repository=real_repository, qdrant_path=index))
    ) as c:
        yield c


def _scores(body: dict) -> list[float]:
    return [r["score"] for r in body["results"]]


def _cut_between(scores: list[float]) -> float:
    """A threshold strictly between two distinct scores near the middle (no float-equality edge)."""
    distinct = sorted(set(scores), reverse=True)
    assert len(distinct) >= 3, scores
    middle = len(distinct) // 2
    return (distinct[middle - 1] + distinct[middle]) / 2


def _check_cut(base: dict, cut: dict, threshold: float) -> None:
    assert cut["results"], "a threshold in the middle keeps the better half"
    assert all(score >= threshold for score in _scores(cut))
    kept = [r for r in base["results"] if r["score"] >= threshold]
    assert sorted(ids(cut)) == sorted(r["anime_id"] for r in kept)
    assert _scores(cut) == sorted(_scores(cut), reverse=True)


async def test_image_search_honours_score_threshold_per_vector(client):
    image = b64(near_duplicate(synthetic_cover(4)), "JPEG")
    vector = (await client.app.state.search.embed_image(image)).tolist()
    await assert_threshold_applies_per_list(client, {"image": image}, vector)


@pytest.mark.parametrize("ranking", ["weighted", "rrf", "dbsf"])
async def test_multimodal_search_honours_score_threshold(client, picture_docs, ranking):
    body = {
        "query": picture_docs[12].title,
        "image": b64(near_duplicate(synthetic_cover(9)), "JPEG"),
        "ranking": ranking,
        "limit": 100,
    }
    base = await post(client, "/api/v1/search/multimodal", body)
    scores = _scores(base)
    threshold = _cut_between(scores)
    cut = await post(client, "/api/v1/search/multimodal", body | {"score_threshold": threshold})
    _check_cut(base, cut, threshold)
    # The multimodal threshold is on the fused score and bounded to [0, 1].
    if scores[0] < 1.0:
        above = await post(
            client, "/api/v1/search/multimodal", body | {"score_threshold": min(1.0, scores[0] + 1e-6)}
        )
        assert above["results"] == []
    else:
        above = await post(client, "/api/v1/search/multimodal", body | {"score_threshold": 1.0})
        assert all(s >= 1.0 for s in _scores(above))
    if min(scores) >= 0.0:
        below = await post(client, "/api/v1/search/multimodal", body | {"score_threshold": 0.0})
        assert ids(below) == ids(base) and _scores(below) == pytest.approx(scores, abs=1e-9)


async def _similar(client: AsyncTestClient, kind: str, anime_id: str, **params: object) -> dict:
    response = await client.get(f"/api/v1/similarity/{kind}/{anime_id}", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()


def _vector_scores(result: dict) -> list[float]:
    return [m["score"] for m in result["explanation"]["vectors"]]


@pytest.mark.parametrize("kind", ["anime", "visual", "vector"])
async def test_similarity_honours_score_threshold_per_vector(client, picture_docs, kind):
    """Documented: similarity thresholds apply per vector (each list's own score), before fusion: a
    result keeps only the lists it reached the threshold in, and drops out when it reached none."""
    anime_id = picture_docs[6].anime_id
    base = await _similar(client, kind, anime_id)
    raw = [s for r in base["results"] for s in _vector_scores(r)]
    threshold = _cut_between(raw)
    cut = await _similar(client, kind, anime_id, score_threshold=threshold)
    assert cut["results"] and len(cut["results"]) <= len(base["results"])
    for result in cut["results"]:
        assert min(_vector_scores(result)) >= threshold
    dropped = sum(len(_vector_scores(r)) for r in base["results"]) - sum(
        len(_vector_scores(r)) for r in cut["results"]
    )
    assert dropped > 0  # list entries under the threshold are gone
    above = await _similar(client, kind, anime_id, score_threshold=max(raw) + 1e-3)
    assert above["results"] == [] and above["total"] == 0
    below = await _similar(client, kind, anime_id, score_threshold=-2.0)  # below any cosine
    assert ids(below) == ids(base) and _scores(below) == pytest.approx(_scores(base), abs=1e-9)


async def test_similarity_batch_threshold_above_everything_answers_empty_items(client, picture_docs):
    wanted = [picture_docs[1].anime_id, picture_docs[2].anime_id]
    body = await post(
        client,
        "/api/v1/similarity/batch",
        {"anime_ids": wanted, "kind": "visual", "limit": 5, "score_threshold": 1.5},
    )
    assert [item["status_code"] for item in body["results"]] == [200, 200]
    assert all(item["results"] == [] for item in body["results"])
