"""One JSON log line and the HTTP metrics per request, labelled by route template.

Two Litestar hooks between them see every answer. The middleware measures each routed request from
the moment its route is known to its last byte (in flight, status, duration). Litestar runs
middleware only for routed requests, so the router's own 404/405 answers are seen by a `before_send`
hook instead: they share the label `unmatched` (a scanner must not create a time series per URL),
and their duration is that of their answer, the only part of them the service spends time on.
"""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Scopes, Send

from service.platform.logs import get_logger
from service.platform.metrics import Metrics

log = get_logger("service.http")
_OBSERVED = "avs.observed"  # set in the scope's state by the middleware: before_send leaves it alone
_UNROUTED_STARTED = "avs.unrouted_started"
_UNROUTED_STATUS = "avs.unrouted_status"


class Observer:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def record(self, scope: Scope, status: int, elapsed_s: float) -> None:
        route = scope.get("path_template") or "unmatched"
        self.metrics.requests.labels(scope["method"], route, str(status)).inc()
        self.metrics.request_duration.labels(scope["method"], route).observe(elapsed_s)
        log.info(
            "request",
            method=scope["method"],
            path=scope["path"],
            route=route,
            status=status,
            duration_ms=round(elapsed_s * 1000, 3),
        )

    def middleware(self) -> ObserveRouted:
        return ObserveRouted(self)

    async def before_send(self, message: Message, scope: Scope) -> None:
        """Count and log the answers of requests no route took (the router's 404 and 405)."""
        if scope["type"] != "http":
            return
        state = scope.setdefault("state", {})
        if state.get(_OBSERVED):
            return
        if message["type"] == "http.response.start":
            state[_UNROUTED_STARTED] = time.perf_counter()
            state[_UNROUTED_STATUS] = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            started = state.pop(_UNROUTED_STARTED, None)
            if started is not None:
                self.record(scope, state.pop(_UNROUTED_STATUS), time.perf_counter() - started)


class ObserveRouted(ASGIMiddleware):
    scopes: Scopes = (ScopeType.HTTP,)

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope["state"][_OBSERVED] = True
        metrics = self.observer.metrics
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.in_flight.inc()
        try:
            await next_app(scope, receive, capture)
        finally:
            metrics.in_flight.dec()
            self.observer.record(scope, status, time.perf_counter() - started)
