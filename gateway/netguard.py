"""SSRF guard for upstream calls: provider base URLs and ``x-portkey-custom-host`` may not
reach loopback, private, link-local (cloud metadata) or other internal ranges unless the
operator allows those networks in ``UPSTREAM_ALLOWED_NETWORKS``.

The check runs where the address is known for sure: in the HTTP client's resolver (so a DNS
name that resolves to an internal address, or re-resolves to one later, is refused at connect
time) and before the call for IP literals, which are not resolved. IPv6 addresses that carry
an IPv4 address (mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged by that address too.

A request path may not leave the provider's base path either (``/v1/../admin`` would reach
another path of the provider's host with its secret attached): ``resolve_path`` is what the
most lenient server would make of a path, and ``is_within`` the check on it.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import unquote

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
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates into the operator's own networks
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


# IPv6 ranges whose last 32 bits are an IPv4 address the packet ends up at: IPv4-compatible
# (::127.0.0.1, deprecated but still routed by some stacks), IPv4-mapped, IPv4-translated
# (SIIT) and the well-known NAT64 prefix.
_LOW32_IPV4 = tuple(ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96"))


def _forms(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address and every IPv4 address embedded in it."""
    forms = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _LOW32_IPV4):
            forms.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            forms.append(ip.sixtofour)
        if ip.teredo is not None:
            forms.extend(ip.teredo)
    return forms


def is_blocked(address: str) -> bool:
    """True when ``address`` (or an IPv4 address embedded in it) is in a blocked network and
    none of its forms is in a network the operator allowed."""
    forms = _forms(ipaddress.ip_address(address.split("%", 1)[0]))
    allowed = _allowed(tuple(settings.UPSTREAM_ALLOWED_NETWORKS))
    if any(ip in net for ip in forms for net in allowed if net.version == ip.version):
        return False
    return any(ip in net for ip in forms for net in _BLOCKED if net.version == ip.version)


def check_url(url: str) -> None:
    """Refuse an IP-literal URL in a blocked network (names are checked by the resolver)."""
    host = URL(url).host or ""
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return
    if is_blocked(host.strip("[]")):
        raise BlockedUpstreamError(f"{host} is in a network the gateway may not call")


class PathOutsideBaseError(ValueError):
    """A request path that leaves the provider's base path once resolved."""


# Percent-decoding rounds before a path counts as deliberately obfuscated: servers decode once,
# a few proxies twice; no real API path is encoded three times over.
_MAX_DECODES = 3


def resolve_path(path: str) -> str:
    """``path`` as the most lenient server would read it: percent-decoded until nothing changes,
    backslashes read as slashes (IIS and some proxies do), dot segments removed as RFC 3986
    5.2.4 does. PathOutsideBaseError when it is still encoded after a few rounds."""
    for _ in range(_MAX_DECODES + 1):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        raise PathOutsideBaseError(f"the path is percent-encoded more than {_MAX_DECODES} times")
    out: list[str] = []
    segments = path.replace("\\", "/").split("/")
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")  # "/a/b/.." is "/a/", a directory
        else:
            out.append(segment)
    return "/".join(out) if out != [""] else "/"


@lru_cache(maxsize=2048)
def is_within(path: str, base_path: str) -> bool:
    """True when ``path`` resolved is ``base_path`` or below it (memoised: a handful of
    endpoints per base)."""
    try:
        resolved = resolve_path(path)
    except PathOutsideBaseError:
        return False
    base = base_path.rstrip("/")
    return resolved == base or resolved.startswith(base + "/")


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
