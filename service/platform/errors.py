"""Errors the service answers with: each maps to one HTTP status and one machine-readable code."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """The base of every answerable error; subclasses name their answer in the class line:
    `class Gone(ServiceError, status_code=410, code="gone")`."""

    status_code = 500
    code = "internal_error"

    def __init_subclass__(
        cls, *, status_code: int | None = None, code: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status_code is not None:
            cls.status_code = status_code
        if code is not None:
            cls.code = code

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class DependencyUnavailable(ServiceError, status_code=503, code="dependency_unavailable"):
    """Triton, Qdrant or another backing service cannot answer now; retrying later may work."""

    def __init__(self, dependency: str, reason: str, **details: Any) -> None:
        super().__init__(
            f"{dependency} is unavailable: {reason}", dependency=dependency, reason=reason, **details
        )
        self.dependency = dependency
        self.reason = reason


class NotFound(ServiceError, status_code=404, code="not_found"):
    pass


class InvalidInput(ServiceError, status_code=422, code="invalid_input"):
    """Input that passed schema validation but cannot be served (e.g. empty after normalisation)."""


class ModelMismatch(ServiceError, status_code=503, code="model_store_mismatch"):
    """The store was built with vectors the deployed models cannot produce (dims, names)."""


class Forbidden(ServiceError, status_code=403, code="forbidden"):
    """The caller is known but may not ask for this (e.g. a version override without an admin key)."""
