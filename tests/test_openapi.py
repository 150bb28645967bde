"""The OpenAPI document is a contract a backend developer generates a client from.

It validates as OpenAPI; every operation has a stable, readable operationId (a generated client's
function names); every error answer it documents is the service's one envelope; and a client generated
by openapi-python-client (a standard generator, run as a user would) searches, finds similar anime and
upserts against a running service, with its error answers parsed, not dropped.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from service.app import create_app
from service.domain.documents import AnimeDocument
from service.security.auth import new_key
from service.settings import load_settings
from tests.builders import ingest_documents
from tests.processes import ServiceThread

ROOT = Path(__file__).resolve().parents[1]
# The Makefile installs the generator in a venv of its own (OPENAPI_CLIENT_VENV).
GENERATOR_BIN = ROOT / ".venv-openapi-client" / "bin"
ADMIN_KEY, ADMIN_ENTRY = new_key("ops", "admin")
SEARCH_KEY, SEARCH_ENTRY = new_key("web", "search")

# The names a generated client's functions carry: renaming one breaks every client built on it.
OPERATION_IDS = {
    ("get", "/"): "serviceInfo",
    ("get", "/health"): "health",
    ("get", "/metrics"): "metrics",
    ("post", "/api/v1/search"): "searchText",
    ("post", "/api/v1/search/image"): "searchImage",
    ("post", "/api/v1/search/multimodal"): "searchMultimodal",
    ("get", "/api/v1/search/by-id/{anime_id}"): "searchById",
    ("get", "/api/v1/similarity/{kind}/{anime_id}"): "similarAnime",
    ("post", "/api/v1/similarity/batch"): "similarBatch",
    ("get", "/api/v1/facets"): "listFacets",
    ("post", "/api/v1/admin/vectors/upsert"): "upsertAnime",
    ("delete", "/api/v1/admin/vectors/{anime_id}"): "deleteAnime",
    ("get", "/api/v1/admin/stats"): "collectionStats",
    ("get", "/api/v1/admin/collection/info"): "collectionInfo",
    ("get", "/api/v1/admin/health"): "adminHealth",
    ("post", "/api/v1/admin/reindex"): "startReindex",
    ("get", "/api/v1/admin/reindex"): "listReindexJobs",
    ("get", "/api/v1/admin/reindex/{job_id}"): "getReindexJob",
    ("get", "/api/v1/admin/models/text"): "textModelVersions",
    ("post", "/api/v1/admin/models/text/promote"): "promoteTextModel",
    ("post", "/api/v1/admin/models/text/rollback"): "rollbackTextModel",
    ("post", "/api/v1/admin/snapshots"): "createSnapshot",
    ("get", "/api/v1/admin/snapshots"): "listSnapshots",
    ("post", "/api/v1/admin/snapshots/{name}/restore"): "restoreSnapshot",
    ("delete", "/api/v1/admin/snapshots/{name}"): "deleteSnapshot",
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

DOCS = [
    AnimeDocument(
        anime_id="eva",
        title="Neon Genesis Evangelion",
        genres=["Sci-Fi", "Drama"],
        type="TV",
        status="FINISHED",
        year=1995,
        synopsis="Teenagers pilot giant bio-machines to fight mysterious beings called Angels.",
    ),
    AnimeDocument(
        anime_id="bebop",
        title="Cowboy Bebop",
        genres=["Action", "Sci-Fi"],
        type="TV",
        status="FINISHED",
        year=1998,
        synopsis="Bounty hunters travel the solar system aboard the spaceship Bebop.",
    ),
    AnimeDocument(
        anime_id="k-on",
        title="K-On!",
        genres=["Comedy", "Slice of Life"],
        type="TV",
        status="FINISHED",
        year=2009,
        synopsis="High school girls form a light music club band.",
    ),
]


async def published_document(**settings_overrides: Any) -> dict:
    """/docs/openapi.json as the app publishes it (no lifespan: the document needs no model)."""
    app = create_app(load_settings({}, log_level="WARNING", **settings_overrides))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://avs.test"
    ) as client:
        answer = await client.get("/docs/openapi.json")
    assert answer.status_code == 200
    return answer.json()


# Without keys; and with keys and every limit, where each operation also documents 401/403/429.
CONFIGURATIONS = {
    "open": {},
    "keys-and-limits": {
        "api_keys": f"{ADMIN_ENTRY},{SEARCH_ENTRY}",
        "rate_limit_ip": "100/60",
        "rate_limit_search": "100/60",
        "rate_limit_admin": "10/60",
    },
}


@pytest.fixture(scope="module", params=sorted(CONFIGURATIONS))
def document(request: pytest.FixtureRequest) -> dict:
    return asyncio.run(published_document(**CONFIGURATIONS[request.param]))


def operations(document: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def test_the_document_is_valid_openapi(document: dict) -> None:
    validate(document)  # raises with the offending path when it is not


def test_every_operation_has_its_own_readable_operation_id(document: dict) -> None:
    ids = {(method, path): operation.get("operationId") for method, path, operation in operations(document)}
    assert ids == OPERATION_IDS
    assert len(set(ids.values())) == len(ids)
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]+", name) for name in ids.values()), ids


def test_every_documented_error_is_the_envelope(document: dict) -> None:
    """A client parses each error it can get: the body of every 4xx/5xx the document lists is the
    service's envelope (the 503 of /health is its report), never Litestar's own error body."""
    for method, path, operation in operations(document):
        for status, answer in operation["responses"].items():
            if int(status) < 400:
                continue
            (schema,) = [media["schema"] for media in answer["content"].values()]
            expected = "HealthResponse" if (path, status) == ("/health", "503") else "ErrorResponse"
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path, status, schema)


@pytest.fixture(scope="module")
def small_index(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("openapi-index")
    ingest_documents(load_settings({}, model_repository=tiny_repository, qdrant_path=folder), DOCS)
    return folder


@pytest.fixture
def service(tiny_repository: Path, small_index: Path) -> Iterator[ServiceThread]:
    settings = load_settings(
        {},
        model_repository=tiny_repository,
        qdrant_path=small_index,
        api_keys=f"{ADMIN_ENTRY},{SEARCH_ENTRY}",
        log_level="WARNING",
    )
    with ServiceThread(settings) as running:
        yield running


@pytest.fixture
def generated_client(service: ServiceThread, tmp_path: Path) -> Iterator[Any]:
    """openapi-python-client's package for the running service's document, imported (README
    "Generated clients" runs the same command)."""
    executable = GENERATOR_BIN / "openapi-python-client"
    if not executable.exists():
        pytest.fail(f"{executable} is missing: `make test` installs openapi-python-client there")
    result = subprocess.run(
        [
            str(executable),
            "generate",
            "--url",
            f"{service.base}/docs/openapi.json",
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "avs_client"),
            "--fail-on-warning",
        ],
        # Its formatting hooks (ruff) come from its own venv.
        env={**os.environ, "PATH": f"{GENERATOR_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("avs_client")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.partition(".")[0] == "avs_client"]:
            del sys.modules[name]


def test_a_generated_client_searches_finds_similar_anime_and_upserts(service, generated_client) -> None:
    avs = generated_client
    search_text = importlib.import_module("avs_client.api.search.search_text")
    search_by_id = importlib.import_module("avs_client.api.search.search_by_id")
    similar_anime = importlib.import_module("avs_client.api.similarity.similar_anime")
    upsert_anime = importlib.import_module("avs_client.api.admin.upsert_anime")
    models = importlib.import_module("avs_client.models")

    reader = avs.AuthenticatedClient(base_url=service.base, token=SEARCH_KEY)
    with reader:
        # A search with a filter: the request model serialises its nested filters, the answer is typed.
        found = search_text.sync(
            client=reader,
            body=models.SearchRequest(query="a band", filters=models.SearchFilters(genres=["Comedy"])),
        )
        assert isinstance(found, models.SearchResponse), found
        assert [(r.anime_id, r.title) for r in found.results] == [("k-on", "K-On!")]

        similar = similar_anime.sync(models.SimilarAnimeKind.ANIME, "eva", client=reader, limit=5)
        assert isinstance(similar, models.SimilarityResponse), similar
        assert {r.anime_id for r in similar.results} == {"bebop", "k-on"}

        # Errors come back parsed as the envelope: the operations that lost theirs keep them now.
        missing = search_by_id.sync("no-such-anime", client=reader)
        assert isinstance(missing, models.ErrorResponse) and missing.error.code == "not_found"
        # A search key may not write: the 403 is documented, so it is parsed too.
        refused = upsert_anime.sync(client=reader, body=models.UpsertRequest(documents=[]))
        assert isinstance(refused, models.ErrorResponse) and refused.status_code == 403

    document = {
        "anime_id": "totoro",
        "title": "My Neighbor Totoro",
        "genres": ["Fantasy"],
        "type": "MOVIE",
        "status": "FINISHED",
        "year": 1988,
        "synopsis": "Two sisters befriend a giant forest spirit in rural Japan.",
    }
    with avs.AuthenticatedClient(base_url=service.base, token=ADMIN_KEY) as admin:
        body = models.UpsertRequest(documents=[models.UpsertRequestDocumentsItem.from_dict(document)])
        stored = upsert_anime.sync(client=admin, body=body)
        assert isinstance(stored, models.UpsertResponse), stored
        assert (stored.stored, stored.failed) == (1, 0) and stored.items[0].status == "stored"

        record = search_by_id.sync("totoro", client=admin)
        assert isinstance(record, models.AnimeRecord), record
        assert record.document["title"] == "My Neighbor Totoro"
