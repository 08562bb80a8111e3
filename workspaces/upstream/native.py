"""The native upstream client: a minimal HTTP/1.1 client on asyncio protocols and httptools.

It replaced aiohttp's ClientSession on the hot path (measured ~2x the throughput; re-run
``bench/bench_upstream_clients.py``): per request, aiohttp builds a ClientRequest (URL and
header objects, auto headers, payload objects), starts a task to write the body and a
StreamReader to read the answer, which together cost more CPU than the rest of the gateway.
This client writes the request in one call and parses the answer in the protocol callbacks
(workspaces.upstream.connection). What it keeps from aiohttp's behaviour: connection pooling
per (scheme, host, port) with an idle timeout and a per-host cap, DNS through the
SSRF-guarding resolver cached 300 s, TLS with the default verified context, no redirects, no
cookies, the same default headers (Accept, Accept-Encoding: gzip, deflate, no User-Agent of
its own), gzip/deflate answers decoded, the same timeouts (total, sock_connect, sock_read) and
aiohttp's exception types, so errors read the same (``aiohttp_client`` is the same interface
on aiohttp itself, selected with ``UPSTREAM_CLIENT=aiohttp``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque

import aiohttp
from yarl import URL

from workspaces.upstream import netguard, preflight
from workspaces.upstream.connection import UpstreamConnection, UpstreamResponse
from workspaces.upstream.proxies import Proxy, ProxySettings
from workspaces.upstream.tunnel import open_tunnel

_DNS_TTL_S = 300.0
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


class NativeClient:
    """Pooled HTTP/1.1 connections to upstreams (one per gateway worker, like a ClientSession).

    ``idle_timeout``: an idle connection is closed after it (by a reaper, so an idle pool does
    not hold sockets the upstream has long forgotten). ``max_per_host``: at most this many
    connections per (scheme, host, port), busy or idle; more requests wait for one (0: no cap).
    """

    def __init__(
        self,
        resolver,
        *,
        idle_timeout: float = 30.0,
        max_per_host: int = 0,
        proxies: ProxySettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.resolver = resolver
        self.idle_timeout = idle_timeout
        self.max_per_host = max_per_host
        self.proxies = proxies
        self.ssl_context = ssl_context or preflight.default_ssl_context()
        self._idle: dict[tuple, list[UpstreamConnection]] = {}
        self._all: set[UpstreamConnection] = set()
        self._open: dict[tuple, int] = {}  # connections per key, connecting ones included
        self._waiters: dict[tuple, deque[asyncio.Future]] = {}
        self._draining: set[asyncio.Task] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[dict]]] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self.closed = False

    async def request(
        self,
        method: str,
        url: URL,
        headers: dict[str, str],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        *,
        base_path: str,
    ) -> UpstreamResponse:
        """Send the request and wait for the answer's status and headers. ``url`` must stay
        under ``base_path`` (the provider's base path) once resolved."""
        preflight.check_request(url, base_path)
        loop = self.loop
        deadline = loop.time() + timeout.total if timeout.total else None
        head = _request_head(method, url, headers, body)
        key = (url.scheme, url.raw_host, url.port)
        conn = self._get(key)
        if conn is None:
            conn = await self._acquire(url, key, timeout.sock_connect, deadline)
        response = UpstreamResponse(conn, url, method == "HEAD", timeout.sock_read, deadline)
        conn.response = response
        conn.transport.write(head + body if body else head)
        try:
            await response._wait_head()
        except BaseException:
            conn.close()
            raise
        return response

    async def close(self) -> None:
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for conn in list(self._all):
            conn.close()
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)
        self._idle.clear()
        await self.resolver.close()

    # --- pool ------------------------------------------------------------------------------
    def _get(self, key: tuple) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_usable = self.loop.time() - self.idle_timeout
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > oldest_usable:
                return conn
            conn.close()
        return None

    def put(self, conn: UpstreamConnection) -> None:
        """A connection whose answer was read to the end: to a waiting request, or idle."""
        conn.response = None
        if self.closed or conn.paused:
            conn.close()
            return
        if self._hand_over(conn.key, conn):
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._reaper is None:
            self._reaper = self.loop.call_later(self.idle_timeout, self._reap)

    def drain(self, response: UpstreamResponse) -> None:
        if self.closed:
            response._conn.close()
            return
        task = self.loop.create_task(response._drain_then_release())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed: out of the pool, and its slot to the next waiting request."""
        if conn not in self._all:
            return
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self._release_slot(conn.key)

    def _release_slot(self, key: tuple) -> None:
        self._open[key] -= 1
        self._hand_over(key, None)  # the next waiting request connects a new one

    def _hand_over(self, key: tuple, conn: UpstreamConnection | None) -> bool:
        """Wake the first request waiting on ``key`` with ``conn`` (None: a free slot)."""
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _reap(self) -> None:
        """Close connections idle for longer than the idle timeout; come back while any is idle."""
        self._reaper = None
        now = self.loop.time()
        expired = now - self.idle_timeout
        soonest = None
        for conns in list(self._idle.values()):
            for conn in list(conns):
                if conn.idle_since <= expired:
                    conn.close()
                else:
                    soonest = conn.idle_since if soonest is None else min(soonest, conn.idle_since)
        if soonest is not None and not self.closed:
            self._reaper = self.loop.call_at(soonest + self.idle_timeout, self._reap)

    async def _acquire(
        self, url: URL, key: tuple, sock_connect: float | None, deadline: float | None
    ) -> UpstreamConnection:
        """A new connection, once the host is under its cap (or a released one handed over)."""
        while self.max_per_host and self._open.get(key, 0) >= self.max_per_host:
            waiter = self.loop.create_future()
            self._waiters.setdefault(key, deque()).append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # woken as we gave up: pass it on
                    handed = waiter.result()
                    if handed is not None:
                        self.put(handed)
                    else:
                        self._hand_over(key, None)
                raise
            if conn is not None and not conn.closed:  # closed while handed over: its slot is free
                return conn
        self._open[key] = self._open.get(key, 0) + 1
        try:
            conn = await self._connect(url, key, sock_connect, deadline)
        except BaseException:
            self._release_slot(key)
            raise
        self._all.add(conn)
        return conn

    async def _connect(
        self, url: URL, key: tuple, sock_connect: float | None, deadline: float | None
    ) -> UpstreamConnection:
        host, port = url.raw_host or "", url.port
        is_tls = url.scheme == "https"
        proxy = self.proxies.for_url(url) if self.proxies else None
        limit = sock_connect
        if deadline is not None:
            remaining = deadline - self.loop.time()
            limit = remaining if limit is None else min(limit, remaining)
        try:
            async with asyncio.timeout(limit):
                addresses = await self._resolve(host, port)
                last: OSError | None = None
                for address in addresses:
                    try:
                        return await self._open_to(address, host, is_tls, key, proxy)
                    except OSError as exc:
                        last = exc
        except TimeoutError:
            if deadline is not None and self.loop.time() >= deadline:
                raise
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from None
        conn_key = preflight.ConnectionKey(host, port, True, is_tls)
        if isinstance(last, ssl.SSLCertVerificationError):
            raise aiohttp.ClientConnectorCertificateError(conn_key, last)
        if isinstance(last, ssl.SSLError):
            raise aiohttp.ClientConnectorSSLError(conn_key, last)
        raise aiohttp.ClientConnectorError(conn_key, last or OSError("no address to connect to"))

    async def _open_to(
        self, address: dict, host: str, is_tls: bool, key: tuple, proxy: Proxy | None
    ) -> UpstreamConnection:
        """Connect to ``address`` (checked by the guard), directly or through ``proxy``."""
        ssl_context = self.ssl_context if is_tls else None
        if proxy is not None:
            conn = UpstreamConnection(self, key)
            transport = await open_tunnel(self.loop, proxy, address["host"], address["port"], conn, ssl_context, host)
            conn.connection_made(transport)
            return conn
        _, conn = await self.loop.create_connection(
            lambda: UpstreamConnection(self, key),
            address["host"],
            address["port"],
            ssl=ssl_context,
            server_hostname=host if is_tls else None,
            family=address["family"],
        )
        return conn

    async def _resolve(self, host: str, port: int | None) -> list[dict]:
        if netguard.is_ip(host):
            preflight.check_literal(host)  # once per new connection; the gateway also checks first
            return [{"host": host, "port": port, "family": 0}]
        now = self.loop.time()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            addresses = await self.resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except OSError as exc:
            if isinstance(exc, aiohttp.ClientError | netguard.BlockedUpstreamError):
                raise
            raise aiohttp.ClientConnectorDNSError(preflight.ConnectionKey(host, port, True), exc) from None
        if len(self._dns) > 1000:
            self._dns.clear()
        self._dns[(host, port)] = (now + _DNS_TTL_S, addresses)
        return addresses


def _request_head(method: str, url: URL, headers: dict[str, str], body: bytes | None) -> bytes:
    """Request line and headers as aiohttp writes them (UTF-8, header injection refused)."""
    parts = [method, " ", url.raw_path_qs, " HTTP/1.1\r\nHost: ", url.host_port_subcomponent or "", "\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError("Newline or carriage return detected in headers. Potential header injection attack.")
        parts += (name, ": ", value, "\r\n")
    if "accept" not in headers:
        parts.append("Accept: */*\r\n")
    parts.append("Accept-Encoding: gzip, deflate\r\n")
    if body:
        parts += ("Content-Length: ", str(len(body)), "\r\n")
    elif method in _BODY_METHODS:
        parts.append("Content-Length: 0\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8")
