"""Fuzzing: the HTTP API against its own OpenAPI document (schemathesis), and the image decoder (atheris).

The API fuzz runs in-process over ASGI on a real app (real MiniLM, tiny CLIP, 40 real anime, a few with
synthetic covers) and holds every answer to the document the service publishes at /docs/openapi.json:
no 5xx, only documented status codes and content types, bodies valid against the documented schemas,
schema-violating requests rejected. Every operation is fuzzed, the mutating admin ones included: the app
runs on a copy of the index, so deletes, upserts and reindexes are harmless.

The decoder fuzz runs libFuzzer (through atheris) over `load_image` + `preprocess` for a bounded time
in a subprocess, starting from small valid PNG/JPEG/WebP files: any exception other than an `ImageError`
is a crash, and the subprocess exits non-zero with the input that caused it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import importlib.util
import os
import re
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from litestar import Litestar
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.catalogue.ingest import ingest
from service.domain.documents import AnimeDocument
from service.images.decoding import load_image
from service.runtime import Runtime, build_runtime
from service.security.auth import new_key
from service.settings import load_settings
from tests.builders import encode_image, near_duplicate, synthetic_cover
from tests.conftest import copy_index

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ API fuzz

ANIME = 40
WITH_COVERS = 8
# Fuzzing-phase cases per operation (positive and negative together). The examples and coverage phases
# add their own deterministic cases (boundary values, missing fields, wrong types, unlisted methods).
MAX_EXAMPLES = 25
SEED = 20260101

API_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
        # Stateful testing follows OpenAPI links, and the document declares none.
        "phases": {"stateful": {"enabled": False}},
        # No relaxation: the app runs on the default embedded store, which has snapshots, so their
        # routes are held to "no 5xx" like every other (501 is only for QDRANT_EMBEDDED_ENGINE=local).
    }
)


def fuzz_settings(max_examples: int) -> settings:
    """Hypothesis as the API fuzz runs it: bounded, reproducible (fixed seed, no example database)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def error_envelope_matches_status(ctx: Any, response: Any, case: Any) -> None:
    """Every error answer is the one envelope (README), and its `status_code` is the HTTP status."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not the error envelope: {body}"
    assert body.get("status_code") == response.status_code, f"envelope status differs: {body}"
    assert isinstance(body["error"].get("code"), str) and body["error"]["code"], f"no error code: {body}"


CHECKS = [
    not_a_server_error,  # no 5xx
    status_code_conformance,  # every status code is documented for its operation
    content_type_conformance,  # every Content-Type is the documented one
    response_schema_conformance,  # every body validates against the documented schema for its status
    negative_data_rejection,  # what the document calls invalid is refused with a 4xx
    error_envelope_matches_status,
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sample_pictures() -> list[str]:
    """Real pictures, and a few hostile ones, for `image` fields: generated strings never decode."""
    cover = synthetic_cover(3)
    png = encode_image(cover)
    translucent = cover.convert("RGBA")
    translucent.putalpha(128)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # EXIF orientation
    return [
        b64(png),
        "data:image/jpeg;base64," + b64(encode_image(near_duplicate(cover), "JPEG", quality=70)),
        base64.urlsafe_b64encode(encode_image(cover, "WEBP")).decode().rstrip("="),
        b64(encode_image(translucent)),
        b64(encode_image(cover, "JPEG", exif=rotated)),
        b64(encode_image(cover.convert("I;16"))),
        b64(encode_image(cover.resize((4, 4)))),  # 422 bad_image_dimensions
        b64(png[: len(png) // 2]),  # 422 corrupt_image
        b64(encode_image(cover, "GIF")),  # 415 unsupported_image_format
    ]


@pytest.fixture(scope="module")
def fuzz_documents(bangumi_documents: list[AnimeDocument]) -> list[AnimeDocument]:
    docs = []
    for i, doc in enumerate(bangumi_documents[:ANIME]):
        if i < WITH_COVERS:
            cover = synthetic_cover(i)
            doc = msgspec.structs.replace(
                doc,
                picture_data=b64(encode_image(cover)),
                thumbnail_data=b64(encode_image(cover.resize((80, 113)), "JPEG", quality=85)),
            )
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def fuzz_index(
    real_repository: Path, fuzz_documents: list[AnimeDocument], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("fuzz-index")

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=real_repository, qdrant_path=folder))
        try:
            report = await ingest(runtime, fuzz_documents, progress=False)
            assert report.upserted == len(fuzz_documents) and report.image_problems == []
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


@pytest.fixture(scope="module")
def fuzz_app(real_repository: Path, fuzz_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    # A copy: the fuzzer deletes, upserts and reindexes.
    index = copy_index(fuzz_index, tmp_path_factory.mktemp("fuzz-app") / "index")
    # ERROR: the app logs every request, and every 5xx as a warning; a failure prints the request.
    return create_app(
        load_settings({}, model_repository=real_repository, qdrant_path=index, log_level="ERROR")
    )


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Litestar, fuzz_documents: list[AnimeDocument]) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_asgi("/docs/openapi.json", fuzz_app, config=API_CONFIG)
    # Fetching the document went through schemathesis' ASGI client, which starts the app's lifespan
    # and keeps it running for every request of the test; its pytest plugin stops it at teardown.
    assert isinstance(getattr(fuzz_app.state, "runtime", None), Runtime), "the app's lifespan did not run"
    steer_positive_cases(schema, fuzz_app, fuzz_documents)
    return schema


def steer_positive_cases(
    schema: schemathesis.BaseSchema, app: Litestar, documents: list[AnimeDocument]
) -> None:
    """Put real values into about half the positive fuzzing cases, so that the 2xx paths get fuzzed too.

    Generated ids never name a stored anime, a reindex job or a snapshot, and generated strings never
    decode as pictures: without this nearly every by-id, similarity, image, job or snapshot request would
    be a 404 or a 422.
    A steered body also loses the properties that the document does not declare (it omits
    `additionalProperties: false`, so positive cases carry made-up keys that the service refuses).
    Negative cases are left alone: replacing what the generator broke on purpose would make them valid.
    """
    ids = [doc.anime_id for doc in documents]
    pictures = sample_pictures()
    # Some with covers, some without; re-upserting replaces the stored points (on the copy).
    upserts = [msgspec.to_builtins(doc) for doc in documents[WITH_COVERS - 2 : WITH_COVERS + 4]]
    raw = schema.raw_schema

    def with_anime_id(case: Any) -> st.SearchStrategy:
        return st.sampled_from(ids).map(lambda anime_id: derive(case, path={"anime_id": anime_id}))

    def with_job_id(case: Any) -> st.SearchStrategy:
        # Jobs started by the POST /api/v1/admin/reindex cases, which run before this operation.
        jobs = sorted(app.state.admin.reindexer.jobs)
        if not jobs:
            return st.just(case)
        return st.sampled_from(jobs).map(lambda job_id: derive(case, path={"job_id": job_id}))

    def admin_call(method: str, path: str) -> Any:
        """One request of the app's own, through the fuzzer's transport, while cases are generated."""
        response = schema[path][method].Case().call()
        assert response.status_code < 300, response.text
        return response.json()

    def snapshots() -> list[str]:
        # Of the live collection, oldest first. Fetched, not remembered: a reindex, fuzzed before the
        # restore, swaps in a new collection, which has none of the snapshots made before it.
        return [snapshot["name"] for snapshot in admin_call("GET", "/api/v1/admin/snapshots")]

    def with_snapshot(names: list[str], case: Any) -> st.SearchStrategy:
        if not names:
            return st.just(case)
        return st.sampled_from(names).map(lambda name: derive(case, path={"name": name}))

    def with_snapshot_to_restore(case: Any) -> st.SearchStrategy:
        names = snapshots() or [admin_call("POST", "/api/v1/admin/snapshots")["name"]]
        return with_snapshot(names, case)

    def with_snapshot_to_delete(case: Any) -> st.SearchStrategy:
        return with_snapshot(snapshots()[1:], case)  # the oldest stays, for the restore cases

    def documented_fields(case: Any) -> st.SearchStrategy:
        return st.just(derive(case, raw=raw))

    def with_picture(case: Any) -> st.SearchStrategy:
        image: st.SearchStrategy = st.sampled_from(pictures)
        if case.body.get("query"):  # multimodal: text alone is a valid request too
            image = st.one_of(image, st.none())
        return image.map(lambda picture: derive(case, raw=raw, body={"image": picture}))

    def with_known_ids(case: Any) -> st.SearchStrategy:
        known = st.lists(st.sampled_from([*ids, "not-stored"]), min_size=1, max_size=5)
        return known.map(lambda anime_ids: derive(case, raw=raw, body={"anime_ids": anime_ids}))

    def with_documents(case: Any) -> st.SearchStrategy:
        # Real documents, alone or beside generated ones: 200 (all stored), 207 (some) or 422 (none).
        real = st.lists(st.sampled_from(upserts), min_size=1, max_size=3)
        mixed = st.tuples(real, st.booleans()).map(lambda d: d[0] + (case.body["documents"] if d[1] else []))
        return mixed.map(lambda docs: derive(case, raw=raw, body={"documents": docs}))

    steering = {
        "GET /api/v1/search/by-id/{anime_id}": with_anime_id,
        "GET /api/v1/similarity/{kind}/{anime_id}": with_anime_id,
        "DELETE /api/v1/admin/vectors/{anime_id}": with_anime_id,
        "GET /api/v1/admin/reindex/{job_id}": with_job_id,
        "POST /api/v1/admin/snapshots/{name}/restore": with_snapshot_to_restore,
        "DELETE /api/v1/admin/snapshots/{name}": with_snapshot_to_delete,
        "POST /api/v1/search": documented_fields,
        "POST /api/v1/search/image": with_picture,
        "POST /api/v1/search/multimodal": with_picture,
        "POST /api/v1/similarity/batch": with_known_ids,
        "POST /api/v1/admin/reindex": documented_fields,
        "POST /api/v1/admin/vectors/upsert": with_documents,
    }

    @schema.hook
    def flatmap_case(ctx: Any, case: Any) -> st.SearchStrategy:
        steer = steering.get(case.operation.label)
        if steer is None or case.meta is None or not case.meta.generation.mode.is_positive:
            return st.just(case)
        takes_body = "requestBody" in case.operation.definition.raw
        if takes_body and not isinstance(case.body, dict):
            return st.just(case)
        return st.one_of(steer(case), st.just(case))


def derive(
    case: Any,
    *,
    raw: dict[str, Any] | None = None,
    path: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
) -> Any:
    """A copy of `case` with path parameters set and, given the document, only its documented fields."""
    derived = case.derive()
    derived.path_parameters.update(path or {})
    if raw is not None:
        content = case.operation.definition.raw["requestBody"]["content"]["application/json"]
        derived.body = {**documented(derived.body, content["schema"], raw), **(body or {})}
    return derived


def documented(value: Any, schema: dict[str, Any], raw: dict[str, Any]) -> Any:
    """`value` without the object properties that `schema` does not declare, recursively."""
    if "$ref" in schema:
        schema = raw["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        return {k: documented(v, properties[k], raw) for k, v in value.items() if k in properties}
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        if isinstance(value, dict) and ("$ref" in branch or "properties" in branch):
            return documented(value, branch, raw)
    return value


class Tally:
    """Examples per operation (with their status codes) and per schemathesis phase."""

    def __init__(self) -> None:
        self.statuses: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        self.phases: collections.Counter[str] = collections.Counter()

    def add(self, case: Any, status: int) -> None:
        self.statuses[case.operation.label][status] += 1
        self.phases[case.meta.phase.name.value if case.meta is not None else "explicit"] += 1


@pytest.fixture(scope="module")
def fuzz_tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """Printed at the end of the module: the closing numbers of the run."""
    tally = Tally()
    yield tally
    total = sum(tally.phases.values())
    phases = ", ".join(f"{phase} {n}" for phase, n in sorted(tally.phases.items()))
    lines = [
        f"schemathesis: {total} examples ({phases}) over {len(tally.statuses)} operations",
        "  examples  operation  [status: count]",
    ]
    for label, statuses in sorted(tally.statuses.items()):
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
        lines.append(f"  {sum(statuses.values()):8d}  {label}  [{codes}]")
    report(request, lines)


def report(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print past pytest's capture, so the numbers show in a plain `pytest -q` run."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:  # pragma: no cover - run with -p no:capture
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines), flush=True)


@pytest.fixture(autouse=True)
def _schemathesis_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's lazy schema renames the running test through `node._nodeid`, which pytest 9.2
    # replaced with a structured `_id`: without the attribute the test dies before its first request.
    # The write changes nothing in pytest's reporting. Drop once schemathesis reads `node.nodeid`.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@pytest.mark.minilm
@fuzz_settings(MAX_EXAMPLES)
def test_every_operation_answers_as_its_openapi_document_says(case: Any, fuzz_tally: Tally) -> None:
    response = case.call()
    fuzz_tally.add(case, response.status_code)
    case.validate_response(response, checks=CHECKS)


# ------------------------------------------------------------------------- API fuzz with keys and limits

SEARCH_KEY, SEARCH_ENTRY = new_key("fuzzer", "search")
_, ADMIN_ENTRY = new_key("ops", "admin")
KEYED_EXAMPLES = 6
# A bucket a fuzzing burst empties now and then: 429s happen, and must be the documented ones.
KEYED_SEARCH_LIMIT = "2/10"
KEYED_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        # The key in both headers the API documents: schemathesis then takes every case's auth as given
        # (its `ignored_auth` probes drop it, or put a wrong one in one header, and expect a 401). With
        # the bearer alone it generated an X-API-Key beside it now and then, took that as the case's
        # auth, and called the 200 the bearer earned "accepts invalid authentication".
        "headers": {"Authorization": f"Bearer {SEARCH_KEY}", "X-API-Key": SEARCH_KEY},
        "generation": {"mode": "all", "max-examples": KEYED_EXAMPLES, "deterministic": True},
        "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": False}},
    }
)


@pytest.fixture(scope="module")
def keyed_schema(
    real_repository: Path, fuzz_index: Path, tmp_path_factory: pytest.TempPathFactory
) -> schemathesis.BaseSchema:
    """The app as the k8s overlay runs it (keys on, limits on), fuzzed with a search key: every read
    route answers, every admin route must refuse it (403), and without the key everything protected
    must answer 401 (schemathesis' `ignored_auth` re-sends each case without it)."""
    index = copy_index(fuzz_index, tmp_path_factory.mktemp("fuzz-keyed") / "index")
    app = create_app(
        load_settings(
            {},
            model_repository=real_repository,
            qdrant_path=index,
            log_level="ERROR",
            api_keys=f"{SEARCH_ENTRY},{ADMIN_ENTRY}",
            rate_limit_search=KEYED_SEARCH_LIMIT,
        )
    )
    schema = schemathesis.openapi.from_asgi("/docs/openapi.json", app, config=KEYED_CONFIG)
    document = schema.raw_schema
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    return schema


keyed = schemathesis.pytest.from_fixture("keyed_schema")


@keyed.parametrize()
@pytest.mark.minilm
@fuzz_settings(KEYED_EXAMPLES)
def test_with_keys_every_operation_enforces_and_documents_them(case: Any, keyed_tally: Tally) -> None:
    response = case.call()
    keyed_tally.add(case, response.status_code)
    if case.operation.path.startswith("/api/v1/admin"):
        assert response.status_code in (403, 404, 405), response.text  # a search key, never let in
    case.validate_response(response, checks=[*CHECKS, ignored_auth])


@pytest.fixture(scope="module")
def keyed_tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    tally = Tally()
    yield tally
    statuses: collections.Counter[int] = collections.Counter()
    for counts in tally.statuses.values():
        statuses.update(counts)
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    report(request, [f"schemathesis with keys: {sum(statuses.values())} examples [{codes}]"])


# -------------------------------------------------------------------------------------- decoder fuzz

FUZZ_SECONDS = 20
FUZZ_MAX_RUNS = 500_000
FUZZ_PEAK_MIB = 1536  # resident memory the fuzzing process may reach
FUZZ_ADDRESS_SPACE = 8 << 30  # beyond this an allocation fails: a MemoryError, reported as a crash

HARNESS = textwrap.dedent(
    """
    import os
    import sys

    import atheris

    # Coverage feedback from our decoder and from Pillow's Python-level parsers (PNG chunks, JPEG
    # markers, EXIF, every plugin's signature check); the codecs themselves are C, uninstrumented.
    with atheris.instrument_imports(include=["service", "PIL"]):
        import numpy as np
        from PIL import Image

        from service.domain.manifest import ImageSpec

        from service.images.checks import ImageError

        from service.images.decoding import load_image

        from service.images.preprocessing import preprocess

        Image.init()  # Pillow imports its plugins lazily: import them here, to instrument them too

    # One byte per input that made it through decoding and preprocessing (libFuzzer exits without
    # running Python's atexit, so a counter in memory would be lost).
    DECODED = open(os.environ.get("FUZZ_DECODED_LOG", os.devnull), "ab", buffering=0)

    SPECS = [
        ImageSpec(height=224, width=224, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28)),
        ImageSpec(height=64, width=96, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="squash",
                  resample="bilinear"),
    ]


    def TestOneInput(data):
        try:
            image = load_image(data)  # the service's default limits
        except ImageError:
            return  # the documented way to refuse a picture; anything else is a crash
        assert image.mode == "RGB" and min(image.size) >= 8, (image.mode, image.size)
        spec = SPECS[len(data) % len(SPECS)]
        tensor = preprocess(image, spec)
        assert tensor.shape == (3, spec.height, spec.width) and tensor.dtype == np.float32
        assert np.isfinite(tensor).all()
        DECODED.write(b".")


    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
    """
)


def seed_corpus(folder: Path) -> list[Path]:
    """Small valid files of every accepted format and the decoder's special cases."""
    folder.mkdir()
    cover = synthetic_cover(5).resize((24, 32))
    translucent = cover.convert("RGBA")
    translucent.putalpha(100)
    rotated = Image.Exif()
    rotated[0x0112] = 8  # EXIF orientation
    palette = cover.convert("P")
    palette.info["transparency"] = 0
    seeds = {
        "rgb.png": encode_image(cover),
        "rgba.png": encode_image(translucent),
        "palette.png": encode_image(palette, transparency=0),
        "grey16.png": encode_image(cover.convert("I;16")),
        "grey.png": encode_image(cover.convert("L")),
        "baseline.jpg": encode_image(cover, "JPEG", quality=80),
        "progressive.jpg": encode_image(cover, "JPEG", progressive=True),
        "exif.jpg": encode_image(cover, "JPEG", exif=rotated),
        "cmyk.jpg": encode_image(cover.convert("CMYK"), "JPEG"),
        "lossy.webp": encode_image(cover, "WEBP", quality=60),
        "lossless.webp": encode_image(translucent, "WEBP", lossless=True),
    }
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    return sorted(folder.iterdir())


def run_fuzzer(command: list[str], env: dict[str, str], log_path: Path) -> tuple[int, str, float]:
    """Run libFuzzer; returns its exit status, its log and the process's peak resident memory (MiB).

    The peak is the kernel's VmHWM of the fuzzer's own address space, sampled while it runs.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    # Set right after the start: the harness spends its first second importing, long before any input.
    resource.prlimit(process.pid, resource.RLIMIT_AS, (FUZZ_ADDRESS_SPACE, FUZZ_ADDRESS_SPACE))
    status = Path(f"/proc/{process.pid}/status")
    deadline = time.monotonic() + FUZZ_SECONDS + 120
    peak_kib = 0
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            break
        with contextlib.suppress(OSError, ValueError, IndexError):
            # An exiting process (a zombie) still has a status file, without memory lines.
            line = next((x for x in status.read_text().splitlines() if x.startswith("VmHWM:")), None)
            if line is not None:
                peak_kib = max(peak_kib, int(line.split()[1]))
        time.sleep(0.1)
    return process.returncode, log_path.read_text(errors="replace"), peak_kib / 1024


def test_image_decoder_survives_coverage_guided_fuzzing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (dev extra; wheels for Linux x86_64 only)")
    harness = tmp_path / "fuzz_images.py"
    harness.write_text(HARNESS)
    seeds = seed_corpus(tmp_path / "corpus")
    for seed in seeds:  # the corpus itself must decode, or the fuzzer starts from nothing
        load_image(seed.read_bytes())
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [
        sys.executable,
        str(harness),
        str(tmp_path / "corpus"),
        f"-max_total_time={FUZZ_SECONDS}",
        f"-runs={FUZZ_MAX_RUNS}",
        "-seed=1",
        "-timeout=20",  # seconds for one input: a hang is a finding too
        # libFuzzer's own RSS limit reads getrusage's ru_maxrss, which Linux carries across exec from
        # the forking process: after the rest of the suite pytest holds GBs, and the fuzzer would see
        # them as its own. The memory bound is enforced below instead (address-space limit + VmHWM).
        "-rss_limit_mb=0",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    decoded = tmp_path / "decoded.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "FUZZ_DECODED_LOG": str(decoded),
    }
    returncode, log, peak_mib = run_fuzzer(command, env, tmp_path / "fuzzer.log")
    crashes = sorted(artifacts.iterdir())
    # libFuzzer keeps inputs short (a few KB), so the whole crashing input fits in the message.
    assert returncode == 0 and not crashes, (
        f"the image decoder crashed (exit {returncode}); reproduce with `python {harness} <file>`:\n"
        + "\n".join(f"{p} base64={b64(p.read_bytes())}" for p in crashes)
        + "\n"
        + log[-6000:]
    )
    runs = re.search(r"Done (\d+) runs in (\d+) second", log)
    assert runs is not None, log[-3000:]
    speed = re.search(r"stat::average_exec_per_sec:\s*(\d+)", log)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", log)
    edges, features = coverage[-1] if coverage else ("?", "?")
    # Every seed decodes, so anything less means the harness refuses valid pictures: a vacuous fuzz.
    through = decoded.stat().st_size if decoded.exists() else 0
    assert through >= len(seeds), f"only {through} inputs got through load_image + preprocess\n{log[-3000:]}"
    # A decode at the pixel budget holds a few hundred MB (service/images.py converts in strips);
    # more means a leak or an amplifying input.
    assert peak_mib < FUZZ_PEAK_MIB, f"the fuzzing process peaked at {peak_mib:.0f} MiB"
    report(
        request,
        [
            f"atheris: {runs.group(1)} inputs in {runs.group(2)} s ({speed.group(1) if speed else '?'} "
            f"exec/s) from {len(seeds)} seeds; {through} decoded and preprocessed, the rest refused with "
            f"an ImageError; coverage {edges} edges / {features} features; peak RSS {peak_mib:.0f} MiB; "
            "no crash"
        ],
    )
