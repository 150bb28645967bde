"""What the service's security configuration says: keys, limits, proxies, and who counts as local.

Pure decisions over an ASGI scope, shared by the authentication middleware, the route guards, the
answer to unrouted paths and the OpenAPI declaration, so that all four read one configuration.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from litestar.types import Scope

from service.security.auth import KeyRing, Role
from service.security.ratelimit import Buckets, Limit

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Probes and scrapes are never rate limited: a busy service must still say it is alive.
EXEMPT_FROM_LIMITS = ("/health", "/metrics")
# Headers a proxy adds when it relays a request: their presence means the peer is not the client.
_RELAY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")


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
    # With no keys configured, admin routes answer loopback clients only, unless this is set.
    admin_remote_without_keys: bool = False

    def required_role(self, path: str) -> Role | None:
        """The role a path needs (None = public). Routes declare theirs with guards; this answers for
        paths no route matches, so that an unknown /api/ path is refused like a known one."""
        if path.startswith("/api/v1/admin"):
            return "admin"
        if path.startswith("/api/"):
            return "search"
        if path == "/health":
            return None if self.public_health else "search"
        if path == "/metrics":
            return None if self.public_metrics else "search"
        return None

    @property
    def admin_loopback_only(self) -> bool:
        """Whether admin routes refuse clients that are not on this machine (the secure default)."""
        return not self.keys.enabled and not self.admin_remote_without_keys

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


def is_loopback_client(scope: Scope) -> bool:
    """Whether the request comes from this machine: a loopback peer that relays for nobody.

    The socket's peer is used, never a forwarded address: a proxy on this machine relaying remote
    clients would otherwise make the whole network local, so a relayed request is never local.
    """
    peer = (scope.get("client") or ("", 0))[0]
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False  # a unix socket or a name: not provably local
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not ip.is_loopback:
        return False
    headers = dict(scope.get("headers") or ())
    return not any(name in headers for name in _RELAY_HEADERS)


def rate_limited(policy: SecurityPolicy, path: str, role: Role | None) -> bool:
    """Whether a request to `path` draws on any bucket (the guards, and the OpenAPI document, ask)."""
    if path in EXEMPT_FROM_LIMITS:
        return False
    return policy.ip_limit is not None or policy.role_limit(role) is not None


def parse_networks(text: str | None) -> list[IpNetwork]:
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in (text or "").split(",") if part.strip()
    ]
