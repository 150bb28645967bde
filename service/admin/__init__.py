"""Operator use cases: collection stats and info, upsert/delete, reindex jobs, snapshots, health, versions.

What the admin routes and the operator CLIs (`python -m service.admin.versions`) call. May import the
catalogue use cases and everything below them; never the API.
"""
