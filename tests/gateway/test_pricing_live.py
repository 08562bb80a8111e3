"""Through the live gateway with the real openai SDK: cached and reasoning tokens reach the
log and are priced at their own rates, with the price version recorded."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest
from genai_prices import Usage, calc_price
from openai import OpenAI

from analytics import pricing
from analytics.pricing import CATALOGUE_VERSION, COST_QUANTUM
from gateway.pricing import price_cache

USAGE = {
    "prompt_tokens": 2_000,
    "completion_tokens": 300,
    "prompt_tokens_details": {"cached_tokens": 1_536},
    "completion_tokens_details": {"reasoning_tokens": 256},
}


def expected_cost(model: str) -> Decimal:
    usage = Usage(input_tokens=2_000, cache_read_tokens=1_536, output_tokens=300, output_reasoning_tokens=256)
    return calc_price(usage, model, provider_id="openai").total_price.quantize(COST_QUANTUM)


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_cached_and_reasoning_tokens_are_logged_and_priced(gw, stream):
    client = OpenAI(
        api_key="unused", base_url=gw.v1, default_headers=gw.headers(x_mock_usage=orjson.dumps(USAGE).decode())
    )
    messages = [{"role": "user", "content": "hello"}]
    if stream:
        chunks = list(client.chat.completions.create(model="o4-mini", messages=messages, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "This is a mock reply."
    else:
        reply = client.chat.completions.create(model="o4-mini", messages=messages)
        assert reply.usage.prompt_tokens_details.cached_tokens == 1_536
        assert reply.usage.completion_tokens_details.reasoning_tokens == 256

    (log,) = gw.wait_for_logs(1)
    assert (log.prompt_tokens, log.cached_prompt_tokens, log.completion_tokens, log.reasoning_tokens) == (
        2_000,
        1_536,
        300,
        256,
    )
    assert log.cost == expected_cost("o4-mini") and log.price_version == CATALOGUE_VERSION
    uncached = calc_price(Usage(input_tokens=2_000, output_tokens=300), "o4-mini", provider_id="openai").total_price
    assert log.cost < uncached


def test_an_override_prices_the_next_requests_and_names_itself(gw):
    override = pricing.price_create(
        model="o4-mini", workspace=gw.workspace, input_per_million=Decimal(1), output_per_million=Decimal(2)
    )
    price_cache.clear()
    gw.post(
        json={"model": "o4-mini-2025-04-16", "messages": [{"role": "user", "content": "hi"}]},
        headers=gw.headers(x_mock_usage=orjson.dumps(USAGE).decode()),
    )
    (log,) = gw.wait_for_logs(1)
    # No cache-read rate on the override: the cached tokens are charged at its input rate.
    assert log.cost == Decimal("0.00260000")  # 2000 * 1 / 1M + 300 * 2 / 1M
    assert log.price_version == pricing.override_version(override)


def test_an_unknown_model_is_logged_with_null_cost(gw):
    gw.post(json={"model": "my-finetune-7b", "messages": [{"role": "user", "content": "hi"}]})
    (log,) = gw.wait_for_logs(1)
    assert log.total_tokens > 0 and log.cost is None and log.price_version == ""


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("count", [10**30, 1e308, -5], ids=["10**30", "1e308", "negative"])
def test_a_providers_token_count_that_is_no_count_still_gives_a_log(gw, stream, count):
    """A count past Decimal's precision made pricing raise inside the log buffer ("Could not
    build a log record; dropped"): the request was answered and never logged. A negative one
    was priced as a negative cost. Now the answer is logged as one whose usage is unknown."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    usage = json.dumps({"prompt_tokens": count, "completion_tokens": 5})
    response = gw.post(json=body, headers=gw.headers(x_mock_usage=usage))
    assert response.status_code == 200
    (log,) = gw.wait_for_logs(1)
    assert str(log.id) == response.headers["x-portico-log-id"]
    assert (log.status_code, log.prompt_tokens) == (200, 0)
    if stream:  # as for a stream cut short: the relayed content chunks, a lower bound
        assert log.total_tokens == log.completion_tokens > 0 and log.cost > 0
    else:
        assert (log.total_tokens, log.cost) == (0, None)
