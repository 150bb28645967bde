"""The base of the API's controllers: one part of /api/v1, the role it needs, in one declaration.

Every controller lives at `/api/v1/<part>`, is tagged `<part>` in the OpenAPI document, and guards each
route with the same two checks in the same order: the caller's key and role first (401/403, costing no
tokens), then the role's rate limit (429). Declaring `part` and `role` on the class says all of that.
"""

from __future__ import annotations

from typing import Any, ClassVar

from litestar import Controller
from litestar.types import Guard

from service.security.auth import Role
from service.security.guards import limit_rate, requires_role


class ApiController(Controller):
    """`class SearchController(ApiController, part="search", role="search")`."""

    role: ClassVar[Role]
    tags: ClassVar[list[str]]
    guards: ClassVar[list[Guard]]

    def __init_subclass__(cls, *, part: str | None = None, role: Role | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that names neither (the copy `openapi_security.declare` makes) keeps its parent's.
        if part is None or role is None:
            return
        cls.path = f"/api/v1/{part}"
        cls.tags = [part]
        cls.role = role
        cls.guards = [requires_role(role), limit_rate(role)]
