"""/docs renders without internet access: the page loads every file from the service itself.

Litestar's default page loads Swagger UI from a CDN, and is blank on a machine that cannot reach it. The
page is read here as a browser would: every script, style sheet and icon it names must be on this
origin and served with a type the browser will run or apply. (That the UI then shows the operations is
checked in a real browser.) No model is loaded: the page and its files need none.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from service.api.openapi_ui import ASSETS_DIR, SWAGGER_UI_VERSION
from service.app import create_app
from service.security.auth import new_key
from service.settings import load_settings

BASE = "http://avs.test"
ADMIN_KEY, ADMIN_ENTRY = new_key("ops", "admin")
# What a browser needs to hear to run a script or apply a style sheet (with X-Content-Type-Options).
EXPECTED_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",)}


class Resources(HTMLParser):
    """Every URL the page makes the browser fetch, and what each is for."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for attribute in ("src", "href"):
            if named.get(attribute):
                self.urls.append((tag, named[attribute] or ""))


async def served(settings_overrides: dict) -> AsyncIterator[httpx.AsyncClient]:
    # The app without its lifespan: the docs router serves from the package and the document alone.
    app = create_app(load_settings({}, log_level="WARNING", **settings_overrides))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


@pytest.fixture(params=["open", "keys-and-limits"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The service as deployed without keys, and with keys and every rate limit on: /docs is public."""
    overrides = {} if request.param == "open" else {"api_keys": ADMIN_ENTRY, "rate_limit_ip": "1000/60"}
    async for test_client in served(overrides):
        yield test_client


async def test_docs_page_loads_every_file_from_this_origin(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = Resources()
    parser.feed(page.text)
    urls = dict((url, tag) for tag, url in parser.urls)
    assert {tag for tag in urls.values()} == {"script", "link"}
    scripts = [url for url, tag in urls.items() if tag == "script"]
    assert any(url.endswith("/swagger-ui-bundle.js") for url in scripts), scripts
    for url in urls:
        absolute = urljoin(f"{BASE}/docs", url)
        assert urlsplit(absolute)[:2] == urlsplit(BASE)[:2], f"{url} is not on this origin"
        answer = await client.get(absolute)
        assert answer.status_code == 200, (url, answer.status_code)
        suffix = "." + url.rsplit(".", 1)[-1]
        content_type = answer.headers["content-type"].split(";")[0]
        assert content_type in EXPECTED_TYPES.get(suffix, ("image/png",)), (url, content_type)
        # The version is in the URL, so each copy may be cached for good.
        assert "immutable" in answer.headers["cache-control"]
    # Nothing else on the page points away either (the inline script builds the UI from the document).
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page.text)
    assert "SwaggerUIBundle(" in page.text


async def test_a_missing_asset_is_the_error_envelope(client: httpx.AsyncClient) -> None:
    answer = await client.get(f"/docs/assets/swagger-ui-{SWAGGER_UI_VERSION}/nope.js")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_the_vendored_copy_is_the_version_named_with_its_licence_and_checksums() -> None:
    bundle = (ASSETS_DIR / "swagger-ui-bundle.js").read_text(encoding="utf-8")
    assert f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in bundle
    licence = (ASSETS_DIR / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "SmartBear" in (ASSETS_DIR / "NOTICE").read_text(encoding="utf-8")
    readme = (ASSETS_DIR / "README.md").read_text(encoding="utf-8")
    assert f"swagger-ui-dist {SWAGGER_UI_VERSION}" in readme
    listed = dict(re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", readme, flags=re.MULTILINE))
    assert set(listed) == {
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "swagger-ui.css",
        "favicon-32x32.png",
    }
    for name, digest in listed.items():
        assert hashlib.sha256((ASSETS_DIR / name).read_bytes()).hexdigest() == digest, name


async def test_playground_is_public_self_contained_and_under_its_policy(client: httpx.AsyncClient) -> None:
    """/playground and its files come from this origin only, under a policy that runs nothing else. (What
    the page does is checked in a real browser: tests/test_playground_browser.py.)"""
    page = await client.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["img-src"] == "* data: blob:"
    parser = Resources()
    parser.feed(page.text)
    fetched = [(tag, url) for tag, url in parser.urls if not url.startswith("data:")]
    assert sorted(tag for tag, _ in fetched) == ["a", "a", "link", "script"]
    for tag, url in fetched:
        absolute = urljoin(f"{BASE}/playground", url)
        assert urlsplit(absolute)[:2] == urlsplit(BASE)[:2], f"{url} is not on this origin"
        if tag == "a":
            continue
        answer = await client.get(absolute)
        assert answer.status_code == 200, (url, answer.status_code)
        content_type = answer.headers["content-type"].split(";")[0]
        assert content_type in EXPECTED_TYPES["." + url.rsplit(".", 1)[-1]], (url, content_type)
        assert "immutable" in answer.headers["cache-control"]  # the files' hash is in their path
