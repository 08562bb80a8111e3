"""What reading finish reasons costs the gateway per answer, measured in one run, interleaved:
each answer shape read the way the gateway reads it now (``analytics.usage`` and the provider
trackers: usage, model and finish reasons) and the way it read it before finish reasons were
kept (``before``: the same classes with the finish-reason reading taken out, the chat chunk
filter as it was). Shapes: an OpenAI chat body; chat and completions streams (20 content chunks,
usage asked for by the gateway); a Responses API stream; native Anthropic Messages and Gemini
streams; the OpenAI -> Anthropic translated stream.

Prints p50 microseconds per answer for both and the difference. Target: well under a
microsecond per answer (the gateway adds ~200-300 us per request end to end).

    .venv/bin/python bench/bench_finish_reasons.py [--iterations 20000]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

import orjson  # noqa: E402

from analytics.usage import _TEXT_DELTA, StreamRelay, UsageTracker  # noqa: E402
from bench.mock_providers import anthropic_stream_events, gemini_chunk  # noqa: E402
from bench.mock_upstream import chat_stream_events, completion_stream_events, response_stream_events  # noqa: E402
from gateway import anthropic_translate  # noqa: E402
from gateway.providers import AnthropicUsage, GeminiStreamRelay, GeminiUsage  # noqa: E402

PIECES = tuple(f" word{i}" for i in range(20))
HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
TOKENS = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}


class BeforeTracker(UsageTracker):
    def _read_finish(self, doc: dict) -> None:
        pass


class BeforeRelay(StreamRelay):
    """StreamRelay._keep as it was before finish reasons (no reason pattern, no end events)."""

    def _keep(self, event: bytes) -> bool:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return True
            has_usage = b'"usage"' in payload and b'"usage":null' not in payload
            if (b'"choices"' in payload and b'"choices":[]' not in payload) or _TEXT_DELTA in payload:
                self.tracker.content_chunks += 1
            if not has_usage and self.tracker.model:
                continue
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return True
            if not isinstance(doc, dict):
                return True
            try:
                self.tracker.read_usage(doc)
            except (TypeError, ValueError, OverflowError):
                return True
            if self.hide_usage_chunk and not doc.get("choices") and doc.get("usage"):
                return False
        return True


class BeforeAnthropic(AnthropicUsage):
    def _stop_reason(self, reason: object) -> None:
        pass


class BeforeGemini(GeminiUsage):
    def add_finish_reason(self, reason: object) -> None:
        pass


class BeforeGeminiRelay(GeminiStreamRelay):
    def _keep(self, event: bytes) -> bool:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            if b'"candidates"' in line:
                self.tracker.content_chunks += 1
            if b'"usageMetadata"' in line or not self.tracker.model:
                try:
                    doc = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict):
                    self.tracker.read_usage(doc)
        return True


def _stream(events: list[bytes]) -> tuple[bytes, ...]:
    return tuple(events)  # fed one event per read, as the network delivers them


CHAT_BODY = orjson.dumps(
    {
        **HEAD,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": TOKENS,
    }
)
CHAT_STREAM = _stream(chat_stream_events(dict(HEAD), PIECES, TOKENS, True))
COMPLETION_STREAM = _stream(completion_stream_events({**HEAD, "object": "text_completion"}, PIECES, TOKENS, True))
RESPONSES_STREAM = _stream(
    response_stream_events(
        {"id": "resp-1", "object": "response", "created_at": 1, "model": "gpt-4o-mini"},
        "msg-1",
        PIECES,
        {"input_tokens": 12, "output_tokens": 20, "total_tokens": 32},
    )
)
ANTHROPIC_STREAM = _stream(
    anthropic_stream_events(
        {"id": "msg-1", "type": "message", "role": "assistant", "model": "claude", "stop_sequence": None},
        [{"type": "text", "text": "".join(PIECES).strip()}],
        "end_turn",
        {"input_tokens": 12, "output_tokens": 20},
        20,
    )
)
_USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 20, "totalTokenCount": 32}
GEMINI_STREAM = tuple(
    b"data: " + orjson.dumps(gemini_chunk("gemini", "r", p, "STOP" if i == 19 else None, _USAGE)) + b"\r\n\r\n"
    for i, p in enumerate(PIECES)
)


def _relay(relay, stream: tuple[bytes, ...]) -> None:
    for chunk in stream:
        relay.feed(chunk)
    relay.tail()


SHAPES = {
    "chat body": (
        lambda: BeforeTracker().read_body(CHAT_BODY),
        lambda: UsageTracker().read_body(CHAT_BODY),
    ),
    "chat stream": (
        lambda: _relay(BeforeRelay(BeforeTracker(), hide_usage_chunk=True), CHAT_STREAM),
        lambda: _relay(StreamRelay(UsageTracker(), hide_usage_chunk=True), CHAT_STREAM),
    ),
    "completions stream": (
        lambda: _relay(BeforeRelay(BeforeTracker(), hide_usage_chunk=True), COMPLETION_STREAM),
        lambda: _relay(StreamRelay(UsageTracker(), hide_usage_chunk=True), COMPLETION_STREAM),
    ),
    "responses stream": (
        lambda: _relay(BeforeRelay(BeforeTracker(), hide_usage_chunk=False), RESPONSES_STREAM),
        lambda: _relay(StreamRelay(UsageTracker(), hide_usage_chunk=False), RESPONSES_STREAM),
    ),
    "anthropic stream": (
        lambda: _relay(BeforeRelay(BeforeAnthropic(), hide_usage_chunk=False), ANTHROPIC_STREAM),
        lambda: _relay(StreamRelay(AnthropicUsage(), hide_usage_chunk=False), ANTHROPIC_STREAM),
    ),
    "translated stream": (
        lambda: _relay(
            anthropic_translate.ChatStreamTranslator(BeforeAnthropic(), include_usage=False), ANTHROPIC_STREAM
        ),
        lambda: _relay(
            anthropic_translate.ChatStreamTranslator(AnthropicUsage(openai_reasons=True), include_usage=False),
            ANTHROPIC_STREAM,
        ),
    ),
    "gemini stream": (
        lambda: _relay(BeforeGeminiRelay(BeforeGemini(), hide_usage_chunk=False), GEMINI_STREAM),
        lambda: _relay(GeminiStreamRelay(GeminiUsage(), hide_usage_chunk=False), GEMINI_STREAM),
    ),
}


def check() -> None:
    """The "after" readers do find the reasons (so the comparison is of real work)."""
    expected = {
        "chat stream": (StreamRelay(UsageTracker(), hide_usage_chunk=True), CHAT_STREAM, ["stop"]),
        "responses stream": (StreamRelay(UsageTracker(), hide_usage_chunk=False), RESPONSES_STREAM, ["completed"]),
        "anthropic stream": (StreamRelay(AnthropicUsage(), hide_usage_chunk=False), ANTHROPIC_STREAM, ["end_turn"]),
        "gemini stream": (GeminiStreamRelay(GeminiUsage(), hide_usage_chunk=False), GEMINI_STREAM, ["STOP"]),
    }
    for name, (relay, stream, reasons) in expected.items():
        _relay(relay, stream)
        assert relay.tracker.finish_reasons == reasons, (name, relay.tracker.finish_reasons)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args(argv)
    check()
    samples = {name: ([], []) for name in SHAPES}
    for before, after in SHAPES.values():  # warm up
        for _ in range(300):
            before()
            after()
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(args.iterations):
            for name, (before, after) in SHAPES.items():
                pair = ((0, before), (1, after))
                for index, fn in pair if i % 2 else pair[::-1]:  # each first half of the time
                    start = clock()
                    fn()
                    samples[name][index].append((clock() - start) / 1000)
            if i % 2000 == 0:
                gc.collect()
    finally:
        gc.enable()
    print(f"{'answer':<20} {'before us':>10} {'after us':>10} {'added us':>9}")
    worst = 0.0
    for name, (before, after) in samples.items():
        b, a = statistics.median(before), statistics.median(after)
        worst = max(worst, a - b)
        print(f"{name:<20} {b:>10.2f} {a:>10.2f} {a - b:>+9.2f}")
    print(f"largest p50 difference: {worst:+.2f} us per answer ({args.iterations} iterations, interleaved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
