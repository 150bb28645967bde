"""What the request gate enforces, declared in the OpenAPI document.

The gate (service/security/middleware.py) wraps the router, so Litestar's schema generation never sees
it: without this, a client generated from `/docs/openapi.json` would know nothing of API keys, and a
401, 403 or 429 would be an undocumented answer. The document follows the running configuration: no
keys configured, no security requirement; no rate limit, no 429.
"""

from __future__ import annotations

from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType

from service.security.middleware import SecurityPolicy, rate_limited

BEARER = "bearerAuth"
API_KEY_HEADER = "apiKeyHeader"
_ERROR = Reference(ref="#/components/schemas/ErrorResponse")


def _error(description: str, *, retry_after: bool = False, challenge: bool = False) -> OpenAPIResponse:
    headers: dict[str, OpenAPIHeader | Reference] = {}
    if retry_after:
        headers["Retry-After"] = OpenAPIHeader(
            description="seconds until a request would be let through",
            schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
            required=True,
        )
    if challenge:
        headers["WWW-Authenticate"] = OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), required=True)
    return OpenAPIResponse(
        description=description,
        content={"application/json": OpenAPIMediaType(schema=_ERROR)},
        headers=headers or None,
    )


def _operations(schema: OpenAPI) -> list[tuple[str, Operation]]:
    found = []
    for path, item in (schema.paths or {}).items():
        for method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
            operation = getattr(item, method, None)
            if isinstance(operation, Operation):
                found.append((path, operation))
    return found


def document_security(schema: OpenAPI, policy: SecurityPolicy) -> None:
    """Add the key schemes, each operation's key requirement and its 401/403/429 answers to `schema`."""
    if policy.keys.enabled:
        components = schema.components if isinstance(schema.components, Components) else Components()
        components.security_schemes = {
            **(components.security_schemes or {}),
            BEARER: SecurityScheme(
                type="http", scheme="bearer", description="an API key: `Authorization: Bearer avs_...`"
            ),
            API_KEY_HEADER: SecurityScheme(
                type="apiKey", name="X-API-Key", security_scheme_in="header", description="the same key"
            ),
        }
        schema.components = components
    for path, operation in _operations(schema):
        role = policy.required_role(path)
        responses = operation.responses if operation.responses is not None else {}
        if policy.keys.enabled and role is not None:
            operation.security = [{BEARER: []}, {API_KEY_HEADER: []}]
            responses["401"] = _error(
                "unauthorized: no API key, or one that is not configured", challenge=True
            )
            if role == "admin":
                responses["403"] = _error("forbidden: the key's role may not use admin routes")
        if rate_limited(policy, path, role):
            responses["429"] = _error("rate_limited: over this client's rate limit", retry_after=True)
        operation.responses = responses
