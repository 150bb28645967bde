"""The request gate: API key and role, then rate limits, before any handler runs.

Wraps the whole router (like the metrics middleware), so a rejected request costs a hash and a
bucket lookup, never a model call, and unknown paths are protected like known ones.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from service.schemas import ErrorBody, ErrorResponse
from service.security.auth import KeyRing, Principal, Role, presented_key
from service.security.ratelimit import Buckets, Decision, Limit

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Probes and scrapes are never rate limited: a busy service must still say it is alive.
_EXEMPT = ("/health", "/metrics")


@dataclass
class SecurityPolicy:
    keys: KeyRing
    buckets: Buckets
    search_limit: Limit | None = None
    admin_limit: Limit | None = None
    ip_limit: Limit | None = None
    public_health: bool = True
    public_metrics: bool = True
    trusted_proxies: list[IpNetwork] = field(default_factory=list)

    def required_role(self, path: str) -> Role | None:
        """None = public. Everything under /api/ needs a key once keys are configured."""
        if path.startswith("/api/v1/admin"):
            return "admin"
        if path.startswith("/api/"):
            return "search"
        if path == "/health":
            return None if self.public_health else "search"
        if path == "/metrics":
            return None if self.public_metrics else "search"
        return None

    def role_limit(self, role: Role | None) -> Limit | None:
        """The per-key (or per-address) bucket for a route needing `role`; public routes have none."""
        if role is None:
            return None
        return self.admin_limit if role == "admin" else self.search_limit

    def client_ip(self, scope: Scope) -> str:
        """The peer address, or the first untrusted hop of X-Forwarded-For behind trusted proxies."""
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self.trusted_proxies or not self._trusted(peer):
            return peer
        forwarded = dict(scope["headers"]).get(b"x-forwarded-for", b"").decode("latin-1")
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not self._trusted(hop):
                return hop
        return peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)


def rate_limited(policy: SecurityPolicy, path: str, role: Role | None) -> bool:
    """Whether a request to `path` draws on any bucket (the gate, and the OpenAPI document, ask)."""
    if path in _EXEMPT:
        return False
    return policy.ip_limit is not None or policy.role_limit(role) is not None


def parse_networks(text: str | None) -> list[IpNetwork]:
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in (text or "").split(",") if part.strip()
    ]


async def _reject(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = msgspec.json.encode(ErrorResponse(error=ErrorBody(code=code, message=message), status_code=status))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def gate(policy: SecurityPolicy) -> Callable[[ASGIApp], ASGIApp]:
    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path: str = scope["path"]
            required = policy.required_role(path)
            principal: Principal | None = None
            if policy.keys.enabled and required is not None:
                key = presented_key(dict(scope["headers"]))
                challenge = [(b"www-authenticate", b'Bearer realm="anime-vector-service"')]
                if key is None:
                    await _reject(
                        send, 401, "unauthorized", "an API key is required (Authorization: Bearer)", challenge
                    )
                    return
                principal = policy.keys.authenticate(key)
                if principal is None:
                    await _reject(send, 401, "unauthorized", "the API key is not valid", challenge)
                    return
                if not principal.may(required):
                    message = f"key '{principal.name}' has role '{principal.role}'; this needs '{required}'"
                    await _reject(send, 403, "forbidden", message, [])
                    return
            if rate_limited(policy, path, required):
                ip = policy.client_ip(scope)
                decisions: list[Decision] = []
                if policy.ip_limit is not None:
                    decisions.append(await policy.buckets.take(f"ip:{ip}", policy.ip_limit))
                limit = policy.role_limit(required)
                if limit is not None:
                    who = f"key:{principal.name}" if principal else f"anon:{ip}"
                    decisions.append(await policy.buckets.take(f"{who}:{required}", limit))
                refused = [d for d in decisions if not d.allowed]
                if refused:
                    wait = max(d.retry_after_s for d in refused)
                    headers = [(b"retry-after", str(max(1, math.ceil(wait))).encode())]
                    await _reject(
                        send, 429, "rate_limited", f"too many requests; retry in {wait:.2f}s", headers
                    )
                    return
            state = scope.setdefault("state", {})
            state["auth"] = policy.keys.enabled
            if principal is not None:
                state["principal"] = principal.name
                state["role"] = principal.role
            await app(scope, receive, send)

        return middleware

    return factory
