"""Mock upstreams speaking other providers' native APIs, for tests and benchmarks: Anthropic
Messages, Azure OpenAI deployments and Google Gemini, on one real loopback HTTP server (the
OpenAI mock's recording, stats and x-mock-* controls included; see bench/mock_upstream.py).

Base URLs (``MockProviders.base_for(kind)``)
    anthropic     {url}/anthropic/v1         POST /messages (JSON or SSE)
    azure-openai  {url}/azure                POST /openai/deployments/{d}/chat/completions|completions|embeddings
                                             ?api-version= required, api-key header required
    google        {url}/google/v1beta        POST /models/{model}:generateContent
                                             POST /models/{model}:streamGenerateContent[?alt=sse]
                                             POST /openai/chat/completions (OpenAI-compatible, Bearer key)

Like the real APIs, each refuses a request without its own credential header (Anthropic 401,
Azure 401, Gemini 403, in that provider's error shape), Anthropic refuses a missing
anthropic-version or max_tokens and a "system" role inside messages, Azure a missing
api-version. Errors injected with x-mock-status come in the provider's own error shape.

Anthropic replies: with ``tools`` and no tool result in the last user turn, a ``tool_use``
block for the first tool, its input from ``x-mock-tool-input`` (JSON, default {}); after a
tool result, "Tool said: <result>". ``stop_sequences`` cut the reply (stop_reason
stop_sequence), ``max_tokens`` below the reply's word count truncates it (max_tokens).
Usage: input_tokens = words of system and message texts; output_tokens = reply words;
x-mock-cache-read / x-mock-cache-write set cache_read_input_tokens /
cache_creation_input_tokens. x-mock-stream-error: <type> (e.g. overloaded_error) fails a
stream after its first text delta with an ``event: error``, as Anthropic does mid-stream. Gemini: promptTokenCount = words of the parts' texts (system
instruction included), candidatesTokenCount = reply words, x-mock-thoughts sets
thoughtsTokenCount and x-mock-cache-read cachedContentTokenCount; finishReason STOP, or
MAX_TOKENS when generationConfig.maxOutputTokens cuts the reply.

CLI: python -m bench.mock_providers [--host H] [--port P] [--latency-ms N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
from aiohttp import web

from bench.mock_upstream import (
    DEFAULT_HOST,
    MockConfig,
    MockState,
    MockUpstream,
    _Abort,
    _guarded,
    _Handlers,
    _new_id,
    count_words,
    limited_reply,
    serve,
    split_reply,
)

_JSON = "application/json"
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}


def _text_words(content: Any) -> int:
    if isinstance(content, str):
        return count_words(content)
    if isinstance(content, list):
        total = 0
        for block in content:
            if isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    total += count_words(block["text"])
                elif block.get("type") == "tool_result":
                    total += _text_words(block.get("content"))
        return total
    return 0


# --------------------------------------------------------------------------- Anthropic


def anthropic_error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": _new_id("req")}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _last_tool_result(messages: list) -> str | None:
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), list):
        return None
    for block in last["content"]:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            content = block.get("content")
            return content if isinstance(content, str) else orjson.dumps(content).decode()
    return None


def _check_anthropic(request: web.Request, raw: bytes) -> dict:
    if not request.headers.get("x-api-key"):
        raise _Abort(anthropic_error(401, "authentication_error", "x-api-key header is required"))
    if not request.headers.get("anthropic-version"):
        raise _Abort(anthropic_error(400, "invalid_request_error", "anthropic-version: header is required"))
    status = request.headers.get("x-mock-status")
    if status and int(status) >= 400:
        code = int(status)
        kind = _ANTHROPIC_ERROR_TYPES.get(code, "api_error")
        raise _Abort(anthropic_error(code, kind, f"Mock Anthropic error (status {code})"))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Abort(anthropic_error(400, "invalid_request_error", "Invalid JSON body")) from None
    if not isinstance(body, dict):
        raise _Abort(anthropic_error(400, "invalid_request_error", "Body must be an object"))
    if not isinstance(body.get("max_tokens"), int):
        raise _Abort(anthropic_error(400, "invalid_request_error", "max_tokens: Field required"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Abort(anthropic_error(400, "invalid_request_error", "messages: Field required"))
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _Abort(anthropic_error(400, "invalid_request_error", f'messages.{i}.role: Unexpected role "{role}"'))
    return body


def anthropic_answer(request: web.Request, body: dict, reply: str) -> tuple[list[dict], str, dict]:
    """(content blocks, stop_reason, usage) for a Messages request."""
    messages = body["messages"]
    system = body.get("system")
    input_tokens = _text_words(system) + sum(_text_words(m.get("content")) for m in messages)
    usage = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": int(request.headers.get("x-mock-cache-write", 0)),
        "cache_read_input_tokens": int(request.headers.get("x-mock-cache-read", 0)),
        "output_tokens": 0,
    }
    tool_result = _last_tool_result(messages)
    tools = body.get("tools")
    if tools and tool_result is None:
        tool_input = orjson.loads(request.headers.get("x-mock-tool-input", "{}"))
        block = {"type": "tool_use", "id": _new_id("toolu"), "name": tools[0]["name"], "input": tool_input}
        usage["output_tokens"] = 10
        return [block], "tool_use", usage
    text = f"Tool said: {tool_result}" if tool_result is not None else reply
    stop_reason = "end_turn"
    for stop in body.get("stop_sequences") or ():
        if stop in text:
            text, stop_reason = text[: text.index(stop)], "stop_sequence"
    words = text.split()
    if len(words) > body["max_tokens"]:
        text, stop_reason = " ".join(words[: body["max_tokens"]]), "max_tokens"
    usage["output_tokens"] = count_words(text)
    return [{"type": "text", "text": text}], stop_reason, usage


def _event(kind: str, data: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def anthropic_stream_events(
    message: dict, blocks: list[dict], stop_reason: str, usage: dict, chunks: int | None
) -> list[bytes]:
    start_usage = {**usage, "output_tokens": 1}
    events = [
        _event("message_start", {"message": {**message, "content": [], "stop_reason": None, "usage": start_usage}}),
        _event("ping", {}),
    ]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(
                _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            )
            for piece in split_reply(block["text"], chunks) if block["text"] else ():
                delta = {"type": "text_delta", "text": piece}
                events.append(_event("content_block_delta", {"index": index, "delta": delta}))
        else:
            start = {**block, "input": {}}
            events.append(_event("content_block_start", {"index": index, "content_block": start}))
            arguments = orjson.dumps(block["input"]).decode()
            for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append(_event("content_block_delta", {"index": index, "delta": delta}))
        events.append(_event("content_block_stop", {"index": index}))
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    events.append(_event("message_delta", {"delta": delta, "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(_event("message_stop", {}))
    return events


_STREAM_ERROR_MESSAGES = {"overloaded_error": "Overloaded", "api_error": "Internal server error"}


def with_stream_error(events: list[bytes], kind: str) -> list[bytes]:
    """The stream cut after its first content delta by an ``error`` event of ``kind``, as
    Anthropic fails a stream that already answered 200 (e.g. overloaded_error)."""
    cut = next((i + 1 for i, event in enumerate(events) if event.startswith(b"event: content_block_delta")), 2)
    error = {"type": kind, "message": _STREAM_ERROR_MESSAGES.get(kind, f"Mock stream error ({kind})")}
    return [*events[:cut], _event("error", {"error": error})]


# --------------------------------------------------------------------------- Gemini


def gemini_error(status: int, message: str, code_name: str) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": code_name}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


def _gemini_prompt_tokens(body: dict) -> int:
    def words(content: Any) -> int:
        parts = content.get("parts") if isinstance(content, dict) else None
        return sum(count_words(p.get("text") or "") for p in parts or () if isinstance(p, dict))

    contents = body.get("contents") or []
    return words(body.get("systemInstruction")) + sum(words(c) for c in contents)


def gemini_chunk(model: str, response_id: str, text: str, finish: str | None, usage: dict) -> dict:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}


# --------------------------------------------------------------------------- server


class _ProviderHandlers(_Handlers):
    async def _record(self, request: web.Request) -> bytes:
        raw = await request.read()
        self.state.record(request, raw)
        return raw

    async def anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        raw = await self._record(request)
        call, latency_ms, _, _ = self._resolve(request.headers, raw)
        body = _check_anthropic(request, raw)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        blocks, stop_reason, usage = anthropic_answer(request, body, call.reply)
        message = {
            "id": _new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or "mock",
            "stop_sequence": None,
        }
        if body.get("stream"):
            events = anthropic_stream_events(message, blocks, stop_reason, usage, call.chunks)
            failure = request.headers.get("x-mock-stream-error")
            if failure:
                events = with_stream_error(events, failure)
            return await self._stream_with(request, call, events)
        answer = {**message, "content": blocks, "stop_reason": stop_reason, "usage": usage}
        return web.Response(body=orjson.dumps(answer), content_type=_JSON)

    async def azure(self, request: web.Request) -> web.StreamResponse:
        if not request.headers.get("api-key"):
            await self._record(request)
            message = "Access denied due to invalid subscription key or wrong API endpoint."
            raise _Abort(web.json_response({"error": {"code": "401", "message": message}}, status=401))
        if "api-version" not in request.query:
            await self._record(request)
            raise _Abort(web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404))
        endpoint = request.match_info["endpoint"]
        handler = {"chat/completions": self.chat, "completions": self.completions, "embeddings": self.embeddings}
        if endpoint not in handler:
            return await self.echo(request)
        return await handler[endpoint](request)

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        raw = await self._record(request)
        if not (request.headers.get("x-goog-api-key") or request.query.get("key")):
            raise _Abort(gemini_error(403, "Method doesn't allow unregistered callers.", "PERMISSION_DENIED"))
        status = request.headers.get("x-mock-status")
        if status and int(status) >= 400:
            raise _Abort(gemini_error(int(status), f"Mock Gemini error (status {status})", "INVALID_ARGUMENT"))
        model, _, method = request.match_info["target"].partition(":")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Abort(gemini_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")) from None
        call, _, _, _ = self._resolve(request.headers, raw)
        config = body.get("generationConfig") if isinstance(body, dict) else None
        limit = config.get("maxOutputTokens") if isinstance(config, dict) else None
        pieces, cut = limited_reply(call.reply, call.chunks, limit)
        finish = "MAX_TOKENS" if cut else "STOP"
        prompt = _gemini_prompt_tokens(body)
        thoughts = int(request.headers.get("x-mock-thoughts", 0))
        candidates = count_words("".join(pieces))
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + thoughts,
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if request.headers.get("x-mock-cache-read"):
            usage["cachedContentTokenCount"] = int(request.headers["x-mock-cache-read"])
        response_id = _new_id("gemini")
        if method == "generateContent":
            return web.Response(
                body=orjson.dumps(gemini_chunk(model, response_id, "".join(pieces), finish, usage)), content_type=_JSON
            )
        if method != "streamGenerateContent":
            raise _Abort(gemini_error(404, f"Method {method} not found.", "NOT_FOUND"))
        running = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        chunks = [
            gemini_chunk(
                model,
                response_id,
                piece,
                finish if i == len(pieces) - 1 else None,
                usage if i == len(pieces) - 1 else running,
            )
            for i, piece in enumerate(pieces)
        ]
        if request.query.get("alt") == "sse":
            events = [b"data: " + orjson.dumps(chunk) + b"\r\n\r\n" for chunk in chunks]
            return await self._stream_with(request, call, events)
        return web.Response(body=orjson.dumps(chunks), content_type=_JSON)

    async def gemini_openai(self, request: web.Request) -> web.StreamResponse:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            await self._record(request)
            raise _Abort(gemini_error(401, "Missing bearer token.", "UNAUTHENTICATED"))
        return await self.chat(request)

    async def _stream_with(self, request: web.Request, call, events: list[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(headers=_SSE)
        self.state.open_streams += 1
        try:
            await resp.prepare(request)
            await self._write_events(resp, events, call.chunk_delay_ms)
            await resp.write_eof()
        except ConnectionError:
            pass
        finally:
            self.state.open_streams -= 1
        return resp


def create_providers_app(config: MockConfig | None = None, state: MockState | None = None) -> web.Application:
    h = _ProviderHandlers(config or MockConfig(), state or MockState())
    app = web.Application()
    app.add_routes(
        [
            web.post("/anthropic/v1/messages", _guarded(h.anthropic_messages)),
            web.post("/azure/openai/deployments/{deployment}/{endpoint:.+}", _guarded(h.azure)),
            web.post("/google/v1beta/openai/chat/completions", _guarded(h.gemini_openai)),
            web.post("/google/v1beta/models/{target}", _guarded(h.gemini)),
            web.get("/_mock/requests", h.list_requests, allow_head=False),
            web.delete("/_mock/requests", h.clear_requests),
            web.get("/_mock/stats", h.stats, allow_head=False),
        ]
    )
    return app


class MockProviders(MockUpstream):
    """The providers' mock on a background thread (see MockUpstream)."""

    app_factory = staticmethod(create_providers_app)

    def base_for(self, kind: str) -> str:
        return self.url + {"anthropic": "/anthropic/v1", "azure-openai": "/azure", "google": "/google/v1beta"}[kind]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Anthropic / Azure OpenAI / Gemini mock upstream.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    serve(args.host, args.port, MockConfig(latency_ms=args.latency_ms), app_factory=create_providers_app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
