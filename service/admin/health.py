"""Health of each dependency, measured live (model readiness on the engine, a store round trip)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from service.platform.errors import ServiceError
from service.runtime import Runtime
from service.schemas import ComponentHealth, HealthResponse


async def _probe(check: Callable[[], Awaitable[bool | None]]) -> ComponentHealth:
    started = time.perf_counter()
    try:
        ok = await check()
    except ServiceError as exc:
        return ComponentHealth(status="down", detail=exc.message, latency_ms=_ms(started))
    except Exception as exc:  # a probe must report, never raise
        return ComponentHealth(status="down", detail=f"{type(exc).__name__}: {exc}", latency_ms=_ms(started))
    if ok is False:
        return ComponentHealth(status="down", detail="not ready", latency_ms=_ms(started))
    return ComponentHealth(status="ok", latency_ms=_ms(started))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def check_health(runtime: Runtime) -> HealthResponse:
    """ok: everything answers. degraded: a model is down (its searches answer 503, the rest works).
    down: the store is down (nothing can be served)."""
    components = {"store": await _probe(runtime.store.ping)}
    for model in runtime.engine_models:
        components[f"{runtime.engine.name}:{model}"] = await _probe(
            lambda m=model: runtime.engine.model_ready(m)
        )
    circuits = await runtime.breakers.states() if runtime.breakers is not None else {}
    for circuit, state in circuits.items():
        if state != "closed":
            components[f"circuit:{circuit}"] = ComponentHealth(status="down", detail=f"circuit {state}")
    if components["store"].status != "ok":
        status = "down"
    elif all(c.status == "ok" for c in components.values()):
        status = "ok"
    else:
        status = "degraded"
    return HealthResponse(status=status, components=components)
