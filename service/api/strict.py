"""Strict JSON bodies, decoded once: a request body must have the types its OpenAPI document declares.

Litestar converts handler arguments leniently (`strict=False`) so that path and query strings can become
numbers; for JSON bodies that would let `0` pass as `false` and `"5"` as `5`, and a client relying on
that would break against any other implementation of the published document. `StrictBody` is the
app's data DTO: Litestar hands it the raw body and it decodes it once, with msgspec's strict rules,
straight into the handler's `data` type (its `forbid_unknown_fields` structs refuse unknown fields).
The OpenAPI request body is that same type's schema, as without a DTO.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ClassVar

import msgspec
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.exceptions import ClientException, SerializationException, ValidationException
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition

_NOT_FOR_RESPONSES = "StrictBody decodes request bodies only; responses are encoded by Litestar"


class StrictBody(AbstractDTO[Any]):
    """Decode a JSON body into the handler's `data` annotation in one strict msgspec pass."""

    # Each handler's `data` type, by handler id (recorded when Litestar resolves the handler's DTO).
    _data_types: ClassVar[dict[str, Any]] = {}

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        if field_definition.name != "data":
            raise TypeError(_NOT_FOR_RESPONSES)
        cls._data_types[handler_id] = field_definition.annotation

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(field_definition)

    def decode_bytes(self, value: bytes) -> Any:
        request = self.asgi_connection
        data_type = self._data_types[request.route_handler.handler_id]
        try:
            return msgspec.json.decode(value, type=data_type)
        except msgspec.ValidationError as exc:
            message, key = _split(str(exc))
            raise ValidationException(
                detail=f"Validation failed for {request.method} {request.url.path}",
                extra=[{"message": message, "key": key, "source": "body"}],
            ) from None
        except msgspec.DecodeError as exc:
            # The error handler answers 400 `malformed_json` for a SerializationException cause.
            raise ClientException(str(exc)) from SerializationException(str(exc))

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        # Form bodies: none of the service's routes take one.
        raise ClientException("only JSON bodies are accepted")

    def data_to_encodable_type(self, data: Any) -> Any:
        raise TypeError(_NOT_FOR_RESPONSES)

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()  # no transfer model: the body decodes straight into the handler's type

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False


def _split(error: str) -> tuple[str, str]:
    """msgspec's "Expected `bool`, got `int` - at `$.keep_old`" as (message, "keep_old")."""
    message, sep, where = error.rpartition(" - at `$")
    if not sep:
        return error, "data"
    return message, where.rstrip("`").lstrip(".") or "data"
