"""SSRF guard for upstream calls: provider base URLs and ``x-portkey-custom-host`` may not
reach loopback, private, link-local (cloud metadata) or other internal ranges unless the
operator allows those networks in ``UPSTREAM_ALLOWED_NETWORKS``.

The check runs where the address is known for sure: in the HTTP client's resolver (so a DNS
name that resolves to an internal address, or re-resolves to one later, is refused at connect
time) and before the call for IP literals, which are not resolved. IPv6 addresses that carry
an IPv4 address (mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged by that address too.

``clean_upstream_base`` refuses a malformed ``x-portkey-custom-host`` with a 400 before any of
this. A request path may not leave the provider's base path either (``/v1/../admin`` would reach
another path of the provider's host with its secret attached): ``resolve_path`` is what the
most lenient server would make of a path, and ``is_within`` the check on it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache
from urllib.parse import unquote, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from django.conf import settings
from yarl import URL

from config.parsing import InvalidParameter

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
    """Refuse an IP-literal URL in a blocked network (names are checked by the resolver). A
    malformed URL is not this check's to report (URLField and clean_upstream_base say what is
    wrong with it; raising ValueError here was a 500 on the provider form)."""
    try:
        host = URL(url).host or ""
    except (ValueError, UnicodeError):
        return
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
    out: list[str] = []
    segments = _segments(path)
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")  # "/a/b/.." is "/a/", a directory
        else:
            out.append(segment)
    return "/".join(out) if out != [""] else "/"


def _segments(path: str) -> list[str]:
    """The segments of ``path`` percent-decoded until nothing changes, split at slashes and
    backslashes."""
    for _ in range(_MAX_DECODES + 1):
        decoded = unquote(path)
        if decoded == path:
            return path.replace("\\", "/").split("/")
        path = decoded
    raise PathOutsideBaseError(f"the path is percent-encoded more than {_MAX_DECODES} times")


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


# A DNS label as resolvers accept it (underscores occur in internal names); "xn--" labels are
# checked by decoding them.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)
_MAX_BASE_URL = 2048


def clean_upstream_base(raw: str, *, param: str) -> str:
    """``raw`` as a base URL to call (``x-portkey-custom-host``): http(s), a host name or IP
    literal, an optional port and path; no credentials, query, fragment or dot segments. The
    base without trailing slash, or InvalidParameter naming ``param``. Without this a malformed
    host reached yarl or the resolver's IDNA codec and came back as a 500."""
    problem = _base_url_problem(raw)
    if problem is not None:
        raise InvalidParameter(param, f"{param}: {problem}")
    return raw.rstrip("/")


@lru_cache(maxsize=256)
def _base_url_problem(raw: str) -> str | None:
    """What is wrong with ``raw`` as a base URL, or None (memoised: a client sends one host)."""
    if len(raw) > _MAX_BASE_URL:
        return f"at most {_MAX_BASE_URL} characters."
    if not raw.isascii() or any(c <= " " or c == "\x7f" for c in raw):
        return "enter a URL without spaces or control characters; write international names as xn--."
    try:
        url = URL(raw)
    except (ValueError, UnicodeError):
        return "enter an http(s) URL such as https://api.example.com/v1 (host, optional port 1-65535, path)."
    if url.scheme not in ("http", "https") or not raw.lower().startswith(url.scheme + "://"):
        return "enter an http:// or https:// URL such as https://api.example.com/v1."
    if url.raw_user is not None or url.raw_password is not None:
        return "must not contain a user name or password; send the provider key in Authorization."
    host = url.raw_host or ""
    if not host:
        return "enter a URL with a host, such as https://api.example.com/v1."
    if url.explicit_port == 0:
        return "enter a port from 1 to 65535."
    if "?" in raw or "#" in raw:
        return "must not contain a query string or fragment."
    if not is_ip(host) and not _is_host_name(host):
        return f"{host[:100]!r} is not a valid host name."
    # yarl has already resolved plain dot segments in url.path: look at what was sent.
    try:
        dots = any(segment in (".", "..") for segment in _segments(urlsplit(raw).path))
    except PathOutsideBaseError:
        dots = True
    if dots:
        return "must not contain '.' or '..' path segments."
    return None


def is_ip(host: str) -> bool:
    """True for an IP literal (which no resolver sees, so the guard checks it directly)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_host_name(host: str) -> bool:
    """A name the resolver can encode: labels of 1-63 characters, 253 in all, valid xn-- labels."""
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        return False
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            return False
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                return False
    return True


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
