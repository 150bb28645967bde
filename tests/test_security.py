"""API keys and roles, rate limits, hostile text, TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient
from litestar.testing import transport as test_transport

from service.app import create_app
from service.catalogue.ingest import ingest
from service.platform.logs import configure_logging
from service.runtime import build_runtime
from service.security.__main__ import main as keys_cli
from service.security.auth import KeyRing, new_key
from service.security.policy import SecurityPolicy, is_loopback_client, parse_networks
from service.security.ratelimit import MemoryBuckets
from service.settings import SettingsError, load_settings
from service.triton_local.launcher import free_port
from tests.conftest import TEST_CLIENT_PEER, copy_index
from tests.processes import start_service, stop

ADMIN_KEY, ADMIN_ENTRY = new_key("ops", "admin")
SEARCH_KEY, SEARCH_ENTRY = new_key("web", "search")
OTHER_SEARCH_KEY, OTHER_SEARCH_ENTRY = new_key("mobile", "search")
KEYS = ",".join([ADMIN_ENTRY, SEARCH_ENTRY, OTHER_SEARCH_ENTRY])


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def index(real_repository: Path, bangumi_documents, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("security-index")

    async def fill() -> None:
        runtime = await build_runtime(load_settings({}, model_repository=real_repository, qdrant_path=folder))
        try:
            await ingest(runtime, bangumi_documents[:20], progress=False)
        finally:
            await runtime.close()

    asyncio.run(fill())
    return folder


def _settings(repository: Path, index: Path, **overrides):
    return load_settings({}, model_repository=repository, qdrant_path=index, **overrides)


@pytest.fixture
async def secured(real_repository, index) -> AsyncIterator[AsyncTestClient]:
    app = create_app(_settings(real_repository, index, api_keys=KEYS, cache_enabled=False))
    async with AsyncTestClient(app) as client:
        yield client


def _admin_routes(app) -> list[tuple[str, str]]:
    routes = []
    for route in app.routes:
        if route.path.startswith("/api/v1/admin"):
            for method in sorted(getattr(route, "methods", ())):
                if method not in ("HEAD", "OPTIONS"):
                    path = (
                        route.path.replace("{anime_id:str}", "x")
                        .replace("{job_id:str}", "j")
                        .replace("{name:str}", "n")
                    )
                    routes.append((method, path))
    return routes


async def test_every_admin_route_needs_an_admin_key(secured):
    routes = _admin_routes(secured.app)
    assert len(routes) >= 10
    for method, path in routes:
        body = {"json": {}} if method == "POST" else {}
        missing = await secured.request(method, path, **body)
        assert missing.status_code == 401, (method, path)
        assert missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await secured.request(method, path, headers=bearer("avs_not-a-key"), **body)
        assert wrong.status_code == 401, (method, path)
        searcher = await secured.request(method, path, headers=bearer(SEARCH_KEY), **body)
        assert searcher.status_code == 403, (method, path)
        assert searcher.json()["error"]["code"] == "forbidden"
        admin = await secured.request(method, path, headers=bearer(ADMIN_KEY), **body)
        assert admin.status_code not in (401, 403), (method, path, admin.text)


async def test_search_needs_a_key_and_either_role_may_search(secured):
    body = {"query": "robots"}
    assert (await secured.post("/api/v1/search", json=body)).status_code == 401
    assert (await secured.post("/api/v1/search", json=body, headers=bearer(SEARCH_KEY))).status_code == 200
    assert (
        await secured.post("/api/v1/search", json=body, headers={"x-api-key": ADMIN_KEY})
    ).status_code == 200
    assert (await secured.get("/api/v1/nowhere")).status_code == 401  # unknown paths are protected too
    assert (await secured.get("/health")).status_code == 200
    assert (await secured.get("/metrics")).status_code == 200
    assert (await secured.get("/")).status_code == 200


async def test_health_and_metrics_can_be_protected(real_repository, index):
    settings = _settings(
        real_repository, index, api_keys=KEYS, auth_public_health=False, auth_public_metrics=False
    )
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.get("/health")).status_code == 401
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/health", headers=bearer(SEARCH_KEY))).status_code == 200


def test_keys_are_configured_hashed_and_bad_configuration_stops_start_up(real_repository, index, capsys):
    assert SEARCH_KEY not in KEYS  # only hashes are configured
    ring = KeyRing.from_config(KEYS)
    assert ring.authenticate(SEARCH_KEY).role == "search"  # type: ignore[union-attr]
    assert ring.authenticate(SEARCH_KEY[:-1] + "x") is None
    assert keys_cli(["new-key", "--name", "batch", "--role", "admin"]) == 0
    printed = capsys.readouterr().out
    key = printed.split("store it nowhere else): ")[1].split()[0]
    entry = printed.split("comma-separated):")[1].split()[0]
    assert KeyRing.from_config(entry).authenticate(key).name == "batch"  # type: ignore[union-attr]
    for bad in ("web:superuser:" + "0" * 64, "web:search:abc", "just-a-key"):
        with pytest.raises(SettingsError, match="API_KEYS"):
            create_app(_settings(real_repository, index, api_keys=bad))
    with pytest.raises(SettingsError, match="RATE_LIMIT_SEARCH"):
        create_app(_settings(real_repository, index, rate_limit_search="fast"))


async def test_a_burst_over_the_limit_gets_429_and_other_clients_are_unaffected(real_repository, index):
    settings = _settings(real_repository, index, api_keys=KEYS, rate_limit_search="0.5/5")
    async with AsyncTestClient(create_app(settings)) as client:
        statuses = []
        for _ in range(8):
            response = await client.post(
                "/api/v1/search", json={"query": "robots"}, headers=bearer(SEARCH_KEY)
            )
            statuses.append(response.status_code)
        assert statuses[:5] == [200] * 5
        assert set(statuses[5:]) == {429}
        limited = await client.post("/api/v1/search", json={"query": "robots"}, headers=bearer(SEARCH_KEY))
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 3
        other = await client.post(
            "/api/v1/search", json={"query": "robots"}, headers=bearer(OTHER_SEARCH_KEY)
        )
        assert other.status_code == 200
        assert (await client.get("/health")).status_code == 200  # probes are never limited


async def test_the_openapi_document_declares_keys_and_limits_only_when_configured(real_repository, index):
    open_app = create_app(_settings(real_repository, index))
    async with AsyncTestClient(open_app) as client:
        document = (await client.get("/docs/openapi.json")).json()
    assert "securitySchemes" not in document.get("components", {})
    assert "security" not in document["paths"]["/api/v1/search"]["post"]
    assert not {"401", "403", "429"} & set(document["paths"]["/api/v1/search"]["post"]["responses"])

    secured_app = create_app(_settings(real_repository, index, api_keys=KEYS, rate_limit_admin="1/5"))
    async with AsyncTestClient(secured_app) as client:
        document = (await client.get("/docs/openapi.json")).json()
    assert set(document["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    search, stats = (
        document["paths"]["/api/v1/search"]["post"],
        document["paths"]["/api/v1/admin/stats"]["get"],
    )
    assert search["security"] == stats["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert {"401"} <= set(search["responses"]) and not {"403", "429"} & set(search["responses"])
    assert {"401", "403", "429"} <= set(stats["responses"])
    assert stats["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    # Public routes stay public in the document too.
    assert "security" not in document["paths"]["/health"]["get"]


async def test_admin_routes_have_their_own_limit(real_repository, index):
    """A pipeline hammering the admin API runs out of admin tokens, not of its search tokens."""
    settings = _settings(
        real_repository, index, api_keys=KEYS, rate_limit_admin="0.2/3", rate_limit_search="0.5/10"
    )
    async with AsyncTestClient(create_app(settings)) as client:
        statuses = [
            (await client.get("/api/v1/admin/stats", headers=bearer(ADMIN_KEY))).status_code for _ in range(5)
        ]
        assert statuses == [200, 200, 200, 429, 429]
        limited = await client.get("/api/v1/admin/stats", headers=bearer(ADMIN_KEY))
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 6
        # Reads with the same key draw on the search bucket, which is untouched.
        search = await client.post("/api/v1/search", json={"query": "robots"}, headers=bearer(ADMIN_KEY))
        assert search.status_code == 200


def test_forwarded_for_names_the_client_only_behind_a_trusted_proxy():
    policy = SecurityPolicy(
        keys=KeyRing([]), buckets=MemoryBuckets(), trusted_proxies=parse_networks("10.0.0.0/8, 127.0.0.1")
    )

    def scope(peer: str, forwarded: str | None) -> dict:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return {"client": (peer, 1234), "headers": headers}

    assert policy.client_ip(scope("10.1.2.3", "198.51.100.7, 10.9.9.9")) == "198.51.100.7"
    assert policy.client_ip(scope("127.0.0.1", "203.0.113.5")) == "203.0.113.5"
    assert policy.client_ip(scope("198.51.100.99", "203.0.113.5")) == "198.51.100.99"  # untrusted peer
    assert policy.client_ip(scope("10.1.2.3", "not-an-ip, 10.0.0.1")) == "not-an-ip"
    assert policy.client_ip(scope("10.1.2.3", None)) == "10.1.2.3"


async def test_per_address_limits_ignore_forwarded_for_from_untrusted_peers(real_repository, index):
    settings = _settings(real_repository, index, rate_limit_ip="0.5/3", trusted_proxies="127.0.0.0/8")
    async with AsyncTestClient(create_app(settings)) as client:
        # The test client's peer is not a trusted proxy: spoofed X-Forwarded-For share one bucket.
        codes = [
            (
                await client.get("/api/v1/search/by-id/x", headers={"x-forwarded-for": f"203.0.113.{i}"})
            ).status_code
            for i in range(5)
        ]
        assert codes[:3] == [404, 404, 404] and codes[3:] == [429, 429]


async def test_rate_limits_are_shared_by_replicas_through_redis(real_repository, index, redis_url, tmp_path):
    def replica(name: str):
        # Each replica its own local store folder (one writer per folder); Redis is what they share.
        folder = copy_index(index, tmp_path / name)
        limits = {"api_keys": KEYS, "rate_limit_search": "0.2/4", "redis_url": redis_url}
        return create_app(_settings(real_repository, folder, **limits))

    async with AsyncTestClient(replica("a")) as first, AsyncTestClient(replica("b")) as second:
        codes = []
        for i in range(6):
            client = first if i % 2 == 0 else second
            response = await client.get("/api/v1/search/by-id/x", headers=bearer(ADMIN_KEY))
            codes.append(response.status_code)
        assert codes[:4] == [404] * 4 and codes[4:] == [429, 429]


REMOTE_PEER = "203.0.113.7"  # TEST-NET-3: an address that is certainly not this machine


@pytest.fixture
def remote_client(monkeypatch):
    """Requests of Litestar's test client arrive from REMOTE_PEER instead of this machine."""
    parse = test_transport.TestClientTransport.parse_request

    def from_remote(self, request):
        scope = parse(self, request)
        scope["client"] = (REMOTE_PEER, 50000)
        return scope

    monkeypatch.setattr(test_transport.TestClientTransport, "parse_request", from_remote)


def test_only_a_loopback_peer_that_relays_for_nobody_is_local():
    def scope(peer: str, *headers: tuple[bytes, bytes]) -> dict:
        return {"client": (peer, 1234), "headers": list(headers)}

    for local in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", TEST_CLIENT_PEER):
        assert is_loopback_client(scope(local)), local
    for remote in ("10.0.0.1", "192.168.1.20", REMOTE_PEER, "::ffff:10.0.0.1", "2001:db8::1", "0.0.0.0"):
        assert not is_loopback_client(scope(remote)), remote
    # Names are not addresses: the in-process test client's made-up peer is not local by itself.
    assert not is_loopback_client(scope("testclient"))
    assert not is_loopback_client({"headers": []})
    # A proxy on this machine relays remote clients: what it relays is never local.
    for header in (b"x-forwarded-for", b"forwarded", b"x-real-ip"):
        assert not is_loopback_client(scope("127.0.0.1", (header, b"198.51.100.1")))


async def test_without_keys_admin_routes_answer_a_client_on_this_machine(real_repository, index, tmp_path):
    # A copy: every admin route is called, reindex and delete included.
    folder = copy_index(index, tmp_path / "index")
    async with AsyncTestClient(create_app(_settings(real_repository, folder))) as client:
        for method, path in _admin_routes(client.app):
            body = {"json": {}} if method == "POST" else {}
            response = await client.request(method, path, **body)
            assert response.status_code not in (401, 403), (method, path, response.text)


async def test_without_keys_admin_routes_refuse_a_remote_client_and_say_how_to_open_them(
    real_repository, index, remote_client
):
    async with AsyncTestClient(create_app(_settings(real_repository, index))) as client:
        routes = _admin_routes(client.app)
        assert len(routes) >= 10
        for method, path in routes:
            body = {"json": {}} if method == "POST" else {}
            response = await client.request(method, path, **body)
            assert response.status_code == 403, (method, path)
            error = response.json()["error"]
            assert error["code"] == "admin_loopback_only"
            assert "ADMIN_ALLOW_REMOTE_WITHOUT_KEYS=true" in error["message"]
            assert "API_KEYS" in error["message"]
            assert error["details"]["enable"] == ["API_KEYS", "ADMIN_ALLOW_REMOTE_WITHOUT_KEYS=true"]
        # Unknown admin paths refuse the same way; reads stay open to everyone.
        assert (await client.get("/api/v1/admin/nowhere")).json()["error"]["code"] == "admin_loopback_only"
        assert (await client.post("/api/v1/search", json={"query": "robots"})).status_code == 200
        assert (await client.get("/health")).status_code == 200
        document = (await client.get("/docs/openapi.json")).json()
    stats = document["paths"]["/api/v1/admin/stats"]["get"]
    assert "403" in stats["responses"] and "security" not in stats


async def test_without_keys_a_request_relayed_by_a_local_proxy_is_not_local(real_repository, index):
    async with AsyncTestClient(create_app(_settings(real_repository, index))) as client:
        relayed = await client.get("/api/v1/admin/stats", headers={"x-forwarded-for": REMOTE_PEER})
        assert relayed.status_code == 403 and relayed.json()["error"]["code"] == "admin_loopback_only"
        assert (await client.get("/api/v1/admin/stats")).status_code == 200


async def test_admin_allow_remote_without_keys_opens_admin_routes_to_the_network(
    real_repository, index, remote_client
):
    assert load_settings({"ADMIN_ALLOW_REMOTE_WITHOUT_KEYS": "true"}).admin_allow_remote_without_keys
    settings = _settings(real_repository, index, admin_allow_remote_without_keys=True)
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.get("/api/v1/admin/stats")).status_code == 200
        document = (await client.get("/docs/openapi.json")).json()
    assert "403" not in document["paths"]["/api/v1/admin/stats"]["get"]["responses"]


async def test_with_keys_a_remote_admin_key_is_let_in(real_repository, index, remote_client):
    """Keys replace the loopback rule: an admin key works from anywhere."""
    async with AsyncTestClient(create_app(_settings(real_repository, index, api_keys=KEYS))) as client:
        assert (await client.get("/api/v1/admin/stats", headers=bearer(ADMIN_KEY))).status_code == 200
        assert (await client.get("/api/v1/admin/stats")).status_code == 401


async def test_hostile_text_is_refused_or_neutralised_and_logs_stay_one_json_object(secured, capfd):
    configure_logging("INFO")  # route the service's JSON log lines to this test's captured stderr
    headers = bearer(SEARCH_KEY)
    cases = [
        ("x" * 100_000, 422),
        ("\u200b\u200b\u200d", 422),  # only zero-width characters: nothing left to embed
        ("\x1b[31mred\x1b[0m\r\nFAKE LOG LINE", 200),
        ("🤖🚀 ロボット", 200),
        ('"}]} DROP TABLE anime; {"$ne": 1}', 200),
    ]
    for query, status in cases:
        response = await secured.post("/api/v1/search", json={"query": query}, headers=headers)
        assert response.status_code == status, (query[:20], response.text[:200])
    odd_path = await secured.get("/api/v1/search/by-id/%0d%0aFAKE", headers=headers)
    assert odd_path.status_code in (400, 404, 422)
    logs = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert logs and all(isinstance(json.loads(line), dict) for line in logs)
    assert not any(line.startswith("FAKE") for line in logs)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_the_service_serves_tls_with_its_own_certificate(real_repository, index, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    command = ["openssl", *request.split(), "-addext", names, "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)
    trust = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    env = {
        "MODEL_REPOSITORY": str(real_repository),
        "QDRANT_PATH": str(tmp_path / "q"),
        "SSL_CERTFILE": str(cert),
        "SSL_KEYFILE": str(key),
    }
    process = start_service(env, port, tmp_path / "service.log", scheme="https", verify=trust)
    try:
        response = httpx.get(f"https://127.0.0.1:{port}/", verify=trust)
        assert response.status_code == 200 and response.json()["name"] == "anime-vector-service"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=3)
    finally:
        stop(process)
