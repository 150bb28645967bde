"""Prometheus metrics of the façade: HTTP, encoders, store, caches. Names are the README's contract.

The registry only: the wrappers that feed it sit with what they observe (the encoder engine's in
`service/encoders/instrumented.py`), so this module imports nothing of the service above the platform.

One registry per app (not prometheus_client's global one), so tests and embedded uses can build
several apps in one process. A pod runs one uvicorn process, so no multiprocess mode is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from service import __version__

# Around the PRD's SLA targets (100/150/300/400 ms) so their percentiles are read off real bucket edges.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
# The classic text format every Prometheus parses (Litestar appends the charset).
CONTENT_TYPE = "text/plain; version=0.0.4"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "avs_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "avs_http_request_duration_seconds",
            "HTTP request latency, from the first byte in to the last byte out",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("avs_http_requests_in_flight", "HTTP requests being served", registry=r)
        self.encoder_duration = Histogram(
            "avs_encoder_duration_seconds",
            "One inference call on the encoder engine (a batch), per model and version",
            ["engine", "model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.encoder_batch = Histogram(
            "avs_encoder_batch_size",
            "Rows per inference call",
            ["engine", "model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.encoder_errors = Counter(
            "avs_encoder_errors",
            "Failed inference calls",
            ["engine", "model", "version", "reason"],
            registry=r,
        )
        self.text_version_requests = Counter(
            "avs_text_version_requests",
            "Requests answered with each text model version (the A/B split), by endpoint and outcome",
            ["version", "endpoint", "outcome"],
            registry=r,
        )
        self.store_duration = Histogram(
            "avs_store_duration_seconds",
            "One Qdrant call",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter("avs_store_errors", "Failed Qdrant calls", ["operation"], registry=r)
        self.cache_requests = Counter(
            "avs_cache_requests", "Cache lookups by outcome", ["cache", "result"], registry=r
        )
        self.build = Info("avs_build", "Service version and wiring", registry=r)
        self.build.info({"version": __version__})

    def describe(self, **labels: str) -> None:
        self.build.info({"version": __version__, **labels})

    def observe_store(self, operation: str, seconds: float, ok: bool) -> None:
        self.store_duration.labels(operation).observe(seconds)
        if not ok:
            self.store_errors.labels(operation).inc()

    @contextmanager
    def text_version(self, endpoint: str, version: int) -> Iterator[None]:
        """Count one request answered by a text model version: ok, or error (then re-raised)."""
        try:
            yield
        except Exception:
            self.text_version_requests.labels(str(version), endpoint, "error").inc()
            raise
        self.text_version_requests.labels(str(version), endpoint, "ok").inc()

    def cache_result(self, cache: str, hit: bool) -> None:
        self.cache_requests.labels(cache, "hit" if hit else "miss").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
