"""OpenAI chat completions <-> Anthropic Messages, for an OpenAI-format request
(``/v1/chat/completions``) sent to an ``anthropic`` provider.

Requests: system/developer messages become ``system``; user, assistant and tool messages become
``messages`` (tool calls -> ``tool_use`` blocks, tool results -> ``tool_result`` blocks in a user
turn, consecutive turns of one role merged, as Anthropic wants them alternating); tools and
tool_choice, stop -> stop_sequences, max_tokens (required by Anthropic, default 4096),
temperature/top_p, user -> metadata.user_id. Answers: content and tool calls, stop reasons,
usage, errors (same status, OpenAI-shaped body) and streams (Anthropic SSE events ->
chat.completion.chunk events ending with ``data: [DONE]``).

Bad input is a 400 naming the field; fields Anthropic has no equivalent for (logprobs,
penalties, seed, response_format, ...) are not sent.
"""

from __future__ import annotations

import contextlib
import time

import orjson

from config.parsing import InvalidParameter, parse_int
from workspaces.errors import GatewayError

DEFAULT_MAX_TOKENS = 4096
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types and the HTTP status each stands for. A stream that fails after its
# 200 (e.g. overloaded mid-answer) says so with an ``error`` event carrying one of these types:
# the log takes the status it stands for (api_error and unknown types: 500).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_TOOL_CHOICES = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}
_EMPTY_SCHEMA = {"type": "object", "properties": {}}


def _bad(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_request")


# --------------------------------------------------------------------------- requests


def chat_to_messages(doc: dict) -> dict:
    """The Anthropic Messages body for an OpenAI chat completions body."""
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "messages must be a non-empty array of message objects.")
    system: list[str] = []
    turns: list[dict] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}]", f"messages[{i}] must be an object with a role.")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content"), f"messages[{i}].content"))
        elif role == "user":
            _add_turn(turns, "user", _user_blocks(message.get("content"), f"messages[{i}].content"))
        elif role == "assistant":
            _add_turn(turns, "assistant", _assistant_blocks(message, i))
        elif role == "tool":
            _add_turn(turns, "user", [_tool_result(message, i)])
        else:
            raise _bad(
                f"messages[{i}].role", f"messages[{i}].role {role!r} is not one of system, user, assistant, tool."
            )
    out: dict = {"model": doc.get("model"), "messages": turns, "max_tokens": _max_tokens(doc)}
    if system:
        out["system"] = "\n\n".join(system)
    _copy_sampling(doc, out)
    if doc.get("tools"):
        out["tools"] = _tools(doc["tools"])
    if doc.get("tool_choice") is not None:
        choice = _tool_choice(doc["tool_choice"])
        if doc.get("parallel_tool_calls") is False and choice["type"] in ("auto", "any", "tool"):
            choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = choice
    elif doc.get("parallel_tool_calls") is False and doc.get("tools"):
        out["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
    user = doc.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if doc.get("stream") is True:
        out["stream"] = True
    return out


def _max_tokens(doc: dict) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = doc.get(name)
        if value is not None:
            try:
                return parse_int(value, param=name, minimum=1)
            except InvalidParameter as exc:
                raise _bad(exc.param, exc.message) from None
    return DEFAULT_MAX_TOKENS


def _copy_sampling(doc: dict, out: dict) -> None:
    n = doc.get("n")
    if n is not None and n != 1:
        raise _bad("n", "n: Anthropic answers with one choice; send n=1 or leave it out.")
    for name in ("temperature", "top_p"):
        if doc.get(name) is not None:
            out[name] = doc[name]
    stop = doc.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        out["stop_sequences"] = stop
    elif stop is not None:
        raise _bad("stop", "stop must be a string or an array of strings.")


def _text_of(content: object, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(param, f"{param} may only hold text parts here.")
            texts.append(part["text"])
        return "\n".join(texts)
    raise _bad(param, f"{param} must be a string or an array of text parts.")


def _user_blocks(content: object, param: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _bad(param, f"{param} must be a string or an array of content parts.")
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{param}[{j}].image_url"))
        else:
            raise _bad(f"{param}[{j}]", f"{param}[{j}] must be a text or image_url part.")
    return blocks


def _image_block(image: object, param: str) -> dict:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _bad(param, f"{param}.url must be an http(s) or data: URL.")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0]
        if ";base64" not in header or not media_type or not data:
            raise _bad(param, f"{param}.url: data URLs must be base64, e.g. data:image/png;base64,...")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: dict, i: int) -> list[dict]:
    content = message.get("content")
    blocks = []
    if content:
        text = _text_of(content, f"messages[{i}].content")
        if text:  # Anthropic refuses empty text blocks
            blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad(f"messages[{i}].tool_calls", f"messages[{i}].tool_calls must be an array.")
    for j, call in enumerate(calls):
        param = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not call.get("id"):
            raise _bad(param, f"{param} must have an id and a function with a name.")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str | bytes) else arguments
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _bad(f"{param}.function.arguments", f"{param}.function.arguments must be a JSON object (as text).")
        blocks.append({"type": "tool_use", "id": str(call["id"]), "name": function["name"], "input": parsed})
    if not blocks:
        raise _bad(f"messages[{i}].content", f"messages[{i}] (assistant) needs content or tool_calls.")
    return blocks


def _tool_result(message: dict, i: int) -> dict:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"messages[{i}].tool_call_id", f"messages[{i}].tool_call_id is required for a tool message.")
    content = message.get("content")
    result = _text_of(content, f"messages[{i}].content") if content is not None else ""
    return {"type": "tool_result", "tool_use_id": call_id, "content": result}


def _add_turn(turns: list[dict], role: str, blocks: list[dict]) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _tools(tools: object) -> list[dict]:
    if not isinstance(tools, list):
        raise _bad("tools", "tools must be an array of function tools.")
    out = []
    for j, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(f"tools[{j}]", f'tools[{j}] must be {{"type": "function", "function": {{"name": ...}}}}.')
        entry = {"name": function["name"], "input_schema": function.get("parameters") or _EMPTY_SCHEMA}
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


def _tool_choice(choice: object) -> dict:
    if isinstance(choice, str) and choice in _TOOL_CHOICES:
        return dict(_TOOL_CHOICES[choice])
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise _bad("tool_choice", 'tool_choice must be "auto", "none", "required" or {"type": "function", ...}.')


# --------------------------------------------------------------------------- answers


def openai_usage(input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> dict:
    """OpenAI counts cached prompt tokens inside prompt_tokens; Anthropic counts them apart."""
    prompt = input_tokens + cache_read + cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output_tokens,
        "total_tokens": prompt + output_tokens,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def _usage_of(usage: object) -> dict:
    usage = usage if isinstance(usage, dict) else {}

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) else 0

    return openai_usage(
        count("input_tokens"),
        count("output_tokens"),
        count("cache_read_input_tokens"),
        count("cache_creation_input_tokens"),
    )


def message_to_chat(message: dict) -> dict:
    """The chat.completion for an Anthropic message."""
    texts, calls = [], []
    for block in message.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    reply: dict = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": reply,
        "logprobs": None,
        "finish_reason": STOP_REASONS.get(message.get("stop_reason"), "stop"),
    }
    return {
        "id": message.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model") or "",
        "choices": [choice],
        "usage": _usage_of(message.get("usage")),
    }


def error_to_openai(data: bytes) -> bytes:
    """An OpenAI-shaped error body for an Anthropic error body (or any other text)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type") if isinstance(error.get("type"), str) else "api_error"
        return orjson.dumps({"error": {"message": error["message"], "type": kind, "param": None, "code": None}})
    text = data[:2000].decode("utf-8", "replace").strip() or "The provider answered with an error and no message."
    return orjson.dumps({"error": {"message": text, "type": "api_error", "param": None, "code": None}})


def stream_error(doc: dict) -> tuple[int, str]:
    """(status, message) for the log of an Anthropic stream ``error`` event."""
    error = doc.get("error") if isinstance(doc.get("error"), dict) else {}
    kind = error.get("type") if isinstance(error.get("type"), str) else "api_error"
    message = error.get("message") if isinstance(error.get("message"), str) else "no message"
    return ERROR_STATUS.get(kind, 500), f"The provider's stream failed: {kind}: {message}"


def answer_to_openai(status: int, data: bytes) -> bytes:
    if status >= 400:
        return error_to_openai(data)
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    return orjson.dumps(message_to_chat(doc)) if isinstance(doc, dict) else data


# --------------------------------------------------------------------------- streams

_DONE = b"data: [DONE]\n\n"


class ChatStreamTranslator:
    """Anthropic Messages SSE in, chat.completion.chunk SSE out; a drop-in for
    analytics.usage.StreamRelay (feed/tail/done/first_chunk_at/captured/error). Usage is read into
    ``tracker`` (an AnthropicUsage) from message_start and message_delta; with ``include_usage``
    the client gets OpenAI's usage chunk (empty choices) before ``[DONE]``. An ``error`` event
    mid-stream ends it as OpenAI's API ends a failed stream: one ``{"error": {...}}`` chunk, no
    ``[DONE]``; ``error`` then holds the (status, message) the log records."""

    CAPTURE_LIMIT = 256 * 1024

    def __init__(self, tracker, *, include_usage: bool, capture: bool = False, model: str = "") -> None:
        self.tracker = tracker
        self.include_usage = include_usage
        self.capture = capture
        self.captured = bytearray()
        self.first_chunk_at: float | None = None
        self.done = False
        self.error: tuple[int, str] | None = None
        self.buffer = b""
        self.id = ""
        self.model = model
        self.created = int(time.time())
        self.tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool_calls index

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        if b"\r\n" in self.buffer:
            self.buffer = self.buffer.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while not self.done:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                break
            event, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._translate(line[5:].strip(), out)
        data = b"".join(out)
        if self.capture and len(self.captured) < self.CAPTURE_LIMIT:
            self.captured += data[: self.CAPTURE_LIMIT - len(self.captured)]
        return data

    def tail(self) -> bytes:
        # An event the upstream did not end with a blank line, then nothing: never raw bytes.
        rest = self.buffer.strip()
        self.buffer = b""
        return self.feed(b"\n\n") if rest and not self.done else b""

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI sends it on every chunk when usage was asked for
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _translate(self, payload: bytes, out: list[bytes]) -> None:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        kind = doc.get("type")
        if kind == "content_block_delta":
            self._delta(doc, out)
        elif kind == "message_start":
            message = doc.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self._read_usage(doc)
            out.append(self._chunk({"role": "assistant", "content": ""}))
        elif kind == "content_block_start":
            self._block_start(doc, out)
        elif kind == "message_delta":
            self._read_usage(doc)
            delta = doc.get("delta") or {}
            out.append(self._chunk({}, STOP_REASONS.get(delta.get("stop_reason"), "stop")))
        elif kind == "message_stop":
            if self.include_usage:
                t = self.tracker
                usage = openai_usage(t.input_tokens, t.completion_tokens, t.cached_prompt_tokens, t.cache_write_tokens)
                head = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
                out.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
            out.append(_DONE)
            self.done = True
        elif kind == "error":
            self.error = stream_error(doc)
            out.append(b"data: " + error_to_openai(payload) + b"\n\n")
            self.done = True

    def _read_usage(self, doc: dict) -> None:
        # Usage that is not numbers: relayed, logged without tokens.
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            self.tracker.read_usage(doc)

    def _block_start(self, doc: dict, out: list[bytes]) -> None:
        block = doc.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = self.tools[doc.get("index")] = len(self.tools)
            function = {"name": block.get("name"), "arguments": ""}
            out.append(
                self._chunk(
                    {"tool_calls": [{"index": index, "id": block.get("id"), "type": "function", "function": function}]}
                )
            )
        elif block.get("type") == "text" and block.get("text"):
            out.append(self._chunk({"content": block["text"]}))

    def _delta(self, doc: dict, out: list[bytes]) -> None:
        delta = doc.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            self.tracker.content_chunks += 1
            out.append(self._chunk({"content": delta.get("text") or ""}))
        elif kind == "input_json_delta":
            index = self.tools.get(doc.get("index"))
            if index is not None:
                out.append(
                    self._chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json") or ""}}]}
                    )
                )
