"""Cost of building one gateway log record, per call: ``analytics.logrecord.log_record`` (the one
builder every producer uses since the typed record) against the inline dict literal the gateway
built before, in the same run, with the same values. Neither is priced nor buffered here.

    DEBUG=true python bench/bench_logrecord.py [--calls N]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from analytics.logrecord import log_record  # noqa: E402
from analytics.usage import UsageTracker  # noqa: E402

USAGE = UsageTracker()
USAGE.prompt_tokens, USAGE.completion_tokens, USAGE.total_tokens = 120, 48, 168
USAGE.finish_reasons = ["stop"]
METADATA = {"_user": "alice", "environment": "production", "feature": "chat"}
V = {
    "id": "0190f2c4-0000-7000-8000-000000000001",
    "created_at": "2026-01-02T03:04:05+00:00",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "endpoint": "/chat/completions",
}


def inline() -> dict:
    """The dict literal of gateway/app.py _emit_log before the typed record (base b24049f)."""
    usage, user = USAGE, METADATA.get("_user")
    status = 200
    return {
        "id": V["id"],
        "created_at": V["created_at"],
        "workspace_id": 1,
        "api_key_id": 2,
        "provider": V["provider"][:64],
        "model": V["model"][:200],
        "endpoint": V["endpoint"][:200],
        "method": "POST",
        "status_code": status,
        "success": 200 <= status < 400,
        "is_stream": False,
        "latency_ms": 1.234,
        "ttft_ms": None,
        "upstream_latency_ms": 0.9,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cached_prompt_tokens": usage.cached_prompt_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "audio_prompt_tokens": usage.audio_prompt_tokens,
        "audio_completion_tokens": usage.audio_completion_tokens,
        "cost": "0.00004680",
        "price_version": "genai-prices",
        "cache_status": "DISABLED",
        "finish_reasons": usage.finish_reasons or None,
        "cache_saved_cost": None,
        "retry_count": 0,
        "config_id": "",
        "last_used_option_index": "",
        "attempts": [],
        "trace_id": "t",
        "span_id": "",
        "parent_span_id": "",
        "span_name": "",
        "user": user[:128] if user else "",
        "metadata": METADATA,
        "metadata_changes": [],
        "error_message": ""[:2000],
        "client_runtime": "python",
        "sdk_version": "openai 1.0",
    }


def typed() -> dict:
    """What gateway/logrecord.py emit_log calls now."""
    return log_record(
        id=V["id"],
        created_at=V["created_at"],
        workspace_id=1,
        status_code=200,
        usage=USAGE,
        metadata=METADATA,
        error_message="",
        api_key_id=2,
        provider=V["provider"][:64],
        model=V["model"][:200],
        endpoint=V["endpoint"][:200],
        method="POST",
        is_stream=False,
        latency_ms=1.234,
        ttft_ms=None,
        upstream_latency_ms=0.9,
        cost="0.00004680",
        price_version="genai-prices",
        cache_status="DISABLED",
        cache_saved_cost=None,
        retry_count=0,
        config_id="",
        last_used_option_index="",
        attempts=[],
        trace_id="t",
        span_id="",
        parent_span_id="",
        span_name="",
        metadata_changes=[],
        client_runtime="python",
        sdk_version="openai 1.0",
    )


def per_call_us(func, calls: int) -> float:
    """Best of 5 repeats, in microseconds per call."""
    return min(timeit.repeat(func, number=calls, repeat=5)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    assert typed() == inline(), "the two builders must produce the same record"
    base = per_call_us(inline, args.calls)
    new = per_call_us(typed, args.calls)
    print("| builder | us per record | ratio to inline |")
    print("| --- | --- | --- |")
    print(f"| inline dict (before) | {base:.2f} | 1.00 |")
    print(f"| log_record() (now) | {new:.2f} | {new / base:.2f} |")


if __name__ == "__main__":
    main()
