"""Upstream forwarding: request headers in, response relayed out (the answer is read for the
log by analytics/usage.py as it passes).

Bodies are forwarded byte for byte; the one exception is a streaming request that did not
ask for usage, where ``stream_options.include_usage`` is added so the log gets token counts,
and the usage-only chunk this produces is withheld from the client.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import aiohttp
import httptools
from yarl import URL

from analytics.usage import StreamRelay
from workspaces.upstream import netguard

Send = Callable[[dict], Awaitable[None]]

# Never forwarded upstream: hop-by-hop headers, our own, and the caller's credentials.
_DROP_REQUEST = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "authorization",
    "cookie",
    "accept-encoding",
}
# Never relayed back: framing is ours (aiohttp already decoded any content-encoding).
_DROP_RESPONSE = {
    b"content-length",
    b"content-encoding",
    b"transfer-encoding",
    b"connection",
    b"keep-alive",
    b"date",
    b"server",
}
SENSITIVE_HEADER_WORDS = ("authorization", "api-key", "apikey", "secret", "token", "cookie", "password")


def upstream_headers(client_headers: dict[str, str], provider_secret: str) -> dict[str, str]:
    headers = {
        name: value
        for name, value in client_headers.items()
        if name not in _DROP_REQUEST and not name.startswith("x-portkey-")
    }
    if provider_secret:
        headers["authorization"] = f"Bearer {provider_secret}"
    return headers


@functools.lru_cache(maxsize=2048)
def _sensitive(name: str) -> bool:
    return any(word in name for word in SENSITIVE_HEADER_WORDS)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers as stored with a log: anything that can carry a credential is redacted."""
    return {name: ("[redacted]" if _sensitive(name) else value) for name, value in headers.items()}


def response_headers(resp: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in _DROP_RESPONSE]


async def wait_for_disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def relay_stream(resp: UpstreamResponse, send: Send, relay: StreamRelay) -> None:
    async for chunk in resp.content.iter_any():
        data = relay.feed(chunk)
        if data and relay.first_chunk_at is None:
            relay.first_chunk_at = time.perf_counter()
        if relay.done:
            # [DONE] ends the stream: finish the response in the same write. The upstream's
            # end of body (chunked terminator) may still be on its way: it is drained after
            # the request by ``resp.release()``, so neither the response nor its log waits
            # for it, and no disconnect can be seen between the two (uvicorn reports one to
            # any receive() once the response is complete).
            await send({"type": "http.response.body", "body": data + relay.tail(), "more_body": False})
            return
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": relay.tail(), "more_body": False})


async def race_disconnect(work: Awaitable[None], receive: Callable[[], Awaitable[dict]]) -> bool:
    """Run ``work`` until it ends or the client goes away; True when the client went away.

    ``work`` runs in the calling task and one watcher task cancels it when the client
    disconnects: one extra task per stream instead of two, and no asyncio.wait bookkeeping.
    The watcher can only act while the caller is suspended inside ``work``, so its
    cancellation is always delivered there."""
    task = asyncio.current_task()
    running = True
    gone = False

    async def watch() -> None:
        nonlocal gone
        await wait_for_disconnect(receive)
        if running:
            gone = True
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await work
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled from outside: not ours to swallow
        task.uncancel()
        return True
    except Exception:
        if gone:
            task.uncancel()
            return True
        raise
    finally:
        running = False
        watcher.cancel()
    if gone:  # the work swallowed the cancellation
        task.uncancel()
        return True
    return False


# --------------------------------------------------------------------------- upstream client
#
# A minimal HTTP/1.1 client for the provider call, on asyncio protocols and httptools (the
# parser uvicorn uses). It replaces aiohttp's ClientSession on the hot path: per request,
# aiohttp builds a ClientRequest (URL and header objects, auto headers, payload objects),
# starts a task to write the body and a StreamReader to read the answer, which together cost
# more CPU than the rest of the gateway. This client writes the request in one call and
# parses the answer in the protocol callbacks. What it keeps from aiohttp's behaviour:
# connection pooling per (scheme, host, port) with a 30 s keep-alive, DNS through the
# SSRF-guarding resolver cached 300 s, TLS with the default verified context, no redirects,
# no cookies, the same default headers (Accept, Accept-Encoding: gzip, deflate, no
# User-Agent of its own), gzip/deflate answers decoded, the same timeouts (total,
# sock_connect, sock_read) and aiohttp's exception types, so errors read the same.

_SSL_CONTEXT = ssl.create_default_context()
_SSL_CONTEXT.set_alpn_protocols(("http/1.1",))
_DNS_TTL_S = 300.0
_KEEPALIVE_S = 30.0
_HIGH_WATER = 256 * 1024  # unread answer bytes above which the socket stops being read
_DRAIN_S = 10.0  # how long a released answer's remaining body may take before its connection is dropped
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


class _ConnectionKey(NamedTuple):
    # What aiohttp's ClientConnectorError formats ("Cannot connect to host h:p ssl:default");
    # the certificate error formats is_ssl.
    host: str
    port: int | None
    ssl: bool
    is_ssl: bool = False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class UpstreamResponse:
    """An upstream answer: status and raw headers once ``request`` returns, the body as it
    arrives (``read``, ``content.iter_any``). ``release`` returns the connection to the pool
    once the body has been read to the end; ``close`` drops it."""

    __slots__ = (
        "_chunked",
        "_conn",
        "_deadline",
        "_decoder",
        "_done",
        "_eof",
        "_error",
        "_head",
        "_head_only",
        "_keep_alive",
        "_length",
        "_loop",
        "_size",
        "_sock_read",
        "_streaming",
        "_waiter",
        "chunks",
        "raw_headers",
        "status",
    )

    def __init__(self, conn: _UpstreamConnection, head_only: bool, sock_read: float | None, deadline: float | None):
        self._conn = conn
        self._loop = conn.loop
        self._head: asyncio.Future | None = self._loop.create_future()
        self._head_only = head_only
        self._sock_read = sock_read
        self._deadline = deadline
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._done = False  # released or closed
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._keep_alive = False
        self._length = False
        self._chunked = False
        self._decoder = None
        self._streaming = False

    # --- aiohttp-compatible surface used by the gateway ----------------------------------
    @property
    def content(self) -> UpstreamResponse:
        return self

    @property
    def content_type(self) -> str:
        for name, value in self.raw_headers:
            if name.lower() == b"content-type":
                return value.decode("latin-1").split(";", 1)[0].strip().lower()
        return "application/octet-stream"

    async def read(self) -> bytes:
        """The rest of the body (all of it when nothing was read yet)."""
        while not self._eof:
            await self._wait()
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks = []
        self._size = 0
        return data

    async def iter_any(self):
        """Body data as it arrives: whatever is buffered, joined, per iteration."""
        self._streaming = True  # from now on a slow reader stops the socket being read
        while True:
            if self.chunks:
                chunks, self.chunks = self.chunks, []
                self._size = 0
                if self._conn.paused:
                    self._conn.resume()
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif self._eof:
                return
            else:
                await self._wait()

    def release(self) -> None:
        """Back to the pool once the body is read to its end; if its end is still coming
        (a stream's terminator after [DONE]), read it in the background first."""
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn.closed or self._error is not None:
            conn.close()
        elif self._eof:
            if self._keep_alive:
                conn.pool._put(conn)
            else:
                conn.close()
        else:
            conn.pool._drain(self)

    async def _drain_then_release(self) -> None:
        self._streaming = True  # discard as it comes, never buffer a whole remainder
        self._sock_read = _DRAIN_S if self._sock_read is None else min(self._sock_read, _DRAIN_S)
        try:
            while not self._eof:
                self.chunks = []
                self._size = 0
                if self._conn.paused:
                    self._conn.resume()
                await self._wait()
        except Exception:
            self._conn.close()
            return
        if self._keep_alive and not self._conn.closed:
            self._conn.pool._put(self._conn)
        else:
            self._conn.close()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._conn.close()

    # --- waiting ---------------------------------------------------------------------------
    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        handle = self._timer(waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
        if self._error is not None and not self.chunks and not self._eof:
            raise self._error

    def _timer(self, future: asyncio.Future) -> asyncio.TimerHandle | None:
        """Fail ``future`` at the sock_read or total deadline, whichever is first."""
        loop = self._loop
        if self._sock_read is None and self._deadline is None:
            return None
        now = loop.time()
        when, error = math.inf, None
        if self._sock_read is not None:
            when, error = now + self._sock_read, aiohttp.SocketTimeoutError
        if self._deadline is not None and self._deadline <= when:
            when, error = self._deadline, TimeoutError
        return loop.call_at(when, self._expire, future, error)

    def _expire(self, future: asyncio.Future, error: type[BaseException]) -> None:
        if not future.done():
            self._fail(error("Timeout on reading data from socket") if error is aiohttp.SocketTimeoutError else error())
            self._conn.close()

    async def _wait_head(self) -> None:
        head = self._head
        handle = self._timer(head)
        try:
            await head
        finally:
            if handle is not None:
                handle.cancel()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- protocol events -----------------------------------------------------------------
    def _on_headers(self, status: int, keep_alive: bool) -> bool:
        """Headers complete; False for an interim 1xx answer (then the real one follows)."""
        if 100 <= status < 200 and status != 101:
            self.raw_headers = []
            return False
        self.status = status
        encoding = b""
        for name, value in self.raw_headers:
            lower = name.lower()
            if lower == b"content-length":
                self._length = True
            elif lower == b"transfer-encoding":
                self._chunked = b"chunked" in value.lower()
            elif lower == b"content-encoding":
                encoding = value.strip().lower()
        if encoding in (b"gzip", b"x-gzip", b"deflate") and not self._head_only:
            self._decoder = zlib.decompressobj(47)  # zlib or gzip header, detected
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(None)
        if self._head_only or status in (204, 304):
            # No body follows (the parser cannot know a HEAD answer has none).
            self._keep_alive = keep_alive and not self._head_only
            self._finish()
        return True

    def _on_body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                self._fail(aiohttp.ClientPayloadError(f"Can not decode content-encoding: {exc}"))
                self._conn.close()
                return
            if not data:
                return
        self.chunks.append(data)
        self._size += len(data)
        if self._streaming and self._size > _HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _on_complete(self, keep_alive: bool) -> None:
        if self._eof:
            return
        self._keep_alive = keep_alive
        self._finish()

    def _finish(self) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            self._decoder = None
            if rest:
                self.chunks.append(rest)
        self._eof = True
        self._wake()

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._eof or self._error is not None:
            return
        if self._head is not None:
            self._fail(aiohttp.ServerDisconnectedError() if exc is None else aiohttp.ClientOSError(*exc.args))
        elif exc is None and not self._length and not self._chunked:
            self._keep_alive = False  # the body ran until the connection closed
            self._finish()
        else:
            self._fail(aiohttp.ClientPayloadError("Response payload is not completed"))

    def _fail(self, error: BaseException) -> None:
        self._error = error
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class _UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the on_* methods while parsing."""

    def __init__(self, pool: UpstreamClient, key: tuple) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # malformed answer, or an upgrade nobody asked for
            response._fail(aiohttp.ClientPayloadError(f"Invalid answer from the provider: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        response = self.response
        if response is not None:
            response._on_lost(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.response._on_headers(parser.get_status_code(), parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.response._on_body(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None and response.status:  # not the end of an interim 1xx answer
            response._on_complete(self.parser.should_keep_alive())

    # helpers
    def pause(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
            if self.transport is not None:
                self.transport.close()


class UpstreamClient:
    """Pooled HTTP/1.1 connections to providers (one per gateway worker, like a ClientSession)."""

    def __init__(self, resolver) -> None:
        self.loop = asyncio.get_running_loop()
        self.resolver = resolver
        self._idle: dict[tuple, list[_UpstreamConnection]] = {}
        self._all: set[_UpstreamConnection] = set()
        self._draining: set[asyncio.Task] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[dict]]] = {}
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
        under ``base_path`` (the provider's base path) once resolved: the provider's secret is
        in ``headers``, and another path of its host is not the provider."""
        if url.scheme not in ("http", "https"):
            raise aiohttp.NonHttpUrlClientError(url)
        if not url.raw_host:
            raise aiohttp.InvalidUrlClientError(url)
        if not netguard.is_within(url.raw_path, base_path):
            raise netguard.PathOutsideBaseError(f"{url.path} is outside the provider's base path {base_path}")
        loop = self.loop
        deadline = loop.time() + timeout.total if timeout.total else None
        head = _request_head(method, url, headers, body)
        key = (url.scheme, url.raw_host, url.port)
        conn = self._get(key)
        if conn is None:
            conn = await self._connect(url, key, timeout.sock_connect, deadline)
        response = UpstreamResponse(conn, method == "HEAD", timeout.sock_read, deadline)
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
        for conn in list(self._all):
            conn.close()
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)
        self._idle.clear()
        await self.resolver.close()

    # --- pool ------------------------------------------------------------------------------
    def _get(self, key: tuple) -> _UpstreamConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_usable = self.loop.time() - _KEEPALIVE_S
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > oldest_usable:
                return conn
            conn.close()
        return None

    def _put(self, conn: _UpstreamConnection) -> None:
        conn.response = None
        if self.closed or conn.paused:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)

    def _drain(self, response: UpstreamResponse) -> None:
        if self.closed:
            response._conn.close()
            return
        task = self.loop.create_task(response._drain_then_release())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _forget(self, conn: _UpstreamConnection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def _connect(
        self, url: URL, key: tuple, sock_connect: float | None, deadline: float | None
    ) -> _UpstreamConnection:
        host, port = url.raw_host or "", url.port
        is_tls = url.scheme == "https"
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
                        _, conn = await self.loop.create_connection(
                            lambda: _UpstreamConnection(self, key),
                            address["host"],
                            address["port"],
                            ssl=_SSL_CONTEXT if is_tls else None,
                            server_hostname=host if is_tls else None,
                            family=address["family"],
                        )
                    except OSError as exc:
                        last = exc
                        continue
                    self._all.add(conn)
                    return conn
        except TimeoutError:
            if deadline is not None and self.loop.time() >= deadline:
                raise
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from None
        conn_key = _ConnectionKey(host, port, True, is_tls)
        if isinstance(last, ssl.SSLCertVerificationError):
            raise aiohttp.ClientConnectorCertificateError(conn_key, last)
        if isinstance(last, ssl.SSLError):
            raise aiohttp.ClientConnectorSSLError(conn_key, last)
        raise aiohttp.ClientConnectorError(conn_key, last or OSError("no address to connect to"))

    async def _resolve(self, host: str, port: int | None) -> list[dict]:
        if _is_ip(host):
            # Literals are not resolved, so the guard the resolver applies to names runs here
            # (once per new connection; the gateway also refuses them before calling).
            if netguard.is_blocked(host):
                raise netguard.BlockedUpstreamError(f"{host} is in a network the gateway may not call")
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
            raise aiohttp.ClientConnectorDNSError(_ConnectionKey(host, port, True), exc) from None
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
