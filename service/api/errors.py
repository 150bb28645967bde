"""One error envelope for every failure: `{"error": {"code", "message", "details"}, "status_code"}`.

Clients branch on `error.code`; nothing a client sends can make the service answer with a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIResponse, Operation, Reference
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from service.platform.errors import ServiceError
from service.platform.logs import get_logger
from service.schemas import ErrorBody, ErrorResponse
from service.security.guards import authorize

log = get_logger("service.platform.errors")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    501: "not_supported",
    503: "service_unavailable",
}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict | None = None
) -> Response:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details), status_code=status)
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def _service_error(_: Request, exc: ServiceError) -> Response:
    headers = {"Retry-After": "1"} if exc.status_code == 503 else None
    if exc.status_code >= 500:
        log.warning("dependency_error", code=exc.code, error=exc.message)
    return error_response(exc.status_code, exc.code, exc.message, exc.details or None, headers)


def _validation_error(_: Request, exc: ValidationException) -> Response:
    # Well-formed JSON that breaks the schema: 422, with one entry per offending field.
    details = exc.extra if isinstance(exc.extra, (list, dict)) else None
    return error_response(422, "validation_error", _summary(details) or exc.detail, details)


def _summary(details: Any) -> str | None:
    if isinstance(details, list) and details and isinstance(details[0], dict):
        first = details[0]
        where = first.get("key") or first.get("source") or "body"
        return f"{where}: {first.get('message', 'invalid')}"
    return None


def _msgspec_validation(_: Request, exc: msgspec.ValidationError) -> Response:
    # Raised when a handler validates query parameters through a struct (e.g. similarity filters).
    return error_response(422, "validation_error", str(exc))


def _http_error(_: Request, exc: HTTPException) -> Response:
    if isinstance(exc.__cause__, SerializationException):
        return error_response(400, "malformed_json", f"request body is not valid JSON: {exc.detail}")
    code = _CODES.get(exc.status_code, "http_error")
    details = exc.extra if isinstance(exc.extra, (list, dict)) and exc.extra else None
    return error_response(exc.status_code, code, exc.detail, details, getattr(exc, "headers", None))


def _unrouted(request: Request, exc: HTTPException) -> Response:
    """404/405 from the router itself. No route means no guard ran, so the path's role is checked
    here: an unknown /api/ path answers 401 to a caller without a key, like a known one, and does
    not tell a stranger which paths exist."""
    if "route_handler" not in request.scope:
        policy = request.app.state.security
        role = policy.required_role(request.scope["path"])
        if role is not None:
            try:
                authorize(policy, request.scope, role)
            except HTTPException as refusal:
                return _http_error(request, refusal)
            except ServiceError as refusal:
                return _service_error(request, refusal)
    return _http_error(request, exc)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error; see the service logs"
    )


EXCEPTION_HANDLERS = {
    ServiceError: _service_error,
    msgspec.ValidationError: _msgspec_validation,
    ValidationException: _validation_error,
    NotFoundException: _unrouted,
    MethodNotAllowedException: _unrouted,
    HTTPException: _http_error,
    Exception: _unexpected,
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error envelope, so clients and fuzzers know every documented answer."""
    return {
        status: ResponseSpec(data_container=ErrorResponse, description=_CODES.get(status, "error"))
        for status in statuses
    }


@dataclass
class EnvelopeOperation(Operation):
    """An operation whose documented errors are the ones the service gives, in its envelope.

    Litestar documents a 400 with a body of its own on every operation that takes parameters, for
    its ValidationException. This service answers that exception 422 `validation_error` in the
    envelope (`_validation_error`; the routes declare it), so that 400 is dropped; a route that does
    answer 400 (malformed JSON) declares it with `error_responses`, which replaces Litestar's. Its
    body also typed a field both `array` and `object` with `additionalProperties`, which made client
    generators drop every error answer of those operations.
    """

    def __post_init__(self) -> None:
        answer = (self.responses or {}).get("400")
        if isinstance(answer, OpenAPIResponse) and not _names_its_body(answer):
            del self.responses["400"]  # type: ignore[union-attr]


def _names_its_body(answer: OpenAPIResponse) -> bool:
    """Whether the body is a named schema (the envelope is); Litestar's own error body is inline."""
    return any(isinstance(media.schema, Reference) for media in (answer.content or {}).values())
