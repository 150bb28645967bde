"""The ground floor: structured logs, the error family, Prometheus metrics, circuit breakers, progress.

Owns what every other package needs and no package owns: `errors` (each error one HTTP status and one
machine-readable code, raised anywhere and answered by the API), `logs` (JSON lines), `metrics` (one
registry per app, the names the README documents), `resilience` (the one circuit-breaker library),
`progress` (long work on a terminal or in logs). Imports nothing from the service.
"""
