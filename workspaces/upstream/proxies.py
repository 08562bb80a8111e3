"""Outbound HTTP proxies for enterprise networks: ``HTTPS_PROXY``, ``HTTP_PROXY`` and
``NO_PROXY`` (lower-case spellings too) read from the environment as curl and requests read
them, through the standard library's own parser (``urllib.request``), so the rules are the ones
operators already know: ``NO_PROXY`` is a comma-separated list of host names, domain suffixes
(``.corp.example``), ``host:port`` and ``*``.

The SSRF guard still applies to the target, never to the proxy (the operator chose it): the
target's name is resolved here through the guard and the proxy is asked to ``CONNECT`` to the
address that passed it, so the proxy's own DNS cannot lead the call somewhere else. Plain
``http://`` targets are tunnelled with ``CONNECT`` as well (one code path, and the proxy never
reads a provider's secret); a proxy that allows ``CONNECT`` only to port 443 cannot reach an
``http://`` upstream on another port: list that host in ``NO_PROXY``.
"""

from __future__ import annotations

import base64
import urllib.request
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from yarl import URL


@dataclass(frozen=True)
class Proxy:
    """One proxy: where to connect, and the Proxy-Authorization header its URL carries."""

    host: str
    port: int
    authorization: str = ""  # "Basic ..." from user:password in the proxy URL

    @property
    def url(self) -> str:
        """The proxy without its credentials (what aiohttp is given, and logs may show)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class ProxySettings:
    """Which proxy, if any, a URL goes through."""

    def __init__(self) -> None:
        found = urllib.request.getproxies_environment()  # read when the client is made
        self._proxies = found
        self._by_scheme = {scheme: _parse(found[scheme], scheme) for scheme in ("http", "https") if found.get(scheme)}

    def __bool__(self) -> bool:
        return bool(self._by_scheme)

    def for_url(self, url: URL) -> Proxy | None:
        proxy = self._by_scheme.get(url.scheme)
        if proxy is None:
            return None
        host = url.raw_host or ""
        target = f"{host}:{url.port}" if url.explicit_port else host
        if urllib.request.proxy_bypass_environment(target, self._proxies):
            return None
        return proxy


def _parse(raw: str, scheme: str) -> Proxy:
    """A proxy URL as curl reads it (``host:port`` without a scheme is http); only http://
    proxies are spoken to. A bad value stops start-up naming the variable."""
    name = f"{scheme.upper()}_PROXY"
    text = raw.strip()
    try:
        url = URL(text if "://" in text else f"http://{text}")
        port = url.port
    except (ValueError, UnicodeError):
        raise ImproperlyConfigured(f"Environment variable {name}={raw!r} is not a URL.") from None
    if url.scheme != "http" or not url.raw_host or port is None:
        raise ImproperlyConfigured(
            f"Environment variable {name}={raw!r} is invalid: expected http://host:port (https:// proxies are not supported)."
        )
    authorization = ""
    if url.user is not None:
        token = base64.b64encode(f"{url.user}:{url.password or ''}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return Proxy(url.raw_host, port, authorization)
