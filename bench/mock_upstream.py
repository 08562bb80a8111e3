"""OpenAI-compatible mock upstream used by tests, the demo and benchmarks.

A real HTTP server on loopback, so the gateway is exercised through its actual
HTTP client stack (connection pooling, timeouts, SSE parsing) rather than a
patched transport.

Endpoints
    POST /v1/chat/completions   chat.completion / chat.completion.chunk (SSE)
    POST /v1/completions        text_completion (SSE too)
    POST /v1/embeddings         8 deterministic floats per input
    POST /v1/responses          response / Responses API SSE events (response.created ...
                                response.completed with usage; no [DONE], like OpenAI)
    GET  /v1/models             a fixed list of models
    *    /v1/<anything else>    {"object": "echo", "method", "path", "query", "body"}
    GET  /_mock/requests        the last 200 /v1 requests, newest last
    DELETE /_mock/requests      clears the recorded requests and the counter
    GET  /_mock/stats           {"requests": n, "open_streams": n, "hanging": n}

Deterministic usage
    prompt_tokens (chat)        words of every message content + 3 per message
                                (list contents: the "text" parts only)
    prompt_tokens (other)       words of the prompt / input (token arrays count
                                one per element)
    input_tokens (responses)    words of a string input, or of a message list as in
                                chat (input_text parts too), plus words of instructions
    completion_tokens           words of the reply

Finish reasons: "stop"; a token limit below the reply's word count (chat max_tokens /
max_completion_tokens, completions max_tokens, Responses max_output_tokens) cuts the reply to
that many words and finishes with "length" (Responses: status "incomplete",
incomplete_details.reason "max_output_tokens"). Chat answers n choices (n 1-128), each the
same reply, completion_tokens counting all of them.

Reply text: "This is a mock reply." (or the configured / x-mock-reply text),
whitespace normalised to single spaces. In a stream each word is one content
chunk. With chunks=N the words are spread over exactly N chunks; when N is
larger than the word count the reply words are repeated cyclically until there
are N words, and the non-streaming reply uses that same extended text so both
modes always agree.

Behaviour control: server-wide defaults (MockConfig / CLI flags), overridden per
request by these headers (the header wins):
    x-mock-latency-ms       delay before responding (before the first byte)
    x-mock-chunks           number of content chunks in a stream
    x-mock-chunk-delay-ms   pause between stream events
    x-mock-status           answer this status (>= 400) with an OpenAI error
                            body; 429 also carries "retry-after: 1"
    x-mock-fail-first       with x-mock-status: fail only the first N requests
                            (counted per x-mock-fail-key value, reset by
                            DELETE /_mock/requests), then answer normally
    x-mock-retry-after      the error's retry-after header value (any text)
    x-mock-retry-after-ms   the error's retry-after-ms header value (any text)
    x-mock-reset-after      streams: close the connection after this many SSE
                            events (the role chunk counts), without terminating
                            the chunked body, so clients see a broken stream
    x-mock-hang             "1": never answer; the request is dropped when the
                            client disconnects
    x-mock-reply            reply text
    x-mock-usage            a JSON object laid over the computed usage (body and
                            stream usage alike), e.g. {"prompt_tokens": 2000,
                            "prompt_tokens_details": {"cached_tokens": 1536},
                            "completion_tokens_details": {"reasoning_tokens": 64}};
                            total_tokens follows unless given

CLI: python bench/mock_upstream.py [--host H] [--port P] [--latency-ms N]
     [--chunks N] [--chunk-delay-ms N] [--reply TEXT] [--workers N]
With --workers N > 1 every worker process owns its own SO_REUSEPORT socket and
its own recorded requests / stats.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import functools
import hashlib
import itertools
import multiprocessing
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

DEFAULT_REPLY = "This is a mock reply."
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9100
RECORD_LIMIT = 200
EMBEDDING_DIM = 8
BACKLOG = 2048

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")

_JSON = "application/json"
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in MODELS],
    }
)
# A counter is cheaper than uuid4; the pid keeps ids unique across --workers.
_ids = itertools.count(1)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True, slots=True)
class MockConfig:
    """Server-wide defaults; every field can be overridden per request by a header."""

    latency_ms: float = 0.0
    chunks: int | None = None
    chunk_delay_ms: float = 0.0
    reply: str = DEFAULT_REPLY
    status: int | None = None
    reset_after: int | None = None
    hang: bool = False
    fail_first: int | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None


@dataclasses.dataclass(slots=True)
class _Call:
    """The effective behaviour of one request after applying header overrides."""

    raw: bytes
    chunks: int | None
    chunk_delay_ms: float
    reply: str
    reset_after: int | None
    usage: dict[str, Any] | None = None


def _usage_override(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("x-mock-usage must be a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("x-mock-usage must be a JSON object")
    return value


def with_usage(tokens: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """The computed usage with the x-mock-usage keys laid over it; total_tokens follows the
    overridden counts unless the override names it."""
    if not override:
        return tokens
    merged = {**tokens, **override}
    if "total_tokens" not in override:
        prompt = merged.get("prompt_tokens", merged.get("input_tokens", 0))
        completion = merged.get("completion_tokens", merged.get("output_tokens", 0))
        merged["total_tokens"] = prompt + completion
    return merged


class MockState:
    """Recorded requests and counters; shared with the thread that owns MockUpstream."""

    def __init__(self) -> None:
        # Written on the server loop, read from test threads: guard with a lock
        # so a snapshot never sees a deque mutated mid-iteration.
        self._lock = threading.Lock()
        self._recorded: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECORD_LIMIT)
        self.request_count = 0
        self.open_streams = 0
        self.hangs: set[asyncio.Future[None]] = set()
        self.failures: collections.Counter[str] = collections.Counter()

    def record(self, request: web.Request, raw: bytes) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        entry = {
            "method": request.method,
            "path": request.path,
            "query_string": request.query_string,
            "headers": headers,
            "authorization": headers.get("authorization"),
            "body": raw.decode("utf-8", "replace"),
        }
        with self._lock:
            self._recorded.append(entry)
            self.request_count += 1

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recorded)

    def clear(self) -> None:
        with self._lock:
            self._recorded.clear()
            self.request_count = 0
            self.failures.clear()

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.request_count,
            "open_streams": self.open_streams,
            "hanging": len(self.hangs),
        }


class _Abort(Exception):
    """Short-circuits a handler with a ready response (errors, injected statuses)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


# ---------------------------------------------------------------- pure helpers


def count_words(text: str) -> int:
    return len(text.split())


def _content_words(content: Any) -> int:
    if isinstance(content, str):
        return count_words(content)
    if isinstance(content, list):
        return sum(
            count_words(part.get("text") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return 0


def chat_prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(_content_words(m.get("content")) + 3 for m in messages if isinstance(m, dict))


def input_tokens(value: Any) -> int:
    """Token count of a completions prompt / embeddings input in any accepted shape."""
    if isinstance(value, str):
        return count_words(value)
    if isinstance(value, int):
        return 1
    if isinstance(value, list):
        return sum(input_tokens(v) for v in value)
    return 0


@functools.lru_cache(maxsize=256)
def split_reply(reply: str, chunks: int | None = None) -> tuple[str, ...]:
    """Stream pieces of the reply; "".join(pieces) is the full reply text."""
    words = reply.split()
    if chunks is None:
        chunks = len(words)
    if chunks <= 0 or not words:
        return ()
    if chunks > len(words):
        words = list(itertools.islice(itertools.cycle(words), chunks))
    base, extra = divmod(len(words), chunks)
    pieces, start = [], 0
    for i in range(chunks):
        end = start + base + (1 if i < extra else 0)
        piece = " ".join(words[start:end])
        pieces.append(piece if start == 0 else " " + piece)
        start = end
    return tuple(pieces)


def limited_reply(reply: str, chunks: int | None, limit: Any) -> tuple[tuple[str, ...], bool]:
    """(stream pieces, whether the reply was cut): a token limit below the reply's word count cuts
    it to that many words (one per piece), as a model stopped by max_tokens would be."""
    pieces = split_reply(reply, chunks)
    words = "".join(pieces).split()
    if type(limit) is not int or limit < 1 or limit >= len(words):
        return pieces, False
    return split_reply(" ".join(words[:limit])), True


def choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if type(n) is int and 1 <= n <= 128 else 1


def responses_input_tokens(body: dict[str, Any]) -> int:
    value, instructions = body.get("input"), body.get("instructions")
    tokens = count_words(value) if isinstance(value, str) else chat_prompt_tokens(value)
    return tokens + (count_words(instructions) if isinstance(instructions, str) else 0)


def embedding_vector(item: Any) -> list[float]:
    # blake2b rather than hash(): stable across processes and PYTHONHASHSEED.
    data = item.encode() if isinstance(item, str) else orjson.dumps(item)
    digest = hashlib.blake2b(data, digest_size=EMBEDDING_DIM).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest]


def embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return value
    # A string or a single token array is one input.
    return [value]


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def error_body(status: int, message: str) -> dict[str, Any]:
    if status == 429:
        err_type, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        err_type, code = "server_error", None
    else:
        err_type, code = "invalid_request_error", None
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


def error_response(
    status: int, message: str, retry_after: str | None = None, retry_after_ms: str | None = None
) -> web.Response:
    headers = {"retry-after": "1"} if status == 429 else {}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    return web.Response(
        status=status,
        body=orjson.dumps(error_body(status, message)),
        content_type=_JSON,
        headers=headers,
    )


def _json_response(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type=_JSON)


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _new_id(prefix: str) -> str:
    return f"{prefix}-mock{os.getpid():x}x{next(_ids):x}"


# ----------------------------------------------------------- stream builders


def chat_stream_events(
    head: dict[str, Any],
    pieces: tuple[str, ...],
    tokens: dict[str, int],
    include_usage: bool,
    finish: str = "stop",
    choices: int = 1,
) -> list[bytes]:
    """SSE events of a chat stream, [DONE] included (with ``choices`` > 1, each choice's
    chunks in turn)."""

    def chunk(index: int, delta: dict[str, Any], reason: str | None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return _sse(_with_usage_slot({**head, "choices": [choice]}, include_usage))

    events = []
    for index in range(choices):
        events.append(chunk(index, {"role": "assistant", "content": ""}, None))
        events += [chunk(index, {"content": p}, None) for p in pieces]
        events.append(chunk(index, {}, finish))
    return events + _stream_tail(head, tokens, include_usage)


def completion_stream_events(
    head: dict[str, Any], pieces: tuple[str, ...], tokens: dict[str, int], include_usage: bool, finish: str = "stop"
) -> list[bytes]:
    """SSE events of a legacy completions stream (no role chunk, like OpenAI)."""

    def chunk(text: str, reason: str | None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": reason}
        return _sse(_with_usage_slot({**head, "choices": [choice]}, include_usage))

    events = [chunk(p, None) for p in pieces]
    events.append(chunk("", finish))
    return events + _stream_tail(head, tokens, include_usage)


def _with_usage_slot(obj: dict[str, Any], include_usage: bool) -> dict[str, Any]:
    # OpenAI sends "usage": null on every chunk only when include_usage is set.
    if include_usage:
        obj["usage"] = None
    return obj


def _stream_tail(head: dict[str, Any], tokens: dict[str, int], include_usage: bool) -> list[bytes]:
    if include_usage:
        return [_sse({**head, "choices": [], "usage": tokens}), _DONE]
    return [_DONE]


def responses_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_message(item_id: str, text: str) -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}


def response_stream_events(
    head: dict[str, Any], item_id: str, pieces: tuple[str, ...], tokens: dict[str, Any], cut: bool = False
) -> list[bytes]:
    """SSE events of a Responses API stream as OpenAI sends them: an ``event:`` line naming the
    type, a ``sequence_number`` on each, usage only in the last event (response.completed, or
    response.incomplete when ``cut`` by max_output_tokens), and no [DONE]."""
    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": kind, "sequence_number": next(sequence), **fields})
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    text = "".join(pieces)
    running = {**head, "status": "in_progress", "output": [], "usage": None}
    item = {"id": item_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    done = response_message(item_id, text)
    events = [
        event("response.created", response=running),
        event("response.in_progress", response=running),
        event("response.output_item.added", output_index=0, item=item),
        event("response.content_part.added", **where, part={**done["content"][0], "text": ""}),
    ]
    events += [event("response.output_text.delta", **where, delta=piece, logprobs=[]) for piece in pieces]
    events += [
        event("response.output_text.done", **where, text=text, logprobs=[]),
        event("response.content_part.done", **where, part=done["content"][0]),
        event("response.output_item.done", output_index=0, item=done),
        event(
            f"response.{'incomplete' if cut else 'completed'}",
            response={**response_end(head, cut), "output": [done], "usage": tokens},
        ),
    ]
    return events


def response_end(head: dict[str, Any], cut: bool) -> dict[str, Any]:
    """A finished response's head: completed, or incomplete at max_output_tokens."""
    if not cut:
        return {**head, "status": "completed"}
    return {**head, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


def _abort_connection(request: web.Request) -> None:
    # close() flushes what was already written, then FINs in the middle of the
    # chunked body: the client gets the partial events and then a payload error.
    transport = request.transport
    if transport is not None:
        transport.close()


# -------------------------------------------------------------------- server


def _guarded(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Abort as abort:
            return abort.response

    return wrapper


class _Handlers:
    def __init__(self, config: MockConfig, state: MockState) -> None:
        self.config = config
        self.state = state

    # -- shared request prelude

    async def _begin(self, request: web.Request) -> _Call:
        """Record, resolve overrides, then apply latency / hang / injected status."""
        raw = await request.read()
        self.state.record(request, raw)
        try:
            call, latency_ms, status, hang = self._resolve(request.headers, raw)
        except ValueError as exc:
            raise _Abort(error_response(400, f"Invalid mock control header: {exc}")) from None
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        if hang:
            await self._hang()
        if status is not None and status >= 400 and self._should_fail(request.headers):
            cfg = self.config
            raise _Abort(
                error_response(
                    status,
                    f"Mock upstream error (status {status})",
                    request.headers.get("x-mock-retry-after", cfg.retry_after),
                    request.headers.get("x-mock-retry-after-ms", cfg.retry_after_ms),
                )
            )
        return call

    def _should_fail(self, headers: Mapping[str, str]) -> bool:
        """Always, unless a fail-first count says this request is past the failing ones."""
        limit = _opt_int(headers.get("x-mock-fail-first"), self.config.fail_first)
        if limit is None:
            return True
        key = headers.get("x-mock-fail-key", "")
        with self.state._lock:
            self.state.failures[key] += 1
            return self.state.failures[key] <= limit

    def _resolve(self, headers: Mapping[str, str], raw: bytes) -> tuple[_Call, float, int | None, bool]:
        cfg = self.config
        hang = headers.get("x-mock-hang")
        call = _Call(
            raw=raw,
            chunks=_opt_int(headers.get("x-mock-chunks"), cfg.chunks),
            chunk_delay_ms=_opt_float(headers.get("x-mock-chunk-delay-ms"), cfg.chunk_delay_ms),
            reply=headers.get("x-mock-reply", cfg.reply),
            reset_after=_opt_int(headers.get("x-mock-reset-after"), cfg.reset_after),
            usage=_usage_override(headers.get("x-mock-usage")),
        )
        latency = _opt_float(headers.get("x-mock-latency-ms"), cfg.latency_ms)
        status = _opt_int(headers.get("x-mock-status"), cfg.status)
        hang_flag = cfg.hang if hang is None else hang.strip().lower() in ("1", "true", "yes")
        return call, latency, status, hang_flag

    async def _hang(self) -> None:
        # Parked until the client disconnects (handler_cancellation=True cancels
        # us) or the server stops and cancels every parked future.
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.state.hangs.add(fut)
        try:
            await fut
        finally:
            self.state.hangs.discard(fut)

    @staticmethod
    def _json_object(raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Abort(error_response(400, "Invalid JSON body.")) from None
        if not isinstance(body, dict):
            raise _Abort(error_response(400, "Request body must be a JSON object."))
        return body

    async def _stream(self, request: web.Request, call: _Call, events: list[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        limit = call.reset_after
        to_send = events if limit is None else events[: max(limit, 0)]
        self.state.open_streams += 1
        try:
            await resp.prepare(request)
            await self._write_events(resp, to_send, call.chunk_delay_ms)
            if len(to_send) < len(events):
                _abort_connection(request)
                return resp
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away mid-stream; nothing left to do
        finally:
            self.state.open_streams -= 1
        return resp

    @staticmethod
    async def _write_events(resp: web.StreamResponse, events: list[bytes], delay_ms: float) -> None:
        if delay_ms <= 0:
            # One write instead of one per event: a big win at benchmark rates.
            if events:
                await resp.write(b"".join(events))
            return
        for i, event in enumerate(events):
            if i:
                await asyncio.sleep(delay_ms / 1000)
            await resp.write(event)

    # -- /v1 endpoints

    async def chat(self, request: web.Request) -> web.StreamResponse:
        call = await self._begin(request)
        body = self._json_object(call.raw)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        pieces, cut = limited_reply(call.reply, call.chunks, limit)
        finish, n = ("length" if cut else "stop"), choice_count(body)
        content = "".join(pieces)
        tokens = with_usage(usage(chat_prompt_tokens(body.get("messages")), count_words(content) * n), call.usage)
        head = {
            "id": _new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "mock",
        }
        if body.get("stream"):
            head["object"] = "chat.completion.chunk"
            events = chat_stream_events(head, pieces, tokens, _include_usage(body), finish, n)
            return await self._stream(request, call, events)
        message = {"role": "assistant", "content": content}
        choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": finish} for i in range(n)]
        return _json_response({**head, "choices": choices, "usage": tokens})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        call = await self._begin(request)
        body = self._json_object(call.raw)
        pieces, cut = limited_reply(call.reply, call.chunks, body.get("max_tokens"))
        finish = "length" if cut else "stop"
        content = "".join(pieces)
        tokens = with_usage(usage(input_tokens(body.get("prompt")), count_words(content)), call.usage)
        head = {
            "id": _new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or "mock",
        }
        if body.get("stream"):
            events = completion_stream_events(head, pieces, tokens, _include_usage(body), finish)
            return await self._stream(request, call, events)
        choice = {"text": content, "index": 0, "logprobs": None, "finish_reason": finish}
        return _json_response({**head, "choices": [choice], "usage": tokens})

    async def responses(self, request: web.Request) -> web.StreamResponse:
        call = await self._begin(request)
        body = self._json_object(call.raw)
        pieces, cut = limited_reply(call.reply, call.chunks, body.get("max_output_tokens"))
        content = "".join(pieces)
        tokens = with_usage(responses_usage(responses_input_tokens(body), count_words(content)), call.usage)
        head = {
            "id": _new_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "model": body.get("model") or "mock",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        item_id = _new_id("msg")
        if body.get("stream"):
            return await self._stream(request, call, response_stream_events(head, item_id, pieces, tokens, cut))
        return _json_response(
            {**response_end(head, cut), "output": [response_message(item_id, content)], "usage": tokens}
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        call = await self._begin(request)
        body = self._json_object(call.raw)
        value = body.get("input", "")
        # The OpenAI SDK asks for base64 by default; honour it so real clients decode.
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_vector(item, as_base64)}
            for i, item in enumerate(embedding_inputs(value))
        ]
        prompt = input_tokens(value)
        return _json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model") or "mock",
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        )

    async def models(self, request: web.Request) -> web.StreamResponse:
        await self._begin(request)
        return web.Response(body=_MODELS_BODY, content_type=_JSON)

    async def echo(self, request: web.Request) -> web.StreamResponse:
        call = await self._begin(request)
        try:
            parsed = orjson.loads(call.raw) if call.raw else None
        except orjson.JSONDecodeError:
            parsed = None
        return _json_response(
            {
                "object": "echo",
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "body": parsed,
            }
        )

    # -- inspection (never recorded)

    async def list_requests(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.state.snapshot())

    async def clear_requests(self, request: web.Request) -> web.StreamResponse:
        self.state.clear()
        return _json_response({"cleared": True})

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.state.stats())


def _opt_int(raw: str | None, default: int | None) -> int | None:
    return default if raw is None else int(raw)


def _opt_float(raw: str | None, default: float) -> float:
    return default if raw is None else float(raw)


def _encode_vector(item: Any, as_base64: bool) -> list[float] | str:
    vector = embedding_vector(item)
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def create_app(config: MockConfig | None = None, state: MockState | None = None) -> web.Application:
    h = _Handlers(config or MockConfig(), state or MockState())
    app = web.Application()
    app.add_routes(
        [
            web.post("/v1/chat/completions", _guarded(h.chat)),
            web.post("/v1/completions", _guarded(h.completions)),
            web.post("/v1/embeddings", _guarded(h.embeddings)),
            web.post("/v1/responses", _guarded(h.responses)),
            web.get("/v1/models", _guarded(h.models), allow_head=False),
            # Registered last: the router falls through to it for any other
            # path, or for a method the specific routes above do not accept.
            web.route("*", "/v1/{tail:.*}", _guarded(h.echo)),
        ]
    )
    app.add_routes(
        [
            web.get("/_mock/requests", h.list_requests, allow_head=False),
            web.delete("/_mock/requests", h.clear_requests),
            web.get("/_mock/stats", h.stats, allow_head=False),
        ]
    )
    return app


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket; binding up front tells callers the port before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def new_event_loop() -> asyncio.AbstractEventLoop:
    if sys.platform.startswith("linux"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def start_runner(
    sock: socket.socket,
    config: MockConfig,
    state: MockState,
    shutdown_timeout: float,
    app_factory: Callable[[MockConfig, MockState], web.Application] = create_app,
) -> web.AppRunner:
    runner = web.AppRunner(
        app_factory(config, state),
        access_log=None,  # per-request logging would dominate benchmark CPU
        handler_cancellation=True,  # so x-mock-hang ends when the client leaves
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    await web.SockSite(runner, sock, backlog=BACKLOG).start()
    return runner


async def stop_runner(runner: web.AppRunner, state: MockState) -> None:
    # Parked hangs would otherwise hold graceful shutdown for shutdown_timeout.
    for fut in list(state.hangs):
        fut.cancel()
    await runner.cleanup()


# ------------------------------------------------------- in-process for pytest


class MockUpstream:
    """The mock server on a background thread with its own event loop.

    >>> with MockUpstream(latency_ms=5) as upstream:
    ...     client = OpenAI(base_url=upstream.base_url, api_key="sk-test")
    """

    # The application served; bench/mock_providers.py serves other providers' APIs.
    app_factory = staticmethod(create_app)

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0, **config: Any) -> None:
        self.host = host
        self.port = port
        self.config = MockConfig(**config)
        self.state = MockState()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Snapshot of the recorded requests, oldest first."""
        return self.state.snapshot()

    @property
    def stats(self) -> dict[str, int]:
        return self.state.stats()

    def clear(self) -> None:
        self.state.clear()

    def start(self, timeout: float = 5.0) -> MockUpstream:
        if self._thread is not None:
            raise RuntimeError("MockUpstream already started")
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._loop = new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run,
            args=(sock, ready, failure),
            name=f"mock-upstream:{self.port}",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("mock upstream did not start in time")
        if failure:
            self._thread = None
            raise RuntimeError("mock upstream failed to start") from failure[0]
        return self

    def _run(self, sock: socket.socket, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            starting = start_runner(sock, self.config, self.state, 0.25, self.app_factory)
            runner = loop.run_until_complete(starting)
        except BaseException as exc:  # surfaced to start() in the caller thread
            failure.append(exc)
            sock.close()
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(stop_runner(runner, self.state))
            loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ----------------------------------------------------------------------- CLI


def _serve_socket(
    sock: socket.socket, config: MockConfig, watch_parent: int | None = None, app_factory: Callable = create_app
) -> None:
    """Serve one socket until SIGINT/SIGTERM (or, in a worker, the parent's death)."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    state = MockState()

    async def main() -> None:
        runner = await start_runner(sock, config, state, 1.0, app_factory)
        if watch_parent is not None:
            loop.create_task(_exit_with_parent(watch_parent, stop))
        await stop.wait()
        await stop_runner(runner, state)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


async def _exit_with_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # A SIGKILLed parent cannot reap us; poll so workers never outlive it.
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    stop.set()


def serve(host: str, port: int, config: MockConfig, workers: int = 1, app_factory: Callable = create_app) -> None:
    """Bind, announce the URL on stdout, then serve until killed."""
    reuse = workers > 1
    socks = [bind_socket(host, port, reuse_port=reuse)]
    port = socks[0].getsockname()[1]
    socks += [bind_socket(host, port, reuse_port=True) for _ in range(workers - 1)]
    url_host = f"[{host}]" if ":" in host else host
    print(f"mock upstream listening on http://{url_host}:{port}", flush=True)

    # Fork before any event loop exists; each child serves its own socket.
    ctx = multiprocessing.get_context("fork")
    children = []
    for sock in socks[1:]:
        proc = ctx.Process(target=_serve_socket, args=(sock, config, os.getpid(), app_factory), daemon=True)
        proc.start()
        children.append(proc)
        # Dropping our copy lets the kernel stop routing to a dead worker's socket.
        sock.close()
    try:
        _serve_socket(socks[0], config, app_factory=app_factory)
    finally:
        for proc in children:
            proc.terminate()
        for proc in children:
            proc.join(2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="OpenAI-compatible mock upstream.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=None)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--reply", default=DEFAULT_REPLY)
    parser.add_argument("--workers", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = MockConfig(
        latency_ms=args.latency_ms,
        chunks=args.chunks,
        chunk_delay_ms=args.chunk_delay_ms,
        reply=args.reply,
    )
    serve(args.host, args.port, config, workers=max(1, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
