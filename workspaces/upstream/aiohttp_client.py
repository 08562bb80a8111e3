"""The upstream client's interface on aiohttp's ClientSession (``UPSTREAM_CLIENT=aiohttp``): the
reference the native client is measured and tested against, and a fallback should the native
one misbehave somewhere. Same checks, same guard, same caps, no redirects, no cookies.

Direct calls resolve names through the guarding resolver. Through a proxy, aiohttp would hand
the target's name to the proxy, so the name is resolved here through the guard first and the
request goes to the checked address (Host header and TLS server name kept); that session's own
resolver only ever resolves the proxy, which is the operator's and not guarded. Each checked
address is tried in turn until the proxy opens a tunnel to one, as the native client does, within
the one total timeout. (A plain ``http://`` target is forwarded to the proxy in absolute form,
aiohttp's way, not tunnelled: there a proxy that cannot reach the address answers the request
itself, e.g. with a 502, and that answer is the call's.)
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp
from yarl import URL

from workspaces.upstream import netguard, preflight
from workspaces.upstream.connection import MAX_FIELD_BYTES, MAX_HEADER_FIELDS
from workspaces.upstream.proxies import Proxy, ProxySettings

_DNS_TTL_S = 300


class AiohttpClient:
    """aiohttp.ClientSession behind the native client's ``request``/``close`` interface."""

    def __init__(
        self,
        resolver,
        *,
        idle_timeout: float = 30.0,
        max_per_host: int = 0,
        proxies: ProxySettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.resolver = resolver
        self.proxies = proxies
        self.ssl_context = ssl_context or preflight.default_ssl_context()
        self._options = {"idle_timeout": idle_timeout, "max_per_host": max_per_host}
        self._direct = self._session(resolver)
        self._proxied: aiohttp.ClientSession | None = None

    def _session(self, resolver) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=resolver,
            limit=0,
            limit_per_host=self._options["max_per_host"],
            keepalive_timeout=self._options["idle_timeout"],
            ttl_dns_cache=_DNS_TTL_S,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
            max_field_size=MAX_FIELD_BYTES,
            max_line_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADER_FIELDS,
        )

    async def request(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        *,
        base_path: str,
    ) -> aiohttp.ClientResponse:
        preflight.check_request(url, base_path)
        host = url.raw_host or ""
        preflight.check_literal(host)
        headers = {"Accept-Encoding": "gzip, deflate", **headers}
        for name, value in headers.items():  # refused before connecting, as the native client does
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError("Newline or carriage return detected in headers. Potential header injection attack.")
        proxy = self.proxies.for_url(url) if self.proxies else None
        try:
            if proxy is None:
                return await self._direct.request(
                    method, url, headers=headers, data=body, timeout=timeout, allow_redirects=False
                )
            return await self._via_proxy(proxy, method, url, headers, body, timeout)
        except aiohttp.ClientError as exc:
            blocked = preflight.blocked_cause(exc)  # raised as the native client raises it
            if blocked is not None:
                raise blocked from None
            raise

    async def _via_proxy(
        self,
        proxy: Proxy,
        method: str,
        url: URL,
        headers: dict[str, str],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """The call through ``proxy`` to each checked address of the target in turn, until the
        proxy connects one (a refused CONNECT or an unreachable address moves to the next)."""
        session, targets, options = await self._through_proxy(url, headers)
        options["proxy"] = proxy.url
        if proxy.authorization:
            options["proxy_headers"] = {"Proxy-Authorization": proxy.authorization}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total if timeout.total else None
        for index, target in enumerate(targets):
            if index and deadline is not None:  # later addresses get what is left of the total
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                timeout = aiohttp.ClientTimeout(
                    total=remaining,
                    connect=timeout.connect,
                    sock_read=timeout.sock_read,
                    sock_connect=timeout.sock_connect,
                    ceil_threshold=timeout.ceil_threshold,
                )
            try:
                return await session.request(
                    method, target, headers=headers, data=body, timeout=timeout, allow_redirects=False, **options
                )
            except (aiohttp.ClientConnectorError, aiohttp.ClientHttpProxyError):
                if index == len(targets) - 1:
                    raise
        raise AssertionError("unreachable: targets is never empty")

    async def _through_proxy(self, url: URL, headers: dict[str, str]) -> tuple[aiohttp.ClientSession, list[URL], dict]:
        """The session, the URL on each guard-checked address and the options for a proxied call."""
        host = url.raw_host or ""
        if self._proxied is None:
            self._proxied = self._session(aiohttp.DefaultResolver())
        options: dict = {}
        if netguard.is_ip(host):
            return self._proxied, [url], options
        try:
            addresses = await self.resolver.resolve(host, url.port or 0, family=socket.AF_UNSPEC)
        except OSError as exc:
            if isinstance(exc, netguard.BlockedUpstreamError):
                raise
            raise aiohttp.ClientConnectorDNSError(preflight.ConnectionKey(host, url.port, True), exc) from None
        headers.setdefault("Host", url.host_port_subcomponent or host)
        if url.scheme == "https":
            options["server_hostname"] = host
        return self._proxied, [url.with_host(address["host"]) for address in addresses], options

    async def close(self) -> None:
        await self._direct.close()
        if self._proxied is not None:
            await self._proxied.close()
        await self.resolver.close()
