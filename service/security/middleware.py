"""Authentication as Litestar middleware: who presents which key, before any guard runs.

The middleware only identifies the caller (`request.user` is the key's `Principal` or None,
`request.auth` says what was presented); whether a route lets that caller in is the route's guard's
decision (service/security/guards.py). Identifying never refuses, so a wrong key on a public route
costs nothing and every refusal comes from one place.
"""

from __future__ import annotations

from enum import Enum

from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.types import ASGIApp, Scope, Scopes

from service.security.auth import Principal, presented_key
from service.security.policy import SecurityPolicy


class KeyCheck(str, Enum):
    """What the caller's key amounted to (`request.auth`)."""

    KEYS_OFF = "keys_off"  # no keys configured: nobody is identified
    MISSING = "missing"
    INVALID = "invalid"
    VALID = "valid"


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    def __init__(self, app: ASGIApp, policy: SecurityPolicy, scopes: Scopes | None = None) -> None:
        # Every method is identified (OPTIONS too): the guards decide which ones need a key.
        super().__init__(app, exclude_http_methods=(), scopes=scopes)
        self.policy = policy

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        return identify(self.policy, connection.scope)


def identify(policy: SecurityPolicy, scope: Scope) -> AuthenticationResult:
    """The principal behind the request's key, and what the key amounted to."""
    if not policy.keys.enabled:
        return AuthenticationResult(user=None, auth=KeyCheck.KEYS_OFF)
    key = presented_key(dict(scope["headers"]))
    if key is None:
        return AuthenticationResult(user=None, auth=KeyCheck.MISSING)
    principal: Principal | None = policy.keys.authenticate(key)
    return AuthenticationResult(user=principal, auth=KeyCheck.VALID if principal else KeyCheck.INVALID)


def authentication(policy: SecurityPolicy) -> DefineMiddleware:
    return DefineMiddleware(ApiKeyAuthentication, policy=policy)
