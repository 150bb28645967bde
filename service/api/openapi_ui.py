"""The /docs page, whole from the façade: Swagger UI from the copy vendored beside this module.

Litestar's render plugin loads Swagger UI's script, style sheet and icon from a CDN, so on a machine
without internet access (an air-gapped cluster, a laptop offline) /docs is a blank page. The copy in
`static/swagger-ui/` (its README: version, origin, licence) is served under the docs router instead,
and the plugin is pointed at it.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

# Upgrading: replace the files (static/swagger-ui/README.md says how) and this number together;
# tests/test_docs_offline.py checks that the bundle is this version.
SWAGGER_UI_VERSION = "5.35.0"
ASSETS_DIR = Path(__file__).parent / "static" / "swagger-ui"
# The version is part of the path: a new copy is a new URL, so a browser may keep each one for good.
_ASSETS = f"/assets/swagger-ui-{SWAGGER_UI_VERSION}"


def swagger_ui(docs_path: str) -> SwaggerRenderPlugin:
    """Swagger UI at `docs_path`, every asset from this service's `docs_path` router."""
    assets = f"{docs_path.rstrip('/')}{_ASSETS}"
    return SwaggerRenderPlugin(
        path="/",
        js_url=f"{assets}/swagger-ui-bundle.js",
        css_url=f"{assets}/swagger-ui.css",
        standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
    )


def swagger_ui_assets() -> Router:
    """The vendored files, for the docs router (which adds its path, guards and rate limit)."""
    return create_static_files_router(
        path=_ASSETS,
        directories=[ASSETS_DIR],
        name="swagger-ui-assets",
        cache_control=CacheControlHeader(max_age=365 * 24 * 3600, public=True, immutable=True),
        include_in_schema=False,
    )
