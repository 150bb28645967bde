"""Route guards: which role a route needs, the secure default for admin routes, and rate limits.

Routes declare their guards (`requires_role(role)` then `limit_rate(role)`, set once for every
controller by service/api/controllers.py `ApiController`); each guard reads the app's
`SecurityPolicy` from `app.state.security` and the caller that the authentication middleware
identified. Order matters: the key and its role first (401/403, costing no tokens), then the
buckets (429).
"""

from __future__ import annotations

import math
from typing import Literal

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AuthenticationResult
from litestar.types import Guard, Scope

from service.platform.errors import ServiceError
from service.security.auth import Principal, Role
from service.security.middleware import KeyCheck, identify
from service.security.policy import SecurityPolicy, is_loopback_client
from service.security.ratelimit import Decision

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="anime-vector-service"'}
ALLOW_REMOTE_SETTING = "ADMIN_ALLOW_REMOTE_WITHOUT_KEYS"


class AdminLoopbackOnly(ServiceError):
    """No API keys are configured and the caller is not on this machine: admin routes stay closed."""

    status_code = 403
    code = "admin_loopback_only"

    def __init__(self) -> None:
        super().__init__(
            "admin routes answer only clients on a loopback address while no API keys are configured; "
            f"configure API_KEYS (an admin key), or set {ALLOW_REMOTE_SETTING}=true to open them "
            "to the network",
            enable=["API_KEYS", f"{ALLOW_REMOTE_SETTING}=true"],
        )


def policy_of(connection: ASGIConnection) -> SecurityPolicy:
    return connection.app.state.security


def caller_of(policy: SecurityPolicy, scope: Scope) -> AuthenticationResult:
    """What the authentication middleware found; paths no route matches never met it, so ask here."""
    if "auth" in scope:
        return AuthenticationResult(user=scope.get("user"), auth=scope["auth"])
    return identify(policy, scope)


def authorize(policy: SecurityPolicy, scope: Scope, role: Role) -> Principal | None:
    """Let the caller in for `role` or raise the refusal (401, 403, or 403 `admin_loopback_only`)."""
    caller = caller_of(policy, scope)
    if caller.auth == KeyCheck.KEYS_OFF:
        if role == "admin" and policy.admin_loopback_only and not is_loopback_client(scope):
            raise AdminLoopbackOnly()
        return None
    if caller.auth == KeyCheck.MISSING:
        raise NotAuthorizedException("an API key is required (Authorization: Bearer)", headers=CHALLENGE)
    principal: Principal | None = caller.user
    if principal is None:
        raise NotAuthorizedException("the API key is not valid", headers=CHALLENGE)
    if not principal.may(role):
        raise PermissionDeniedException(
            f"key '{principal.name}' has role '{principal.role}'; this needs '{role}'"
        )
    return principal


def requires_role(role: Role) -> Guard:
    """A guard: with keys configured, a key of `role` (or admin); without, the secure default for admin."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        authorize(policy_of(connection), connection.scope, role)

    guard.__name__ = f"requires_role_{role}"
    return guard


def requires_role_unless_public(probe: Literal["health", "metrics"]) -> Guard:
    """A guard for probes: public unless AUTH_PUBLIC_HEALTH / AUTH_PUBLIC_METRICS say otherwise."""

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        policy = policy_of(connection)
        public = policy.public_health if probe == "health" else policy.public_metrics
        if not public:
            authorize(policy, connection.scope, "search")

    guard.__name__ = f"requires_role_unless_public_{probe}"
    return guard


def limit_rate(role: Role | None) -> Guard:
    """A guard: one token from the client address's bucket, and one from the key's (or address's)
    bucket for `role`. Probes have no such guard: they are never limited."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        policy = policy_of(connection)
        ip = policy.client_ip(connection.scope)
        decisions: list[Decision] = []
        if policy.ip_limit is not None:
            decisions.append(await policy.buckets.take(f"ip:{ip}", policy.ip_limit))
        limit = policy.role_limit(role)
        if limit is not None:
            principal = connection.scope.get("user")
            who = f"key:{principal.name}" if isinstance(principal, Principal) else f"anon:{ip}"
            decisions.append(await policy.buckets.take(f"{who}:{role}", limit))
        refused = [d for d in decisions if not d.allowed]
        if refused:
            wait = max(d.retry_after_s for d in refused)
            raise TooManyRequestsException(
                f"too many requests; retry in {wait:.2f}s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    guard.__name__ = f"limit_rate_{role or 'public'}"
    return guard
