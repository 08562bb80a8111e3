"""The OpenAI Responses API through the gateway: its streams end without ``[DONE]`` and carry
usage as ``input_tokens``/``output_tokens`` on the response object; the log reads each API in
its own shape."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from openai import OpenAI

from analytics.usage import StreamRelay, UsageTracker

# gpt-4o-mini: $0.15 input, $0.60 output per million tokens (analytics/pricing.json).
COST_2_IN_5_OUT = Decimal("0.0000033")


def client(gw) -> OpenAI:
    return OpenAI(api_key="unused", base_url=gw.v1, default_headers=gw.headers(), max_retries=0)


def test_a_responses_stream_is_logged_as_a_success_with_its_tokens_and_cost(gw):
    events = list(client(gw).responses.create(model="gpt-4o-mini", input="hello there", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "This is a mock reply."
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success, log.error_message) == (200, True, "")
    assert (log.endpoint, log.is_stream, log.model) == ("/responses", True, "gpt-4o-mini")
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (2, 5, 7)
    assert log.cost == COST_2_IN_5_OUT
    assert log.ttft_ms is not None


def test_a_responses_body_is_logged_with_its_tokens_and_cost(gw):
    reply = client(gw).responses.create(model="gpt-4o-mini", input="hello there")
    assert reply.output_text == "This is a mock reply."
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.is_stream, log.model) == (200, False, "gpt-4o-mini")
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (2, 5, 7)
    assert log.cost == COST_2_IN_5_OUT


def test_the_model_the_stream_names_lands_on_the_log(gw):
    # No model in the request: the log takes the one in the events' `response.model`.
    with httpx.stream("POST", gw.v1 + "/responses", json={"input": "hi", "stream": True}, headers=gw.headers()) as r:
        assert r.status_code == 200
        r.read()
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.model, log.total_tokens) == (200, "mock", 6)


def test_a_responses_stream_cut_mid_body_is_a_failure(gw):
    # created, in_progress, item added, part added, then two of the five text deltas.
    headers = gw.headers(x_mock_reset_after="6")
    stream = (
        client(gw).with_options(default_headers=headers).responses.create(model="gpt-4o-mini", input="hi", stream=True)
    )
    assert [event.type for event in stream][-2:] == ["response.output_text.delta"] * 2  # no response.completed
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success) == (502, False)
    assert "broke off" in log.error_message
    assert log.completion_tokens == 2  # the deltas relayed, a lower bound


@pytest.mark.parametrize(
    "body, tokens",
    [
        (b'{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}', (3, 4, 7)),
        (b'{"object":"list","model":"e","usage":{"prompt_tokens":3,"total_tokens":3}}', (3, 0, 3)),
        (b'{"object":"response","model":"r","usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}', (3, 4, 7)),
        (b'{"model":"m","usage":{"prompt_tokens":"many"}}', (0, 0, 0)),
    ],
)
def test_usage_is_read_in_each_apis_shape(body, tokens):
    tracker = UsageTracker()
    tracker.read_body(body)
    assert (tracker.prompt_tokens, tracker.completion_tokens, tracker.total_tokens) == tokens


def test_the_relay_reads_responses_events_and_counts_text_deltas():
    tracker = UsageTracker()
    relay = StreamRelay(tracker, hide_usage_chunk=False)
    stream = (
        b'event: response.created\ndata: {"type":"response.created","response":{"model":"gpt-4o","usage":null}}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hi"}\n\n'
        b'event: response.completed\ndata: {"type":"response.completed","response":{"model":"gpt-4o",'
        b'"usage":{"input_tokens":9,"output_tokens":1,"total_tokens":10}}}\n\n'
    )
    assert relay.feed(stream) == stream
    assert (tracker.model, tracker.content_chunks) == ("gpt-4o", 1)
    assert (tracker.prompt_tokens, tracker.completion_tokens, tracker.total_tokens) == (9, 1, 10)
