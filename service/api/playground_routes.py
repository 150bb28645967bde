"""GET /playground: a search page served by the façade itself, and its two files.

The page (`static/playground/`) calls the public API from the browser as any client would, so it holds
no data and needs no key of its own: it is public like /docs, and limited per address. It has no build
step and loads nothing from elsewhere, so it works offline; its Content-Security-Policy lets it run only
its own script and style sheet, talk only to this service, and show cover pictures from anywhere.
"""

from __future__ import annotations

import hashlib
from html import escape
from pathlib import Path

from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.static_files import create_static_files_router

from service.security.guards import limit_rate

PLAYGROUND_DIR = Path(__file__).parent / "static" / "playground"
ASSETS_DIR = PLAYGROUND_DIR / "assets"

# Covers are URLs on other hosts (and the picture being searched with is a data: URL); nothing else
# may come from anywhere but this origin, and no inline script or style runs.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src * data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


def _assets_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(ASSETS_DIR.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# The files' own hash is in their path: a browser may keep them for good, and a new release is a new URL.
ASSETS_PATH = f"/playground/assets-{_assets_digest()}"
_PAGE = (PLAYGROUND_DIR / "index.html").read_text(encoding="utf-8")
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # Cover hosts see no referrer (some refuse a foreign one); the API calls are same-origin anyway.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@get("/playground", include_in_schema=False, guards=[limit_rate(None)], media_type=MediaType.HTML)
async def playground(request: Request) -> Response[str]:
    # Behind a proxy that mounts the service under a prefix, every URL the page uses carries it.
    prefix = escape(request.scope.get("root_path", "").rstrip("/"))
    page = _PAGE.replace("{assets}", f"{prefix}{ASSETS_PATH}").replace("{base}", prefix)
    return Response(page, media_type=MediaType.HTML, headers=_HEADERS)


def playground_router() -> Router:
    """The page and its files; public, limited per client address like /docs."""
    assets = create_static_files_router(
        path=ASSETS_PATH,
        directories=[ASSETS_DIR],
        name="playground-assets",
        cache_control=CacheControlHeader(max_age=365 * 24 * 3600, public=True, immutable=True),
        guards=[limit_rate(None)],
        include_in_schema=False,
    )
    return Router("/", route_handlers=[playground, assets], include_in_schema=False)
