"""The Litestar application factory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.admin.operations import AdminService
from service.api.admin_routes import AdminController, provide_admin
from service.api.caller import provide_caller
from service.api.errors import EXCEPTION_HANDLERS
from service.api.openapi_security import document_security
from service.api.search_routes import SearchController
from service.api.similarity_routes import SimilarityController
from service.api.strict import strict_json_body
from service.api.system_routes import health, prometheus_metrics, service_info
from service.catalogue.reindex import Reindexer
from service.encoders.base import InferenceEngine
from service.platform.logs import configure_logging, get_logger
from service.platform.metrics import Metrics
from service.runtime import build_runtime
from service.search.search_service import SearchService
from service.search.similarity import SimilarityService
from service.security.auth import ApiKeyConfigError, KeyRing
from service.security.middleware import SecurityPolicy, gate, parse_networks
from service.security.ratelimit import Limit, build_buckets
from service.settings import Settings, SettingsError, load_settings

log = get_logger("service.http")


def observe(metrics: Metrics) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware: one JSON log line and the HTTP metrics per request, labelled by route template."""

    def middleware_factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            metrics.in_flight.inc()
            try:
                await app(scope, receive, capture)
            finally:
                metrics.in_flight.dec()
                elapsed = time.perf_counter() - started
                # Unmatched paths share one label: a scanner must not create a time series per URL.
                route = scope.get("path_template") or "unmatched"
                metrics.requests.labels(scope["method"], route, str(status)).inc()
                metrics.request_duration.labels(scope["method"], route).observe(elapsed)
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 3),
                )

        return middleware

    return middleware_factory


def provide_search(state: State) -> SearchService:
    return state.search


def provide_similarity(state: State) -> SimilarityService:
    return state.similarity


def create_app(settings: Settings | None = None, *, engine: InferenceEngine | None = None) -> Litestar:
    """Build the app. `engine` replaces the configured one (tests run the same app on either engine)."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    metrics = Metrics()
    policy = security_policy(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = await build_runtime(settings, engine, metrics)
        app.state.runtime = runtime
        # The text model rollout (a promotion recorded in the collection), read now and kept fresh.
        await runtime.current_rollout()
        watcher = asyncio.create_task(runtime.watch_rollout(), name="rollout-watch")
        app.state.search = SearchService(runtime)
        app.state.similarity = SimilarityService(runtime)
        reindexer = Reindexer(runtime, batch_size=settings.reindex_batch_size)
        app.state.admin = AdminService(runtime, reindexer)
        log.info(
            "started",
            engine=runtime.engine.name,
            store=runtime.store.engine,
            store_location=runtime.store.location,
            models={role: m.model_version for role, m in runtime.manifests.items()},
        )
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await reindexer.close()
            await runtime.close()
            await policy.buckets.close()
            log.info("stopped")

    app = Litestar(
        route_handlers=[
            service_info,
            health,
            prometheus_metrics,
            SearchController,
            SimilarityController,
            AdminController,
        ],
        lifespan=[lifespan],
        dependencies={
            "search": Provide(provide_search, sync_to_thread=False),
            "similarity": Provide(provide_similarity, sync_to_thread=False),
            "admin": Provide(provide_admin, sync_to_thread=False),
            "caller": Provide(provide_caller, sync_to_thread=False),
        },
        request_max_body_size=settings.request_max_body_bytes,
        before_request=strict_json_body,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="Anime Vector Service",
            version=__version__,
            description="Search anime by text, picture or both; recommend similar anime.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin(path="/openapi.json")],
        ),
        logging_config=None,
        state=State({"metrics": metrics}),
    )
    # Around the whole router, not as app middleware: Litestar runs middleware only for matched
    # routes, and 404/405 answers must be logged and counted too (its OpenTelemetry plugin hooks
    # in at the same place).
    app.asgi_handler = observe(metrics)(gate(policy)(app.asgi_handler))
    # The gate is outside the router, so its keys and answers are added to the generated document.
    document_security(app.openapi_schema, policy)
    return app


def security_policy(settings: Settings) -> SecurityPolicy:
    """Keys, limits and proxies from settings; a malformed value stops start-up naming the variable."""
    try:
        keys = KeyRing.from_config(settings.api_keys)
    except ApiKeyConfigError as exc:
        raise SettingsError(f"invalid environment variable API_KEYS: {exc}") from exc
    limits = {}
    for name in ("rate_limit_search", "rate_limit_admin", "rate_limit_ip"):
        try:
            limits[name] = Limit.parse(getattr(settings, name))
        except ValueError as exc:
            raise SettingsError(f"invalid environment variable {name.upper()}: {exc}") from exc
    try:
        proxies = parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise SettingsError(f"invalid environment variable TRUSTED_PROXIES: {exc}") from exc
    return SecurityPolicy(
        keys=keys,
        buckets=build_buckets(settings.redis_url),
        search_limit=limits["rate_limit_search"],
        admin_limit=limits["rate_limit_admin"],
        ip_limit=limits["rate_limit_ip"],
        public_health=settings.auth_public_health,
        public_metrics=settings.auth_public_metrics,
        trusted_proxies=proxies,
    )
