"""Errors the service answers with: each maps to one HTTP status and one machine-readable code."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class DependencyUnavailable(ServiceError):
    """Triton, Qdrant or another backing service cannot answer now; retrying later may work."""

    status_code = 503
    code = "dependency_unavailable"

    def __init__(self, dependency: str, reason: str, **details: Any) -> None:
        super().__init__(
            f"{dependency} is unavailable: {reason}", dependency=dependency, reason=reason, **details
        )
        self.dependency = dependency
        self.reason = reason


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class InvalidInput(ServiceError):
    """Input that passed schema validation but cannot be served (e.g. empty after normalisation)."""

    status_code = 422
    code = "invalid_input"


class ModelMismatch(ServiceError):
    """The store was built with vectors the deployed models cannot produce (dims, names)."""

    status_code = 503
    code = "model_store_mismatch"


class Forbidden(ServiceError):
    """The caller is known but may not ask for this (e.g. a version override without an admin key)."""

    status_code = 403
    code = "forbidden"
