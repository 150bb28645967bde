"""A search question whose answer is keyed by its request and the text model version answering.

Text and multimodal searches get the same kind of question: the request as the client sent it, its
query once checked, and the text model version that answers. Their cache identity follows from
that alone: clients of two versions asking the same get their own version's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from service.runtime import TextModel

R = TypeVar("R")


@dataclass(frozen=True)
class RequestQuestion(Generic[R]):
    """`endpoint`: the use case's name in the cache key (`search`, `search/multimodal`)."""

    endpoint: ClassVar[str]
    request: R
    query: str | None
    model: TextModel

    @property
    def cache_request(self) -> R:
        return self.request

    @property
    def cache_endpoint(self) -> str:
        return f"{self.endpoint}@text:{self.model.version}"
