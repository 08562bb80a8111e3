"""The one HTTP client for every outbound call (provider calls, the provider probe, alert
webhooks, OTLP export): ``make_client()`` builds the implementation ``UPSTREAM_CLIENT`` names
(``native``, the default, or ``aiohttp``) with the pool settings and the proxies from the
environment. Both implement ``UpstreamClient``; both resolve names through the SSRF guard,
refuse blocked IP literals and paths outside the base path, and never follow a redirect.
"""

from __future__ import annotations

import ssl
from typing import Protocol

import aiohttp
from django.conf import settings
from yarl import URL

from workspaces.upstream import netguard
from workspaces.upstream.aiohttp_client import AiohttpClient
from workspaces.upstream.native import NativeClient
from workspaces.upstream.proxies import ProxySettings

CLIENTS = {"native": NativeClient, "aiohttp": AiohttpClient}


class UpstreamAnswer(Protocol):
    """An answer as both clients return it (aiohttp's ClientResponse surface)."""

    status: int
    raw_headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]

    @property
    def content_type(self) -> str: ...

    async def read(self) -> bytes: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class UpstreamClient(Protocol):
    async def request(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        *,
        base_path: str,
    ) -> UpstreamAnswer: ...

    async def close(self) -> None: ...


def make_client(*, kind: str | None = None, ssl_context: ssl.SSLContext | None = None) -> UpstreamClient:
    """A pooled client for the running event loop (one per loop: connections belong to it)."""
    implementation = CLIENTS[kind or settings.UPSTREAM_CLIENT]
    return implementation(
        netguard.GuardedResolver(),
        idle_timeout=settings.UPSTREAM_IDLE_TIMEOUT,
        max_per_host=settings.UPSTREAM_MAX_CONNECTIONS_PER_HOST,
        proxies=ProxySettings(),
        ssl_context=ssl_context,
    )
