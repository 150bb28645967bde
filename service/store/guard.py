"""Every Qdrant call the store makes goes through here: a deadline, the circuit breaker, metrics.

Failures come out as one error, `DependencyUnavailable("qdrant", ...)` (a 503), whatever the engine
raised: a server's HTTP errors and timeouts, the embedded store's locked, corrupt or full folder. The
breaker is the shared purgatory one (service/platform/resilience.py); this module only decides what a
store call is and what counts as the store being down.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol

from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from service.platform.errors import DependencyUnavailable
from service.store.edge_client import EdgeStorageError

# The breaker's circuit for the store, as the health endpoints and metrics name it.
CIRCUIT = "qdrant"


class CircuitBreakers(Protocol):
    """What the store needs of service/platform/resilience.py's `Breakers`."""

    async def call(self, circuit: str, dependency: str, run: Callable[[], Any]) -> Any: ...
    async def refuse_if_open(self, circuit: str) -> None: ...


class StoreGuard:
    """Wraps each call to the backend. `on_outage` is told when the store looked down (so the
    collection's schema is checked again once it is back: it may be another store by then)."""

    def __init__(
        self,
        timeout_s: float | None = None,
        *,
        breakers: CircuitBreakers | None = None,
        observer: Callable[[str, float, bool], None] | None = None,
        on_outage: Callable[[], None] | None = None,
    ) -> None:
        # A deadline on each whole call (None: the embedded store, whose calls cannot be interrupted).
        self.timeout_s = timeout_s
        # Shared with the engine's circuits; None in bare use (tools, some tests).
        self.breakers = breakers
        # Called with (operation, seconds, ok) after every Qdrant call: the metrics hook.
        self.observer = observer
        self.on_outage = on_outage

    async def call(self, awaitable: Any, action: str) -> Any:
        """Await one client call (a coroutine not yet started) as `action`, guarded."""
        if self.breakers is None:
            return await self._timed(awaitable, action)
        try:
            return await self.breakers.call(CIRCUIT, CIRCUIT, lambda: self._timed(awaitable, action))
        finally:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started when the circuit was open; a no-op otherwise

    async def refuse_if_down(self) -> None:
        """503 at once while the store's circuit is open, so a request does not encode its query first."""
        if self.breakers is not None:
            await self.breakers.refuse_if_open(CIRCUIT)

    def _down(self) -> None:
        if self.on_outage is not None:
            self.on_outage()

    async def _timed(self, awaitable: Any, action: str) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            # The HTTP client's timeout bounds each socket read, not the call: a server trickling bytes
            # would hold a request for ever. This deadline bounds the whole call.
            result = await (
                asyncio.wait_for(awaitable, self.timeout_s) if self.timeout_s is not None else awaitable
            )
            ok = True
            return result
        except asyncio.TimeoutError as exc:  # before OSError, of which it is a subclass
            self._down()
            within = f"{self.timeout_s:g}s" if self.timeout_s is not None else "the client's timeout"
            raise DependencyUnavailable("qdrant", f"{action}: no answer within {within}") from exc
        except (ResponseHandlingException, ConnectionError, OSError, sqlite3.Error, EdgeStorageError) as exc:
            # sqlite3 (local mode) / EdgeStorageError (qdrant-edge): the embedded store's folder is
            # locked, read-only, corrupt or the disk is full.
            self._down()
            raise DependencyUnavailable("qdrant", f"{action} failed: {exc or type(exc).__name__}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code in (502, 503, 504):
                self._down()
            raise DependencyUnavailable(
                "qdrant", f"{action} failed: HTTP {exc.status_code} {exc.reason_phrase}"
            ) from exc
        finally:
            if self.observer is not None:
                self.observer(action, time.perf_counter() - started, ok)
