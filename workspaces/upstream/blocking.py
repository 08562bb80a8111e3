"""The upstream client for synchronous callers (the OTLP exporter's thread): the same client as
every other outbound call, run on a private event loop owned by the caller, so its pooled
connection is kept alive between calls. Errors come out as the standard library's: the SSRF
guard's refusal as BlockedUpstreamError, any other failure as an OSError (ConnectionError or
TimeoutError) naming what went wrong.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from yarl import URL

from workspaces.upstream import netguard, preflight
from workspaces.upstream.client import UpstreamClient, make_client


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


class BlockingClient:
    """``request`` blocks until the whole answer is read. Not for threads that run an event
    loop; one caller at a time."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: UpstreamClient | None = None

    def request(self, method: str, url: str, *, headers: dict[str, str], body: bytes | None, timeout: float) -> Answer:
        target = URL(url)
        netguard.check_url(url)  # IP literals in blocked networks are refused before any I/O
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            return self._loop.run_until_complete(self._call(method, target, headers, body, timeout))
        except (netguard.BlockedUpstreamError, aiohttp.ClientError) as exc:
            blocked = preflight.blocked_cause(exc)
            if blocked is not None:
                raise blocked from None
            if isinstance(exc, OSError):
                raise
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None

    async def _call(self, method: str, url: URL, headers: dict[str, str], body: bytes | None, timeout: float) -> Answer:
        if self._client is None:
            self._client = make_client()
        resp = await self._client.request(
            method, url, headers, body, aiohttp.ClientTimeout(total=timeout), base_path=url.path
        )
        try:
            data = await resp.read()
        except BaseException:
            resp.close()
            raise
        resp.release()
        names = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in resp.raw_headers}
        return Answer(resp.status, names, data)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        client, self._client = self._client, None
        if loop is None:
            return
        if client is not None:
            loop.run_until_complete(client.close())
        loop.close()
