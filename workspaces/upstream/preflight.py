"""What both upstream clients (native and aiohttp) check before any I/O, and the one reading of
their errors: a request is refused before it leaves when its URL is not http(s), leaves the
provider's base path or names a blocked IP literal; ``blocked_cause`` finds the SSRF guard's
refusal in whatever a client raised (aiohttp wraps the resolver's error in a connector error).
"""

from __future__ import annotations

import ssl
from typing import NamedTuple

import aiohttp
from yarl import URL

from workspaces.upstream import netguard


class ConnectionKey(NamedTuple):
    """What aiohttp's ClientConnectorError formats ("Cannot connect to host h:p ssl:default");
    the certificate error formats is_ssl."""

    host: str
    port: int | None
    ssl: bool
    is_ssl: bool = False


def default_ssl_context() -> ssl.SSLContext:
    """Verified TLS as aiohttp's default, speaking HTTP/1.1 only."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


def check_request(url: URL, base_path: str) -> None:
    """Refuse ``url`` before connecting: not http(s), no host, or outside ``base_path`` once
    resolved (the provider's secret is in the headers, and another path of its host is not the
    provider)."""
    if url.scheme not in ("http", "https"):
        raise aiohttp.NonHttpUrlClientError(url)
    if not url.raw_host:
        raise aiohttp.InvalidUrlClientError(url)
    if not netguard.is_within(url.raw_path, base_path):
        raise netguard.PathOutsideBaseError(f"{url.path} is outside the provider's base path {base_path}")


def check_literal(host: str) -> None:
    """Literals are not resolved, so the guard the resolver applies to names runs here."""
    if netguard.is_ip(host) and netguard.is_blocked(host):
        raise netguard.BlockedUpstreamError(f"{host} is in a network the gateway may not call")


def blocked_cause(exc: BaseException) -> netguard.BlockedUpstreamError | None:
    """The SSRF guard's refusal behind ``exc``, or None when the call failed for another reason."""
    if isinstance(exc, netguard.BlockedUpstreamError):
        return exc
    inner = getattr(exc, "os_error", None)
    return inner if isinstance(inner, netguard.BlockedUpstreamError) else None
