"""The Portkey SDK with configs, unchanged, through Portico: an inline dict and a saved
config's id, for fallback, retries, loadbalance and the cache."""

from __future__ import annotations

from portkey_ai import Portkey

from tests.configs.conftest import answered_by
from workspaces import services

MESSAGES = [{"role": "user", "content": "hello there"}]
FALLBACK = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@broken"}, {"provider": "@backup"}]}


def test_inline_config_falls_back(gw):
    client = Portkey(api_key=gw.key, base_url=gw.v1, config=FALLBACK)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content == "This is a mock reply."
    headers = reply.get_headers()  # the SDK drops the x-portkey- prefix
    assert headers["provider"] == "@backup"
    assert headers["last-used-option-index"] == "config.targets[1]"
    assert gw.broken.stats["requests"] == 1 and answered_by(gw.upstream) == ["@backup"]
    [log] = gw.wait_for_logs(1)
    assert (log.provider, log.config_id, len(log.attempts)) == ("@backup", "inline", 2)


def test_saved_config_by_id_and_by_slug(gw):
    saved = services.config_create(workspace=gw.workspace, slug="resilient", config=FALLBACK)
    for ref in (saved.public_id, "resilient"):
        client = Portkey(api_key=gw.key, base_url=gw.v1, config=ref)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert reply.get_headers()["provider"] == "@backup"
    logs = gw.wait_for_logs(2)
    assert {log.config_id for log in logs} == {saved.public_id}


def test_retry_honours_retry_after(gw):
    client = Portkey(api_key=gw.key, base_url=gw.v1, config={"provider": "@mock", "retry": {"attempts": 2}})
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        extra_headers={"x-mock-status": "429", "x-mock-fail-first": "1", "x-mock-retry-after-ms": "100"},
    )
    assert reply.get_headers()["retry-attempt-count"] == "1"
    assert len(gw.upstream.requests) == 2
    [log] = gw.wait_for_logs(1)
    assert (log.retry_count, [a["status"] for a in log.attempts]) == (1, [429, 200])


def test_loadbalance_weights(gw):
    config = {
        "strategy": {"mode": "loadbalance"},
        "targets": [{"provider": "@mock", "weight": 1}, {"provider": "@backup", "weight": 1}],
    }
    client = Portkey(api_key=gw.key, base_url=gw.v1, config=config)
    for _ in range(100):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    counts = answered_by(gw.upstream)
    assert abs(counts.count("@mock") - 50) <= 20 and len(counts) == 100  # sd 5: 4 sd of tolerance


def test_cache_hit_on_the_second_request_costs_0(gw):
    saved = services.config_create(
        workspace=gw.workspace, slug="cached", config={"provider": "@mock", "cache": {"mode": "simple"}}
    )
    client = Portkey(api_key=gw.key, base_url=gw.v1, config=saved.public_id)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    second = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert first.get_headers()["cache-status"] == "MISS"
    assert second.get_headers()["cache-status"] == "HIT"
    assert second.choices[0].message.content == first.choices[0].message.content
    miss, hit = gw.wait_for_logs(2)
    assert hit.cost == 0 and hit.cache_saved_cost == miss.cost > 0
