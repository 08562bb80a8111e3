"""One connection of the native upstream client (workspaces.upstream.native) and the answer
read from it: an asyncio protocol fed to httptools (the parser uvicorn uses), which calls the
``on_*`` methods as it parses, and ``UpstreamResponse``, the answer as the gateway reads it
(the same surface as aiohttp's ClientResponse: ``status``, ``raw_headers``, ``read``,
``content.iter_any``, ``release``, ``close``).

An answer's head is capped as aiohttp caps it (8,190 bytes per header field) and in count and
total size, so a misbehaving or hostile upstream cannot make the gateway buffer an endless
head: past a cap the answer fails with aiohttp.ClientResponseError, as a malformed head does,
and the connection is dropped.
"""

from __future__ import annotations

import asyncio
import math
import zlib

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

_HIGH_WATER = 256 * 1024  # unread answer bytes above which the socket stops being read
DRAIN_S = 10.0  # how long a released answer's remaining body may take before its connection is dropped
MAX_FIELD_BYTES = 8190  # per header name or value, as aiohttp's max_field_size
MAX_HEADER_FIELDS = 100  # as the standard library's http.client
MAX_FIELD_LINE = 2 * MAX_FIELD_BYTES + 4  # "name: value\r\n" at its longest
MAX_HEAD_BYTES = (MAX_HEADER_FIELDS + 1) * MAX_FIELD_LINE  # what the two caps above allow


class HeadTooLarge(ValueError):
    """The answer's head passed one of the caps above."""


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
        "url",
    )

    def __init__(
        self, conn: UpstreamConnection, url: URL, head_only: bool, sock_read: float | None, deadline: float | None
    ):
        self.url = url
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
                conn.pool.put(conn)
            else:
                conn.close()
        else:
            conn.pool.drain(self)

    async def _drain_then_release(self) -> None:
        self._streaming = True  # discard as it comes, never buffer a whole remainder
        self._sock_read = DRAIN_S if self._sock_read is None else min(self._sock_read, DRAIN_S)
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
            self._conn.pool.put(self._conn)
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


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the on_* methods while parsing."""

    def __init__(self, pool, key: tuple) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self.head_bytes = 0  # bytes of the current answer's head received so far
        self.head_parsed = 0  # bytes of its complete header fields

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
            if response._head is not None:  # the head is still incomplete: all of data was head
                self._check_head(len(data))
        except Exception as exc:  # malformed answer, a cap passed, or an upgrade nobody asked for
            response._fail(_invalid_answer(exc, response))
            self.close()

    def _check_head(self, received: int) -> None:
        """Cap what httptools buffers of an unfinished head: it hands a header field over only
        once complete, so an endless one is cut off here (the status line is the slack)."""
        self.head_bytes += received
        if self.head_bytes - self.head_parsed > MAX_FIELD_LINE + 1024:
            raise HeadTooLarge(f"a header field is over {MAX_FIELD_BYTES} bytes")
        if self.head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(f"the answer's head is over {MAX_HEAD_BYTES} bytes")

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self.response
        if response is not None:
            response._on_lost(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.response.raw_headers
        if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
            raise HeadTooLarge(f"a header field is over {MAX_FIELD_BYTES} bytes")
        if len(headers) >= MAX_HEADER_FIELDS:
            raise HeadTooLarge(f"the answer has more than {MAX_HEADER_FIELDS} header fields")
        headers.append((name, value))
        self.head_parsed += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self.head_bytes = self.head_parsed = 0
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
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


def _invalid_answer(exc: Exception, response: UpstreamResponse) -> aiohttp.ClientError:
    """What a malformed answer raises: ClientResponseError for its head (as aiohttp reports a
    bad status line or an oversized header), ClientPayloadError for its body."""
    cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) and exc.__context__ else exc
    message = f"Invalid answer from the provider: {cause}"
    if response._head is None:
        return aiohttp.ClientPayloadError(message)
    info = aiohttp.RequestInfo(response.url, "", CIMultiDictProxy(CIMultiDict()), response.url)
    return aiohttp.ClientResponseError(info, (), status=502, message=message)
