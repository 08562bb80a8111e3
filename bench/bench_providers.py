"""What provider kinds cost on the hot path: the gateway's per-request work for one
non-streaming chat completion, measured in one run, interleaved, three ways:

- ``inline``     what gateway/app.py did before provider kinds: ``base_url + endpoint`` and
                 ``proxy.upstream_headers`` (the baseline of the plain path);
- ``openai``     ``providers.prepare_upstream`` for an ``openai`` provider, the answer relayed
                 as is and its usage read (today's plain path);
- ``anthropic``  the same OpenAI request to an ``anthropic`` provider: translated to Anthropic
                 Messages, the Anthropic answer translated back, usage read from its shape.

Each iteration parses the client's JSON body (as the gateway does) and runs the path once;
p50/p90 of per-iteration times in microseconds, and translated minus plain ("added").
Target: translation adds <= 100 us p50; the plain path within noise of ``inline``.

``--streams`` instead relays one Anthropic Messages stream (60 text deltas, usage events),
interleaved: ``generic`` (proxy.StreamRelay with Anthropic usage, what native /v1/messages
streams used before error events were noted), ``native`` (providers.AnthropicStreamRelay, which
also notes a mid-stream ``error`` event for the log) and ``translated`` (to OpenAI chunks).

    .venv/bin/python bench/bench_providers.py [--iterations 20000] [--json] [--streams]
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

from analytics.usage import UsageTracker  # noqa: E402
from gateway import anthropic_translate, providers, proxy  # noqa: E402
from gateway.auth import ProviderSnapshot  # noqa: E402

HEADERS = {
    "host": "127.0.0.1:8000",
    "content-type": "application/json",
    "accept": "application/json",
    "authorization": "Bearer sk-placeholder",
    "x-portkey-api-key": "pk-live-xxxxxxxxxxxxxxxxxxxxxxxx",
    "x-portkey-provider": "@p",
    "x-portkey-metadata": '{"environment": "production", "_user": "alice"}',
    "user-agent": "OpenAI/Python 3.51.0",
    "x-stainless-lang": "python",
    "x-stainless-package-version": "3.51.0",
}
REQUEST = orjson.dumps(
    {
        "model": "claude-mock",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
            {"role": "user", "content": "What is the weather like in Paris today, and should I bring an umbrella?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather in a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        "temperature": 0.3,
        "max_tokens": 512,
    }
)
REPLY = " ".join(["The weather in Paris is mild with a chance of light rain in the afternoon."] * 4)
OPENAI_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 61, "completion_tokens": 60, "total_tokens": 121},
    }
)
ANTHROPIC_ANSWER = orjson.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-mock",
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 61,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "output_tokens": 60,
        },
    }
)
OPENAI = ProviderSnapshot(slug="p", kind="openai", base_url="https://api.openai.com/v1", secret="sk-stored")
ANTHROPIC = ProviderSnapshot(slug="c", kind="anthropic", base_url="https://api.anthropic.com/v1", secret="sk-ant")


def inline() -> None:
    doc = orjson.loads(REQUEST)
    url = OPENAI.base_url + "/chat/completions"
    headers = proxy.upstream_headers(HEADERS, OPENAI.secret)
    tracker = UsageTracker()
    tracker.read_body(OPENAI_ANSWER)
    assert url and headers and doc


def plain() -> None:
    doc = orjson.loads(REQUEST)
    up = providers.prepare_upstream(OPENAI, "/chat/completions", HEADERS, REQUEST, doc)
    body = up.answer_body(200, OPENAI_ANSWER) if up.translated else OPENAI_ANSWER
    UsageTracker().read_body(OPENAI_ANSWER)
    assert body


def translated() -> None:
    doc = orjson.loads(REQUEST)
    up = providers.prepare_upstream(ANTHROPIC, "/chat/completions", HEADERS, REQUEST, doc)
    body = up.answer_body(200, ANTHROPIC_ANSWER) if up.translated else ANTHROPIC_ANSWER
    up.usage_tracker().read_body(ANTHROPIC_ANSWER)
    assert body


def _anthropic_stream() -> list[bytes]:
    from bench.mock_providers import anthropic_stream_events

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-mock", "stop_sequence": None}
    usage = {"input_tokens": 61, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 60}
    events = anthropic_stream_events(message, [{"type": "text", "text": REPLY}], "end_turn", usage, 60)
    # As the network hands them over: a few events per read.
    return [b"".join(events[i : i + 4]) for i in range(0, len(events), 4)]


STREAM = _anthropic_stream()


def _relay(relay) -> None:
    for chunk in STREAM:
        relay.feed(chunk)
    relay.tail()


def stream_generic() -> None:
    _relay(proxy.StreamRelay(providers.AnthropicUsage(), hide_usage_chunk=False))


def stream_native() -> None:
    _relay(providers.AnthropicStreamRelay(providers.AnthropicUsage(), hide_usage_chunk=False))


def stream_translated() -> None:
    _relay(anthropic_translate.ChatStreamTranslator(providers.AnthropicUsage(), include_usage=False))


def measure(iterations: int, paths: dict | None = None) -> dict[str, list[float]]:
    paths = paths or {"inline": inline, "openai": plain, "anthropic": translated}
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():  # warm up
        for _ in range(500):
            fn()
    gc.disable()
    try:
        clock = time.perf_counter_ns
        for i in range(iterations):
            for name, fn in paths.items():
                start = clock()
                fn()
                samples[name].append((clock() - start) / 1000)
            if i % 2000 == 0:
                gc.collect()
    finally:
        gc.enable()
    return samples


def summarise(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for name, values in samples.items():
        q = statistics.quantiles(values, n=10)
        out[name] = {"p50_us": round(statistics.median(values), 2), "p90_us": round(q[8], 2)}
    plain_p50, translated_p50 = out["openai"]["p50_us"], out["anthropic"]["p50_us"]
    out["added"] = {
        "translation_p50_us": round(translated_p50 - plain_p50, 2),
        "translated_over_plain": round(translated_p50 / plain_p50, 2),
        "plain_over_inline": round(plain_p50 / out["inline"]["p50_us"], 2),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--streams", action="store_true", help="relay an Anthropic stream three ways instead")
    args = parser.parse_args(argv)
    if args.streams:
        return streams(args.iterations, args.json)
    result = summarise(measure(args.iterations))
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"{'path':<10} {'p50 us':>8} {'p90 us':>8}")
        for name in ("inline", "openai", "anthropic"):
            print(f"{name:<10} {result[name]['p50_us']:>8} {result[name]['p90_us']:>8}")
        added = result["added"]
        print(
            f"translation adds {added['translation_p50_us']} us p50 "
            f"(translated/plain {added['translated_over_plain']}x); plain/inline {added['plain_over_inline']}x"
        )
    return 0 if result["added"]["translation_p50_us"] <= 100 else 1


def streams(iterations: int, as_json: bool) -> int:
    samples = measure(iterations, {"generic": stream_generic, "native": stream_native, "translated": stream_translated})
    result = {}
    for name, values in samples.items():
        q = statistics.quantiles(values, n=10)
        result[name] = {"p50_us": round(statistics.median(values), 2), "p90_us": round(q[8], 2)}
    result["native_over_generic"] = round(result["native"]["p50_us"] / result["generic"]["p50_us"], 3)
    if as_json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"one stream of {len(STREAM)} reads; {'relay':<11} {'p50 us':>8} {'p90 us':>8}")
        for name in ("generic", "native", "translated"):
            print(f"{'':>26}{name:<11} {result[name]['p50_us']:>8} {result[name]['p90_us']:>8}")
        print(f"native/generic {result['native_over_generic']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
