"""The HTTP surface: Litestar route handlers, exception handlers, the OpenAPI document.

Handlers are thin: parse (msgspec structs from `service.schemas`), call one use case, shape the answer.
May import every use-case package and `service.security`; nothing below the use cases imports this.
"""
