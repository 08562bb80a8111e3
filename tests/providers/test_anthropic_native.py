"""The native Anthropic Messages API through Portico: passed through unchanged, with the stored
key in x-api-key, usage and status read from Anthropic's own shapes, errors left as they are."""

from __future__ import annotations

import anthropic
import orjson
import pytest
from genai_prices import Usage, calc_price

from analytics.pricing import CATALOGUE_VERSION, COST_QUANTUM

BODY = {"model": "claude-mock", "max_tokens": 256, "messages": [{"role": "user", "content": "hello there"}]}


def sdk(pgw, **headers: str) -> anthropic.Anthropic:
    # The client's own api_key is a placeholder: the workspace provider's stored key is used.
    return anthropic.Anthropic(
        api_key="sk-ant-client-placeholder",
        base_url=pgw.url,
        default_headers={"x-portkey-api-key": pgw.key, "x-portkey-provider": "@claude", **headers},
        max_retries=0,
    )


def test_it_forwards_messages_unchanged_with_the_stored_key(pgw):
    resp = pgw.post("claude", "/messages", BODY, **{"x-api-key": "sk-client", "authorization": "Bearer sk-other"})

    assert resp.status_code == 200
    assert resp.json()["type"] == "message"
    assert resp.json()["content"] == [{"type": "text", "text": "This is a mock reply."}]
    sent = pgw.last_request()
    assert sent["path"] == "/anthropic/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-stored"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"]
    assert not any(name.startswith("x-portkey-") for name in sent["headers"])
    assert orjson.loads(sent["body"]) == BODY


def test_the_clients_anthropic_version_and_beta_headers_win(pgw):
    pgw.post("claude", "/messages", BODY, **{"anthropic-version": "2024-01-01", "anthropic-beta": "tools-x"})

    sent = pgw.last_request()["headers"]
    assert sent["anthropic-version"] == "2024-01-01"
    assert sent["anthropic-beta"] == "tools-x"


def test_the_providers_api_version_is_the_default_anthropic_version(pgw):
    from workspaces import services
    from workspaces.models import Provider

    services.provider_update(provider=Provider.objects.get(slug="claude"), api_version="2023-01-01")
    from gateway.auth import provider_cache

    provider_cache.clear()
    pgw.post("claude", "/messages", BODY)

    assert pgw.last_request()["headers"]["anthropic-version"] == "2023-01-01"


def test_errors_stay_anthropics_own(pgw):
    resp = pgw.post("claude", "/messages", BODY, **{"x-mock-status": "529"})

    assert resp.status_code == 529
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "overloaded_error"
    log = pgw.wait_for_logs(1)[0]
    assert log.status_code == 529
    assert "overloaded_error" in log.error_message


def test_the_anthropic_sdk_creates_a_message_and_the_log_has_its_tokens(pgw):
    client = sdk(pgw, **{"x-mock-cache-read": "40", "x-mock-cache-write": "7"})

    message = client.messages.create(
        model="claude-mock", max_tokens=100, system="be brief", messages=[{"role": "user", "content": "one two"}]
    )

    assert message.content[0].text == "This is a mock reply."
    assert message.usage.input_tokens == 4  # "be brief" + "one two"
    assert message.usage.cache_read_input_tokens == 40
    assert pgw.last_request()["headers"]["x-api-key"] == "sk-ant-stored"
    log = pgw.wait_for_logs(1)[0]
    assert (log.status_code, log.endpoint, log.model, log.is_stream) == (200, "/messages", "claude-mock", False)
    # prompt_tokens counts every input token, cache reads and writes included (OpenAI's convention).
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (4 + 40 + 7, 5, 56)


def test_the_anthropic_sdk_streams_and_the_log_has_message_start_and_delta_usage(pgw):
    client = sdk(pgw, **{"x-mock-cache-read": "10"})

    with client.messages.stream(
        model="claude-mock", max_tokens=100, messages=[{"role": "user", "content": "stream this please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "This is a mock reply."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5
    log = pgw.wait_for_logs(1)[0]
    assert log.is_stream and log.status_code == 200
    assert (log.prompt_tokens, log.completion_tokens) == (3 + 10, 5)
    assert log.ttft_ms is not None


def test_a_stream_error_from_anthropic_reaches_the_sdk_as_its_own_error(pgw):
    client = sdk(pgw, **{"x-mock-status": "429"})

    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="claude-mock", max_tokens=10, messages=[{"role": "user", "content": "x"}])

    assert caught.value.status_code == 429
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_an_error_event_mid_stream_is_relayed_unchanged_and_logged_as_that_error(pgw):
    client = sdk(pgw, **{"x-mock-stream-error": "overloaded_error"})

    messages = [{"role": "user", "content": "stream this"}]
    # The SDK raises on `event: error`.
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="claude-mock", max_tokens=100, messages=messages) as stream,
    ):
        for _ in stream.text_stream:
            pass

    assert caught.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    log = pgw.wait_for_logs(1)[0]
    assert (log.status_code, log.success, log.is_stream) == (529, False, True)
    assert "overloaded_error: Overloaded" in log.error_message
    assert "event: error" in log.body.response_body  # what the client got: Anthropic's own event
    assert log.prompt_tokens == 2  # message_start's usage still counts


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_the_anthropic_sdk_logs_cache_reads_writes_and_the_catalogue_cost(pgw, stream):
    client = sdk(pgw, **{"x-mock-cache-read": "1000", "x-mock-cache-write": "200"})
    call = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "a b c"}]}
    if stream:
        with client.messages.stream(**call) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**call)

    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (1000, 200)
    log = pgw.wait_for_logs(1)[0]
    assert (log.prompt_tokens, log.cached_prompt_tokens, log.cache_write_tokens, log.completion_tokens) == (
        3 + 1000 + 200,
        1000,
        200,
        5,
    )
    usage = Usage(input_tokens=1203, cache_read_tokens=1000, cache_write_tokens=200, output_tokens=5)
    priced = calc_price(usage, "claude-haiku-4-5", provider_id="anthropic").total_price
    assert log.cost == priced.quantize(COST_QUANTUM) and log.price_version == CATALOGUE_VERSION
    uncached = calc_price(Usage(input_tokens=1203, output_tokens=5), "claude-haiku-4-5").total_price
    assert log.cost != uncached.quantize(COST_QUANTUM)  # reads and writes have their own rates
