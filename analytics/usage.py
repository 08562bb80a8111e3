"""Reading upstream answers for the log: token usage, model and finish reasons, in each API's
shape, from a JSON body or from the SSE events relayed to the client (``StreamRelay``).

Parsing stays on the path that already parses: a body is decoded once after the answer went out,
and a stream's events are decoded only when they carry usage (or come before the model is
known). Content deltas are counted without decoding; the one OpenAI chat/completions chunk that
names a finish reason is read with a byte pattern, not a JSON decode. Provider kinds with other
shapes (Anthropic, Gemini) subclass these in gateway/providers.py.
"""

from __future__ import annotations

import contextlib
import re

import orjson

from config.parsing import parse_int

# A token count is a whole number from 0 to what RequestLog's token columns hold. Anything else
# (a negative count, 1.5, true, 10**30, 1e308) is not a count: read_usage raises ValueError
# (config.parsing.InvalidParameter naming the field), so the gateway logs the answer without
# tokens and a custom log is a 400, instead of pricing a negative cost or failing the record
# (a count past Decimal's precision made pricing raise and the log was dropped).
MAX_TOKEN_COUNT = 2**31 - 1

# At most this many finish reasons per log (one per choice; OpenAI allows n up to 128), each cut to
# this length: the column is read by people and OTLP collectors, not an archive of the answer.
MAX_FINISH_REASONS = 128
FINISH_REASON_LENGTH = 64
# A chunk's non-null finish reason, e.g. "finish_reason":"stop" (spaces allowed, as some
# OpenAI-compatible servers write them).
_FINISH_REASON = re.compile(rb'"finish_reason"\s*:\s*"([^"\\]{1,64})"')
# Responses API statuses that are not an end (a stream's response.created, in_progress, ...).
_RESPONSE_RUNNING = frozenset(("in_progress", "queued"))
_TEXT_DELTA = b'"response.output_text.delta"'  # a Responses API content event
# Responses API end events that may carry no usage, so are not parsed for it.
_RESPONSE_FAILED = b'"response.failed"'
_RESPONSE_INCOMPLETE = b'"response.incomplete"'


class UsageTracker:
    """Reads usage, model and finish reasons out of upstream answers (JSON bodies or SSE events),
    each API in its own shape: chat/completions and embeddings ``usage.prompt_tokens/completion_tokens``;
    the Responses API ``usage.input_tokens/output_tokens`` on the response object, which its
    stream events (response.created, response.completed, ...) carry under ``response``.

    The parts priced at their own rates (analytics.pricing) are read too: cached prompt
    tokens (``prompt_tokens_details.cached_tokens``, Responses ``input_tokens_details``),
    reasoning (``completion_tokens_details.reasoning_tokens``, Responses
    ``output_tokens_details``) and audio (``*_tokens_details.audio_tokens``). Counts follow
    OpenAI's convention, whose prompt count includes cached tokens: an Anthropic usage
    (``cache_read_input_tokens``/``cache_creation_input_tokens``, which its ``input_tokens``
    excludes) has both added to ``prompt_tokens``, so every provider's prompt_tokens means the
    same and cached tokens are never charged twice.

    Finish reasons (``gen_ai.response.finish_reasons``): ``choices[].finish_reason`` of chat and
    completions answers, one per choice in the order they came; for the Responses API its final
    ``status`` (``completed``, ``failed``, ``cancelled``), or for an ``incomplete`` answer
    ``incomplete_details.reason`` (``max_output_tokens``, ``content_filter``)."""

    __slots__ = (
        "audio_completion_tokens",
        "audio_prompt_tokens",
        "cache_write_tokens",
        "cached_prompt_tokens",
        "completion_tokens",
        "content_chunks",
        "finish_reasons",
        "model",
        "prompt_tokens",
        "reasoning_tokens",
        "saw_usage",
        "total_tokens",
    )

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.total_tokens = 0
        self.cached_prompt_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.audio_prompt_tokens = 0
        self.audio_completion_tokens = 0
        self.model = ""
        self.saw_usage = False
        self.content_chunks = 0
        self.finish_reasons: list[str] = []

    def add_finish_reason(self, reason: object) -> None:
        if type(reason) is str and reason and len(self.finish_reasons) < MAX_FINISH_REASONS:
            self.finish_reasons.append(reason[:FINISH_REASON_LENGTH])

    def scan_finish_reasons(self, payload: bytes) -> None:
        """The finish reasons of a chat/completions chunk, without decoding it."""
        for match in _FINISH_REASON.finditer(payload):
            self.add_finish_reason(match.group(1).decode("utf-8", "replace"))

    def _read_finish(self, doc: dict) -> None:
        choices = doc.get("choices")
        if type(choices) is list:
            for choice in choices:  # a stream's chunks name it once, the others say null
                if type(choice) is dict and (reason := choice.get("finish_reason")):
                    self.add_finish_reason(reason)
        elif doc.get("object") == "response":  # the Responses API: each event restates the status
            status = doc.get("status")
            if type(status) is not str or status in _RESPONSE_RUNNING:
                return
            details = doc.get("incomplete_details")
            reason = details.get("reason") if status == "incomplete" and type(details) is dict else None
            self.finish_reasons = []
            self.add_finish_reason(reason if type(reason) is str and reason else status)

    def read_usage(self, doc: dict) -> None:
        response = doc.get("response")
        if isinstance(response, dict):  # a Responses API stream event
            doc = response
        model = doc.get("model")
        if model and not self.model and isinstance(model, str):
            self.model = model
        self._read_finish(doc)
        usage = doc.get("usage")
        if not isinstance(usage, dict):
            return
        cache_write = 0
        if "input_tokens" in usage and "prompt_tokens" not in usage:
            prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
            prompt_details, completion_details = usage.get("input_tokens_details"), usage.get("output_tokens_details")
        else:
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            prompt_details, completion_details = (
                usage.get("prompt_tokens_details"),
                usage.get("completion_tokens_details"),
            )
        # Raises ValueError (InvalidParameter) for counts that are not counts (custom logs answer 400).
        openai = "prompt_tokens" in usage or "input_tokens" not in usage
        prompt_tokens = token_count(prompt, "prompt_tokens" if openai else "input_tokens")
        completion_tokens = token_count(completion, "completion_tokens" if openai else "output_tokens")
        prompt_where = "prompt_tokens_details" if openai else "input_tokens_details"
        completion_where = "completion_tokens_details" if openai else "output_tokens_details"
        cached, audio_prompt = _details(prompt_details, prompt_where, "cached_tokens", "audio_tokens")
        reasoning, audio_completion = _details(completion_details, completion_where, "reasoning_tokens", "audio_tokens")
        anthropic_read, anthropic_write = usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens")
        if anthropic_read is not None or anthropic_write is not None:
            cached = token_count(anthropic_read, "cache_read_input_tokens")
            cache_write = token_count(anthropic_write, "cache_creation_input_tokens")
            prompt_tokens += cached + cache_write
        total_tokens = token_count(usage.get("total_tokens"), "total_tokens") or prompt_tokens + completion_tokens
        self.prompt_tokens, self.completion_tokens, self.total_tokens = prompt_tokens, completion_tokens, total_tokens
        self.cached_prompt_tokens, self.cache_write_tokens = cached, cache_write
        self.reasoning_tokens = reasoning
        self.audio_prompt_tokens, self.audio_completion_tokens = audio_prompt, audio_completion
        self.saw_usage = True

    def read_body(self, body: bytes) -> None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict):
            # A provider's usage that is not numbers: logged without tokens, not a 500.
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                self.read_usage(doc)

    def finish(self) -> None:
        # A stream cut short carries no usage; count the content chunks we relayed as a
        # lower bound of completion tokens rather than claiming zero.
        if not self.saw_usage and self.content_chunks:
            self.completion_tokens = self.content_chunks
            self.total_tokens = self.prompt_tokens + self.completion_tokens


def token_count(value: object, field: str) -> int:
    """A token count read from an answer's usage (absent or null: 0); raises InvalidParameter
    (a ValueError) whose param is ``usage.<field>``. Integral floats (``12.0``) are taken."""
    if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
        return value  # the common case, without formatting it as text
    if value is None:
        return 0
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_TOKEN_COUNT:
        return int(value)
    if type(value) is not int and type(value) is not str:
        value = "-"  # true, 1.5, lists and objects are not counts; str() of them could parse
    return parse_int(value, param=f"usage.{field}", minimum=0, maximum=MAX_TOKEN_COUNT)


def _details(details: object, where: str, first: str, second: str) -> tuple[int, int]:
    """Two counts of a ``*_tokens_details`` object (absent or null: 0; never negative, so a
    part never adds to the price of its whole)."""
    if not isinstance(details, dict):
        return 0, 0
    return token_count(details.get(first), f"{where}.{first}"), token_count(details.get(second), f"{where}.{second}")


class StreamRelay:
    """Splits the upstream SSE byte stream into events, forwards each complete event as it
    arrives, and withholds the usage-only event when usage was requested on the client's
    behalf."""

    # Streamed bodies are kept for the log up to this size; a log is not an archive.
    CAPTURE_LIMIT = 256 * 1024
    # (status, message) when the provider failed the stream after its 200 (set by a provider
    # kind's relay, e.g. providers.AnthropicStreamRelay); the log records that status.
    error: tuple[int, str] | None = None

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
        tracker = self.tracker
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return True
            # Most events are content deltas: count them without parsing; parse only those
            # before the model is known and those that carry usage. A chunk that is not parsed
            # gives its finish reason to a byte pattern (every chunk is one or the other, so a
            # reason is never counted twice).
            has_usage = b'"usage"' in payload and b'"usage":null' not in payload
            chat = b'"choices"' in payload and b'"choices":[]' not in payload
            text_delta = not chat and _TEXT_DELTA in payload
            if chat or text_delta:
                tracker.content_chunks += 1
            if not has_usage and tracker.model:
                if chat:
                    if b'"finish_reason":null' not in payload and b'"finish_reason"' in payload:
                        tracker.scan_finish_reasons(payload)
                    continue
                if text_delta or (_RESPONSE_FAILED not in payload and _RESPONSE_INCOMPLETE not in payload):
                    continue
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return True
            if not isinstance(doc, dict):
                return True
            try:
                tracker.read_usage(doc)
            except (TypeError, ValueError, OverflowError):
                return True  # usage that is not numbers: relayed, logged without tokens
            if self.hide_usage_chunk and not doc.get("choices") and doc.get("usage"):
                return False
        return True

    def tail(self) -> bytes:
        rest, self.buffer = self.buffer, b""
        return rest
