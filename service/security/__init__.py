"""API keys with roles, rate limits, and the Litestar middleware and guards that apply them.

May import `service.schemas` (the error body), settings, domain and platform; never a use case.
"""
