"""cache: {"mode": "simple"}: exact-match answers per workspace and target, truthful
x-portkey-cache-status, cost 0 on a hit with the saving logged. Runs on Redis in the
Postgres+Redis pass and on the in-process LRU in the embedded pass."""

from __future__ import annotations

import httpx
import orjson

from workspaces import services

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "cache me"}]}
CACHED = {"provider": "@mock", "cache": {"mode": "simple", "max_age": 60}}


def send(gw, config: dict, body: dict | None = None, key: str | None = None, **headers: str) -> httpx.Response:
    sent = {
        "x-portkey-api-key": key or gw.key,
        "x-portkey-config": orjson.dumps(config).decode(),
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return httpx.post(gw.v1 + "/chat/completions", json=body or CHAT, headers=sent, timeout=30)


def test_the_second_identical_request_is_a_hit_logged_at_cost_0(gw):
    first = send(gw, CACHED)
    second = send(gw, CACHED)
    assert first.headers["x-portkey-cache-status"] == "MISS"
    assert second.headers["x-portkey-cache-status"] == "HIT"
    assert second.json() == first.json() and second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["x-portkey-provider"] == "@mock"
    assert len(gw.upstream.requests) == 1
    miss, hit = gw.wait_for_logs(2)
    assert (miss.cache_status, hit.cache_status) == ("MISS", "HIT")
    assert miss.cost > 0 and miss.cache_saved_cost is None
    assert hit.cost == 0 and hit.cache_saved_cost == miss.cost
    assert hit.total_tokens == miss.total_tokens  # the answer's usage, as the client saw it
    assert hit.attempts == [
        {"target": "config", "provider": "@mock", "status": 200, "ms": hit.attempts[0]["ms"], "cache": "HIT"}
    ]


def test_a_different_body_is_a_miss(gw):
    send(gw, CACHED)
    other = send(gw, CACHED, body={**CHAT, "temperature": 0.5})
    assert other.headers["x-portkey-cache-status"] == "MISS" and len(gw.upstream.requests) == 2


def test_without_cache_the_status_is_disabled(gw):
    resp = send(gw, {"provider": "@mock"})
    assert resp.headers["x-portkey-cache-status"] == "DISABLED"
    plain = httpx.post(gw.v1 + "/chat/completions", json=CHAT, headers=gw.headers(), timeout=30)
    assert plain.headers["x-portkey-cache-status"] == "DISABLED"


def test_errors_are_not_cached(gw):
    assert send(gw, CACHED, x_mock_status="500").status_code == 500
    again = send(gw, CACHED)
    assert again.status_code == 200 and again.headers["x-portkey-cache-status"] == "MISS"


def test_streams_are_not_cached(gw):
    for _ in range(2):
        resp = send(gw, CACHED, body={**CHAT, "stream": True})
        assert resp.status_code == 200 and resp.headers["x-portkey-cache-status"] == "DISABLED"
    assert len(gw.upstream.requests) == 2


def test_workspaces_and_targets_do_not_share_entries(gw):
    send(gw, CACHED)
    assert send(gw, {**CACHED, "provider": "@backup"}).headers["x-portkey-cache-status"] == "MISS"
    other = services.workspace_create(slug="other", name="Other")
    services.provider_create(workspace=other, slug="mock", base_url=gw.upstream.base_url, api_key="sk-mock")
    _, other_key = services.api_key_create(workspace=other, name="ci")
    assert send(gw, CACHED, key=other_key).headers["x-portkey-cache-status"] == "MISS"


def test_force_refresh_skips_the_lookup_and_refreshes(gw):
    send(gw, CACHED)
    refreshed = send(gw, CACHED, x_portkey_cache_force_refresh="true")
    assert refreshed.headers["x-portkey-cache-status"] == "REFRESH" and len(gw.upstream.requests) == 2
    assert send(gw, CACHED).headers["x-portkey-cache-status"] == "HIT"


def test_a_fallback_target_answers_from_its_own_cache(gw):
    config = {
        "cache": {"mode": "simple"},
        "strategy": {"mode": "fallback"},
        "targets": [{"provider": "@broken"}, {"provider": "@backup"}],
    }
    send(gw, config)
    again = send(gw, config)
    assert again.headers["x-portkey-cache-status"] == "HIT"
    assert again.headers["x-portkey-last-used-option-index"] == "config.targets[1]"
    assert gw.broken.stats["requests"] == 2 and len(gw.upstream.requests) == 1
