"""A lean Redis client for the policy counters: one pipelined connection per process, RESP2 over
an asyncio protocol.

Why not redis-py (which gateway.limits uses): measured with bench/bench_policies.py, one
``evalsha`` through redis-py's asyncio client cost ~300 us per request at concurrency 1 and
cut throughput at concurrency 32 to a quarter (connection checkout, per-command machinery);
policies must add at most 50 us. Here a command is one ``transport.write`` and a future that
the protocol resolves in order (Redis answers a connection's commands in order), so any number
of concurrent requests share one connection and their commands are pipelined. ``send`` writes a
command without waiting for its answer (the settle after a response).

Supports ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://`` (TLS).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from urllib.parse import unquote, urlsplit

log = logging.getLogger("portico.gateway.redis_wire")
_CRLF = b"\r\n"


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``)."""


def encode(args: tuple) -> bytearray:
    out = bytearray(b"*%d\r\n" % len(args))
    for arg in args:
        data = arg if arg.__class__ is bytes else str(arg).encode()
        out += b"$%d\r\n" % len(data)
        out += data
        out += _CRLF
    return out


class _Incomplete(Exception):
    pass


def _parse(buf: bytearray, pos: int) -> tuple[object, int]:
    """One reply from ``buf`` at ``pos``: (value, next position); _Incomplete if cut off."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos], bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == 43:  # +
        return line, pos
    if kind == 45:  # -
        return RedisReplyError(line.decode("utf-8", "replace")), pos
    if kind == 58:  # :
        return int(line), pos
    if kind == 36:  # $
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + size]), pos + size + 2
    if kind == 42:  # *
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    raise RedisReplyError(f"unexpected reply type {chr(kind)!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future | None] = collections.deque()
        self.buffer = bytearray()
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        while pos < len(buf):
            try:
                value, pos_next = _parse(buf, pos)
            except _Incomplete:
                break
            pos = pos_next
            future = self.waiting.popleft() if self.waiting else None
            if future is None:
                if isinstance(value, RedisReplyError):
                    log.warning("Redis refused a command sent without waiting: %s", value)
            elif not future.done():
                if isinstance(value, RedisReplyError):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("Redis closed the connection")
        while self.waiting:
            future = self.waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(ConnectionError(f"Redis connection lost: {self.lost}"))


class RedisWire:
    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        self.url = url
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = int(parts.path.strip("/") or 0)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.tls = parts.scheme == "rediss"
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        self._shas: dict[str, str] = {}
        self._encoded: dict[tuple, bytes] = {}

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None and protocol.loop is asyncio.get_running_loop():
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.tls else None
        _, protocol = await asyncio.wait_for(
            loop.create_connection(_Protocol, self.host, self.port, ssl=context), self.timeout
        )
        self._protocol = protocol
        if self.password:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            await self.call(*auth)
        if self.db:
            await self.call("SELECT", self.db)
        return protocol

    async def call(self, *args: object) -> object:
        """Send a command and wait (at most ``timeout``) for its answer."""
        return await self._call_encoded(encode(args))

    def _evalsha_command(self, sha: str, keys: list, args: list) -> bytes:
        """The encoded EVALSHA, memoised: a counter's keys and arguments repeat for as long as
        its window lasts, and encoding ~70 arguments is most of the client's work."""
        memo_key = (sha, *keys, *args)
        command = self._encoded.get(memo_key)
        if command is None:
            if len(self._encoded) >= 4096:
                self._encoded.clear()
            command = self._encoded[memo_key] = bytes(encode(("EVALSHA", sha, len(keys), *keys, *args)))
        return command

    async def _call_encoded(self, command: bytes) -> object:
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or protocol.loop is not asyncio.get_running_loop():
            protocol = await self._connection()
        future = protocol.loop.create_future()
        protocol.waiting.append(future)
        protocol.transport.write(command)
        handle = protocol.loop.call_later(self.timeout, _expire, future)
        try:
            return await future
        finally:
            handle.cancel()

    async def send(self, *args: object) -> None:
        """Send a command without waiting for its answer (an error answer is logged)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or protocol.loop is not asyncio.get_running_loop():
            protocol = await self._connection()
        protocol.waiting.append(None)
        protocol.transport.write(encode(args))

    async def evalsha(self, script: str, keys: list, args: list) -> object:
        """Run a Lua script by its SHA, loading it first when Redis does not know it (first use,
        or a restarted Redis), on a new connection when Redis dropped the old one."""
        for attempt in range(3):
            sha = self._shas.get(script)
            if sha is None:
                sha = self._shas[script] = (await self.call("SCRIPT", "LOAD", script)).decode()
            try:
                return await self._call_encoded(self._evalsha_command(sha, keys, args))
            except ConnectionError:
                if attempt:
                    raise
                self.close()  # a connection Redis dropped is noticed on use: retry once
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT") or attempt == 2:
                    raise
                self._shas.pop(script, None)
        raise ConnectionError("Redis kept dropping the connection")

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError("Redis did not answer in time"))
