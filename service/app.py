"""The Litestar application factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from service import __version__
from service.admin.operations import AdminService
from service.api.admin_routes import AdminController, provide_admin
from service.api.caller import provide_caller
from service.api.errors import EXCEPTION_HANDLERS
from service.api.facets_routes import FacetsController
from service.api.observe import Observer
from service.api.openapi_security import declare, guard_answers, security_components, security_requirement
from service.api.openapi_ui import swagger_ui, swagger_ui_assets
from service.api.playground_routes import playground_router
from service.api.search_routes import SearchController
from service.api.similarity_routes import SimilarityController
from service.api.strict import StrictBody
from service.api.system_routes import health, prometheus_metrics, service_info
from service.catalogue.reindex import Reindexer
from service.encoders.base import InferenceEngine
from service.platform.logs import configure_logging, get_logger
from service.platform.metrics import Metrics
from service.runtime import build_runtime
from service.search.search_service import SearchService
from service.search.similarity import SimilarityService
from service.security.auth import ApiKeyConfigError, KeyRing
from service.security.guards import limit_rate
from service.security.middleware import authentication
from service.security.policy import SecurityPolicy, parse_networks
from service.security.ratelimit import Limit, build_buckets
from service.settings import Settings, SettingsError, load_settings

log = get_logger("service.http")


def provide_search(state: State) -> SearchService:
    return state.search


def provide_similarity(state: State) -> SimilarityService:
    return state.similarity


def create_app(
    settings: Settings | None = None, *, engine: InferenceEngine | None = None, freeze_gc: bool = False
) -> Litestar:
    """Build the app. `engine` replaces the configured one (tests run the same app on either engine).

    `freeze_gc` (the service's own process, `python -m service`): once started, what start-up built
    (models, tokenizers, settings) lives as long as the process, so it is moved out of the cyclic
    collector's sight (`gc.freeze`) and full collections stop walking it. A similarity batch allocates
    ~10k objects, enough to trigger them: 160 -> 95 ms per batch of 10 ids measured on qdrant-edge.
    Not for a process that builds many apps (tests): what is frozen is never collected."""
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
        if freeze_gc:
            gc.freeze()
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

    observer = Observer(metrics)
    return Litestar(
        route_handlers=routes(policy),
        lifespan=[lifespan],
        dependencies={
            "search": Provide(provide_search, sync_to_thread=False),
            "similarity": Provide(provide_similarity, sync_to_thread=False),
            "admin": Provide(provide_admin, sync_to_thread=False),
            "caller": Provide(provide_caller, sync_to_thread=False),
        },
        # Observe first: its clock and status include the refusals of the guards behind it.
        middleware=[observer.middleware(), authentication(policy)],
        # The router answers unknown paths before any middleware: this hook counts and logs those.
        before_send=[observer.before_send],
        request_max_body_size=settings.request_max_body_bytes,
        dto=StrictBody,
        return_dto=None,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="Anime Vector Service",
            version=__version__,
            description="Search anime by text, picture or both; recommend similar anime.",
            path="/docs",
            components=security_components(policy),
            # Swagger UI from the service's own copy: /docs renders without internet access.
            render_plugins=[swagger_ui("/docs"), JsonRenderPlugin(path="/openapi.json")],
            # The document and the page's files are public, and limited per address like every route
            # but the probes.
            openapi_router=Router(
                "/docs",
                route_handlers=[swagger_ui_assets()],
                guards=[limit_rate(None)],
                include_in_schema=False,
                dto=None,
                return_dto=None,
            ),
        ),
        logging_config=None,
        state=State({"metrics": metrics, "security": policy}),
    )


def routes(policy: SecurityPolicy) -> list[Router]:
    """The routes, each declaring the security requirement and the refusals of its guards under
    this configuration (the guards themselves are declared with the routes)."""
    requirement = security_requirement(policy)
    health_role = None if policy.public_health else "search"
    metrics_role = None if policy.public_metrics else "search"
    return [
        Router("/", route_handlers=[declare(service_info, guard_answers(policy, None, limited=True))]),
        playground_router(),
        Router(
            "/",
            route_handlers=[declare(health, guard_answers(policy, health_role, limited=False))],
            security=requirement if health_role else None,
        ),
        Router(
            "/",
            route_handlers=[declare(prometheus_metrics, guard_answers(policy, metrics_role, limited=False))],
            security=requirement if metrics_role else None,
        ),
        Router(
            "/",
            route_handlers=[
                declare(SearchController, guard_answers(policy, "search", limited=True)),
                declare(SimilarityController, guard_answers(policy, "search", limited=True)),
                declare(FacetsController, guard_answers(policy, "search", limited=True)),
            ],
            security=requirement,
        ),
        Router(
            "/",
            route_handlers=[declare(AdminController, guard_answers(policy, "admin", limited=True))],
            security=requirement,
        ),
    ]


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
        admin_remote_without_keys=settings.admin_allow_remote_without_keys,
        buckets=build_buckets(settings.redis_url),
        search_limit=limits["rate_limit_search"],
        admin_limit=limits["rate_limit_admin"],
        ip_limit=limits["rate_limit_ip"],
        public_health=settings.auth_public_health,
        public_metrics=settings.auth_public_metrics,
        trusted_proxies=proxies,
    )
