"""Who is asking, for the text model's A/B split (service/domain/rollout.py): a dependency of the routes."""

from __future__ import annotations

from litestar import Request

from service.domain.rollout import Caller
from service.security.auth import Principal
from service.security.middleware import KeyCheck

CLIENT_ID_HEADER = "x-client-id"
_MAX_CLIENT_ID = 128


def provide_caller(request: Request) -> Caller:
    """The API key's name when keys are configured (the authentication middleware identified it),
    else the caller's own `X-Client-Id`. Overriding the version needs an admin key; with no keys
    configured everyone who may reach the service may."""
    principal = request.scope.get("user")
    header = (request.headers.get(CLIENT_ID_HEADER) or "").strip()[:_MAX_CLIENT_ID]
    name = principal.name if isinstance(principal, Principal) else None
    client = name or header or None
    keys_on = request.scope.get("auth", KeyCheck.KEYS_OFF) != KeyCheck.KEYS_OFF
    may_override = (isinstance(principal, Principal) and principal.role == "admin") if keys_on else True
    return Caller(client=client, may_override=may_override)
