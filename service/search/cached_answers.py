"""The answer cache around a use case: same `answer(question)` as the use case it wraps.

A question names its own cache identity (`cache_endpoint`, `cache_request`); the wrapper looks the
answer up in the current catalogue generation (service/cache/policy.py) and only calls the use case
on a miss. A degraded answer (a part's model was down) is served but not kept: it must not outlive
the outage.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import msgspec

from service.cache.policy import SearchCache
from service.schemas import QueryInfo


class Question(Protocol):
    @property
    def cache_endpoint(self) -> str: ...

    @property
    def cache_request(self) -> Any: ...


class Answer(Protocol):
    query_info: QueryInfo


Q = TypeVar("Q", bound=Question, contravariant=True)
A = TypeVar("A", bound=Answer)


class Answering(Protocol[Q, A]):
    async def answer(self, question: Q) -> A: ...


class CachedAnswers(Generic[Q, A]):
    def __init__(self, inner: Answering[Q, A], cache: SearchCache, kind: type[A]) -> None:
        self.inner = inner
        self.cache = cache
        self.kind = kind

    async def answer(self, question: Q) -> A:
        key = await self.cache.answer_key(question.cache_endpoint, question.cache_request)
        if key is not None:
            cached = await self.cache.answer(key, self.kind)
            if cached is not None:
                info = msgspec.structs.replace(cached.query_info, cached=True)
                return msgspec.structs.replace(cached, query_info=info)  # type: ignore[type-var]
        fresh = await self.inner.answer(question)
        if key is not None and not fresh.query_info.degraded:
            await self.cache.keep_answer(key, fresh)
        return fresh
