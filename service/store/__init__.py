"""The anime store over Qdrant: one interface, two backends (qdrant-edge in-process, or a Qdrant URL).

Owns the collection (named vectors from `service.domain.vectors`, payload indexes, alias, metadata),
filters, index parameters and the calls to Qdrant (guarded by timeouts and a breaker). Never imports
HTTP schemas, encoders or use cases: callers hand it vectors and filters, it hands back scored points.
"""
