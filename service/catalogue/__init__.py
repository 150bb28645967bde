"""Putting anime in the store and keeping them there: ingest, upsert, pictures at ingest, reindex.

`writer` is the one path behind the ingest CLI and the admin upsert (compose, embed, check client vectors,
upsert); `ingest` is the CLI that feeds it real datasets; `pictures` finds an anime's pictures (inline,
folder, URL); `reindex` rebuilds the collection behind the alias without downtime. May import schemas,
runtime, encoders, store, images, datasets, domain and platform; never search or the API.
"""
