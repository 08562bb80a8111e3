"""Upstream forwarding: request headers in, response relayed out, usage captured.

Bodies are forwarded byte for byte; the one exception is a streaming request that did not
ask for usage, where ``stream_options.include_usage`` is added so the log gets token counts,
and the usage-only chunk this produces is withheld from the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import aiohttp
import orjson

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


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers as stored with a log: anything that can carry a credential is redacted."""
    return {
        name: ("[redacted]" if any(word in name for word in SENSITIVE_HEADER_WORDS) else value)
        for name, value in headers.items()
    }


def response_headers(resp: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in _DROP_RESPONSE]


class UsageTracker:
    """Reads usage and model out of upstream answers (JSON bodies or SSE events)."""

    __slots__ = ("completion_tokens", "content_chunks", "model", "prompt_tokens", "saw_usage", "total_tokens")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0
        self.model = ""
        self.saw_usage = False
        self.content_chunks = 0

    def read_usage(self, doc: dict) -> None:
        if doc.get("model") and not self.model:
            self.model = doc["model"]
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.saw_usage = True
            self.prompt_tokens = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
            self.total_tokens = int(usage.get("total_tokens") or self.prompt_tokens + self.completion_tokens)

    def read_body(self, body: bytes) -> None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict):
            self.read_usage(doc)

    def finish(self) -> None:
        # A stream cut short carries no usage; count the content chunks we relayed as a
        # lower bound of completion tokens rather than claiming zero.
        if not self.saw_usage and self.content_chunks:
            self.completion_tokens = self.content_chunks
            self.total_tokens = self.prompt_tokens + self.completion_tokens


def inject_stream_usage(doc: dict) -> bool:
    """Ask the upstream for usage on a stream; True when the client had not asked itself."""
    options = doc.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return False
    doc["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


class StreamRelay:
    """Splits the upstream SSE byte stream into events, forwards each complete event as it
    arrives, and withholds the usage-only event when usage was requested on the client's
    behalf."""

    # Streamed bodies are kept for the log up to this size; a log is not an archive.
    CAPTURE_LIMIT = 256 * 1024

    def __init__(self, tracker: UsageTracker, *, hide_usage_chunk: bool, capture: bool = False) -> None:
        self.tracker = tracker
        self.hide_usage_chunk = hide_usage_chunk
        self.buffer = b""
        self.first_chunk_at: float | None = None
        self.done = False
        self.capture = capture
        self.captured = bytearray()

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        if b"\r\n" in self.buffer:
            self.buffer = self.buffer.replace(b"\r\n", b"\n")
        out = []
        while True:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                break
            event, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
            if self._keep(event):
                out.append(event)
        data = b"".join(out)
        if self.capture and len(self.captured) < self.CAPTURE_LIMIT:
            self.captured += data[: self.CAPTURE_LIMIT - len(self.captured)]
        return data

    def _keep(self, event: bytes) -> bool:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return True
            # Most chunks are content deltas: count them without parsing; parse only the
            # first (model) and those that carry usage.
            has_usage = b'"usage"' in payload and b'"usage":null' not in payload
            if b'"choices":[]' not in payload and b'"choices"' in payload:
                self.tracker.content_chunks += 1
                if not has_usage and self.tracker.model:
                    continue
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return True
            if not isinstance(doc, dict):
                return True
            self.tracker.read_usage(doc)
            if self.hide_usage_chunk and not doc.get("choices") and doc.get("usage"):
                return False
        return True

    def tail(self) -> bytes:
        rest, self.buffer = self.buffer, b""
        return rest


async def wait_for_disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def relay_stream(resp: aiohttp.ClientResponse, send: Send, relay: StreamRelay) -> None:
    async for chunk in resp.content.iter_any():
        data = relay.feed(chunk)
        if data and relay.first_chunk_at is None:
            relay.first_chunk_at = time.perf_counter()
        if relay.done:
            # [DONE] ends the stream: finish the response in the same write.
            await send({"type": "http.response.body", "body": data + relay.tail(), "more_body": False})
            # Drain the chunked terminator so the connection can go back to the pool.
            await resp.content.read()
            return
        if data:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": relay.tail(), "more_body": False})


async def race_disconnect(work: Awaitable[None], receive: Callable[[], Awaitable[dict]]) -> bool:
    """Run ``work`` until it ends or the client goes away; True when the client went away."""
    work_task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        done, _ = await asyncio.wait({work_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work_task.cancel()
        watcher.cancel()
        raise
    if work_task in done:
        watcher.cancel()
        work_task.result()
        return False
    work_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work_task
    return True
