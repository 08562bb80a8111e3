"""The Portkey SDK with a config, unchanged, across provider kinds: a fallback from an
OpenAI-compatible target that fails to an ``anthropic`` one (OpenAI chat translated), with the
cached tokens and the catalogue's cost on the one log."""

from __future__ import annotations

from genai_prices import Usage, calc_price
from portkey_ai import Portkey

from analytics.pricing import COST_QUANTUM
from workspaces import services

MODEL = "claude-haiku-4-5"


def test_a_fallback_to_anthropic_logs_tokens_cached_tokens_and_cost(pgw):
    # An OpenAI-compatible provider whose base path the mock does not serve: every call is a 404.
    services.provider_create(workspace=pgw.workspace, slug="gone", base_url=pgw.mock.url + "/gone/v1", api_key="sk")
    config = {
        "strategy": {"mode": "fallback"},
        "targets": [{"provider": "@gone"}, {"provider": "@claude", "override_params": {"model": MODEL}}],
    }
    client = Portkey(api_key=pgw.key, base_url=pgw.v1, config=config, metadata={"feature": "chat"})

    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello there"}],
        extra_headers={"x-mock-cache-read": "1000"},
    )

    assert reply.choices[0].message.content == "This is a mock reply."
    assert (reply.usage.prompt_tokens, reply.usage.prompt_tokens_details.cached_tokens) == (1002, 1000)
    headers = reply.get_headers()  # the SDK drops the x-portkey- prefix
    assert (headers["provider"], headers["last-used-option-index"], headers["retry-attempt-count"]) == (
        "@claude",
        "config.targets[1]",
        "0",
    )
    assert headers["cache-status"] == "DISABLED"
    [log] = pgw.wait_for_logs(1)
    assert (log.provider, log.model, log.config_id, log.last_used_option_index) == (
        "@claude",
        MODEL,
        "inline",
        "config.targets[1]",
    )
    assert [(a["provider"], a["status"]) for a in log.attempts] == [("@gone", 404), ("@claude", 200)]
    assert (log.prompt_tokens, log.cached_prompt_tokens, log.completion_tokens) == (1002, 1000, 5)
    usage = Usage(input_tokens=1002, cache_read_tokens=1000, output_tokens=5)
    assert log.cost == calc_price(usage, MODEL, provider_id="anthropic").total_price.quantize(COST_QUANTUM)
    assert log.metadata["feature"] == "chat"
