"""Who is asking, for the text model's A/B split (service/domain/rollout.py): a dependency of the routes."""

from __future__ import annotations

from litestar import Request

from service.domain.rollout import Caller

CLIENT_ID_HEADER = "x-client-id"
_MAX_CLIENT_ID = 128


def provide_caller(request: Request) -> Caller:
    """The API key's name when keys are configured (the gate put it in the scope), else the caller's
    own `X-Client-Id`. Overriding the version needs an admin key; with no keys configured everyone
    holds the admin routes already, so everyone may."""
    state = request.scope.get("state", {})
    principal = state.get("principal")
    header = (request.headers.get(CLIENT_ID_HEADER) or "").strip()[:_MAX_CLIENT_ID]
    client = principal or header or None
    may_override = state.get("role") == "admin" if state.get("auth") else True
    return Caller(client=client, may_override=may_override)
