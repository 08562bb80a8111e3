"""The finish-reason reader's edges that the mock upstreams do not produce (tests/providers/
test_finish_reasons.py drives every answer shape through the gateway): other servers' JSON
spacing, a reason and usage in one chunk, Responses events without usage, and the bounds."""

from __future__ import annotations

from analytics.usage import FINISH_REASON_LENGTH, MAX_FINISH_REASONS, StreamRelay, UsageTracker


def relay(*events: bytes) -> UsageTracker:
    tracker = UsageTracker()
    StreamRelay(tracker, hide_usage_chunk=False).feed(b"".join(b"data: " + event + b"\n\n" for event in events))
    return tracker


def test_a_spaced_chunk_is_read_without_decoding_it():
    tracker = relay(
        b'{"model": "m", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]}',
        b'{"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}',
    )
    assert tracker.finish_reasons == ["tool_calls"]


def test_a_chunk_with_usage_and_a_reason_counts_the_reason_once():
    tracker = relay(
        b'{"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}',
        b'{"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}',
    )
    assert tracker.finish_reasons == ["stop"]
    assert tracker.total_tokens == 2


def test_a_failed_responses_stream_without_usage_is_read():
    tracker = relay(
        b'{"type":"response.created","response":{"object":"response","model":"m","status":"in_progress","usage":null}}',
        b'{"type":"response.output_text.delta","delta":"x"}',
        b'{"type":"response.failed","response":{"object":"response","model":"m","status":"failed","usage":null}}',
    )
    assert tracker.finish_reasons == ["failed"]


def test_a_response_still_running_names_no_reason():
    tracker = UsageTracker()
    tracker.read_body(b'{"object":"response","model":"m","status":"in_progress"}')
    assert tracker.finish_reasons == []


def test_reasons_are_bounded_and_non_strings_ignored():
    tracker = UsageTracker()
    choices = ",".join(f'{{"finish_reason":"{"x" * 100}"}}' for _ in range(200))
    tracker.read_body(f'{{"choices":[{{"finish_reason":5}},{{"finish_reason":null}},{choices}]}}'.encode())
    assert len(tracker.finish_reasons) == MAX_FINISH_REASONS
    assert tracker.finish_reasons[0] == "x" * FINISH_REASON_LENGTH
