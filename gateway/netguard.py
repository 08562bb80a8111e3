"""SSRF guard for upstream calls: provider base URLs and ``x-portkey-custom-host`` may not
reach loopback, private, link-local (cloud metadata) or other internal ranges unless the
operator allows those networks in ``UPSTREAM_ALLOWED_NETWORKS``.

The check runs where the address is known for sure: in the HTTP client's resolver (so a DNS
name that resolves to an internal address, or re-resolves to one later, is refused at connect
time) and before the call for IP literals, which aiohttp does not resolve.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from django.conf import settings
from yarl import URL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local, incl. fd00:ec2::254
        "fe80::/10",
        "ff00::/8",
    )
)


class BlockedUpstreamError(OSError):
    """The upstream address is in a network the gateway may not call."""


@lru_cache(maxsize=8)
def _allowed(networks: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def is_blocked(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in _allowed(tuple(settings.UPSTREAM_ALLOWED_NETWORKS))):
        return False
    return any(ip in net for net in _BLOCKED if net.version == ip.version)


def check_url(url: str) -> None:
    """Refuse an IP-literal URL in a blocked network (names are checked by the resolver)."""
    host = URL(url).host or ""
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return
    if is_blocked(host.strip("[]")):
        raise BlockedUpstreamError(f"{host} is in a network the gateway may not call")


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops addresses in blocked networks."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if not is_blocked(r["host"])]
        if not allowed:
            raise BlockedUpstreamError(f"{host} resolves only to networks the gateway may not call")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
