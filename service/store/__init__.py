"""The anime store: named vectors and documents in Qdrant, one collection behind an alias.

Owns the client of whichever Qdrant is in use (a server, or the embedded qdrant-edge engine), the guard
around every call (deadline, circuit breaker, metrics), the collection's lifecycle (creation, schema
check, alias swap, metadata), searches and writes, a reindex's dual writes, the admin views and
snapshots, and the translation of search filters into Qdrant conditions. `qdrant_store.AnimeStore` is
the one object the rest of the service holds; how the parts fit is in that module's docstring.

May import service.domain, service.platform and the sparse vector type of service.encoders; never
the HTTP schemas, the API or the search use cases (their fusion rules come from service.domain).
"""
