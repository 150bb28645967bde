"""What the guards enforce, declared through Litestar's own OpenAPI configuration.

The key schemes go into `OpenAPIConfig.components`, each protected router carries the `security`
requirement, and each route declares the 401/403/429 answers its guards can give, all decided from the
running configuration before the app is built: no keys configured, no security requirement (admin
routes then document the 403 of the loopback-only default, unless remote access is allowed); no rate
limit, no 429. A client generated from `/docs/openapi.json` knows every answer it can get.
"""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Controller
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIResponse,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType

from service.api.errors import EnvelopeOperation
from service.schemas import ErrorResponse
from service.security.auth import Role
from service.security.policy import SecurityPolicy

BEARER = "bearerAuth"
API_KEY_HEADER = "apiKeyHeader"

Routes = TypeVar("Routes", type[Controller], HTTPRouteHandler)


def security_components(policy: SecurityPolicy) -> Components:
    """`OpenAPIConfig.components`: the two ways to present a key, when keys are configured."""
    if not policy.keys.enabled:
        return Components()
    return Components(
        security_schemes={
            BEARER: SecurityScheme(
                type="http", scheme="bearer", description="an API key: `Authorization: Bearer avs_...`"
            ),
            API_KEY_HEADER: SecurityScheme(
                type="apiKey", name="X-API-Key", security_scheme_in="header", description="the same key"
            ),
        }
    )


def security_requirement(policy: SecurityPolicy) -> list[dict[str, list[str]]] | None:
    """A protected router's `security=`: either scheme satisfies it; none when keys are off."""
    return [{BEARER: []}, {API_KEY_HEADER: []}] if policy.keys.enabled else None


def guard_answers(policy: SecurityPolicy, role: Role | None, *, limited: bool) -> dict[int, ResponseSpec]:
    """The refusals a route's guards can give under this configuration."""
    answers: dict[int, ResponseSpec] = {}
    if policy.keys.enabled and role is not None:
        answers[401] = _answer("unauthorized: no API key, or one that is not configured")
        if role == "admin":
            answers[403] = _answer("forbidden: the key's role may not use admin routes")
    elif role == "admin" and policy.admin_loopback_only:
        answers[403] = _answer(
            "admin_loopback_only: no API keys are configured and the client is not on a loopback address"
        )
    if limited and (policy.ip_limit is not None or policy.role_limit(role) is not None):
        answers[429] = _answer("rate_limited: over this client's rate limit")
    return answers


def declare(routes: Routes, answers: dict[int, ResponseSpec]) -> Routes:
    """`routes` (a controller or one handler) with `answers` added to each operation's documented ones,
    and each operation documented as a `GuardedOperation` (so only the service's own error answers).

    Handlers are copied, never changed: the module-level ones serve every app built in this process,
    each under its own configuration.
    """
    if isinstance(routes, HTTPRouteHandler):
        return _with_answers(routes, answers)
    handlers = {
        name: _with_answers(value, answers)
        for name in dir(routes)
        if isinstance(value := getattr(routes, name), HTTPRouteHandler)
    }
    return type(routes.__name__, (routes,), {**handlers, "__module__": routes.__module__})


def _with_answers(handler: HTTPRouteHandler, answers: dict[int, ResponseSpec]) -> HTTPRouteHandler:
    declared = copy(handler)
    declared.responses = {**(handler.responses or {}), **answers}
    declared.operation_class = GuardedOperation
    return declared


def _answer(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorResponse, description=description)


@dataclass
class GuardedOperation(EnvelopeOperation):
    """An operation whose refusals name their headers: a 401 challenges, a 429 says when to retry
    (a `ResponseSpec` describes a body, not headers)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for status, header, schema in (
            ("401", "WWW-Authenticate", Schema(type=OpenAPIType.STRING)),
            ("429", "Retry-After", Schema(type=OpenAPIType.INTEGER, minimum=1)),
        ):
            response: Any = (self.responses or {}).get(status)
            if isinstance(response, OpenAPIResponse):
                response.headers = {
                    **(response.headers or {}),
                    header: OpenAPIHeader(schema=schema, required=True, description=_HEADER_TEXT.get(header)),
                }


_HEADER_TEXT = {"Retry-After": "seconds until a request would be let through"}
