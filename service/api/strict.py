"""Strict JSON bodies: a request body must have the types its OpenAPI document declares.

Litestar converts handler arguments leniently (`strict=False`) so that path and query strings can become
numbers; for JSON bodies that means `0` passes as `false` and `"5"` as `5`. A client relying on that
would break against any other implementation of the published document, so bodies are checked with
msgspec's strict rules before the handler's own (lenient) decoding runs. The check reuses the bytes
Litestar caches for the request; its cost is one more msgspec decode of the body.
"""

from __future__ import annotations

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException


async def strict_json_body(request: Request) -> None:
    """`before_request` hook: refuse a body whose JSON types differ from the handler's `data` type."""
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return
    body = await request.body()
    if not body:
        return  # Litestar answers a missing body itself
    try:
        msgspec.json.decode(body, type=data.annotation)
    except msgspec.ValidationError as exc:
        message, key = _split(str(exc))
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}",
            extra=[{"message": message, "key": key, "source": "body"}],
        ) from None
    except msgspec.DecodeError:
        return  # malformed JSON: Litestar's decoding answers 400 malformed_json


def _split(error: str) -> tuple[str, str]:
    """msgspec's "Expected `bool`, got `int` - at `$.keep_old`" as (message, "keep_old")."""
    message, sep, where = error.rpartition(" - at `$")
    if not sep:
        return error, "data"
    return message, where.rstrip("`").lstrip(".") or "data"
