"""Configs through a real gateway and mock upstreams: fallback, retries, loadbalance,
overrides, timeouts and streams, as the client and the log see them."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.configs.conftest import answered_by

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
FALLBACK = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@broken"}, {"provider": "@backup"}]}


def send(gw, config: dict | str, body: dict | None = None, **headers: str) -> httpx.Response:
    value = config if isinstance(config, str) else orjson.dumps(config).decode()
    sent = {
        "x-portkey-api-key": gw.key,
        "x-portkey-config": value,
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return httpx.post(gw.v1 + "/chat/completions", json=body or CHAT, headers=sent, timeout=30)


def test_it_falls_back_from_a_failing_target_to_a_healthy_one(gw):
    resp = send(gw, FALLBACK)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "This is a mock reply."
    assert resp.headers["x-portkey-provider"] == "@backup"
    assert resp.headers["x-portkey-last-used-option-index"] == "config.targets[1]"
    assert resp.headers["x-portkey-retry-attempt-count"] == "0"
    assert gw.broken.stats["requests"] == 1 and answered_by(gw.upstream) == ["@backup"]
    [log] = gw.wait_for_logs(1)  # one log per client request, not one per try
    assert (log.status_code, log.provider, log.config_id, log.retry_count) == (200, "@backup", "inline", 0)
    assert [(a["target"], a["provider"], a["status"]) for a in log.attempts] == [
        ("config.targets[0]", "@broken", 503),
        ("config.targets[1]", "@backup", 200),
    ]
    assert log.last_used_option_index == "config.targets[1]"
    assert log.total_tokens > 0 and log.cost is not None and log.cost > 0


def test_every_attempt_sends_the_same_request_and_the_log_has_its_metadata_once(gw):
    body = {**CHAT, "user": "alice"}
    metadata = '{"environment": "production", "feature": "chat"}'
    config = {**FALLBACK, "retry": {"attempts": 1, "on_status_codes": [503]}}
    resp = send(gw, config, body=body, x_portkey_metadata=metadata, x_mock_retry_after_ms="1")
    assert resp.status_code == 200 and resp.headers["x-portkey-last-used-option-index"] == "config.targets[1]"
    tries = [*gw.broken.requests, *gw.upstream.requests]
    assert len(tries) == 3  # @broken twice (one retry), then @backup
    first = tries[0]
    for other in tries[1:]:
        assert other["body"] == first["body"]
        assert {k: v for k, v in other["headers"].items() if k not in ("authorization", "host")} == {
            k: v for k, v in first["headers"].items() if k not in ("authorization", "host")
        }
    assert not any(name.startswith("x-portkey-") for name in first["headers"])
    [log] = gw.wait_for_logs(1)
    assert log.metadata == {"_user": "alice", "environment": "production", "feature": "chat"}
    assert [a["status"] for a in log.attempts] == [503, 503, 200] and log.retry_count == 0


def test_the_first_target_answering_means_no_fallback(gw):
    resp = send(gw, {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@mock"}, {"provider": "@backup"}]})
    assert resp.status_code == 200 and resp.headers["x-portkey-last-used-option-index"] == "config.targets[0]"
    assert answered_by(gw.upstream) == ["@mock"]


def test_fallback_only_on_the_listed_status_codes(gw):
    config = {**FALLBACK, "strategy": {"mode": "fallback", "on_status_codes": [429]}}
    resp = send(gw, config)
    assert resp.status_code == 503  # the provider's answer, as it came
    assert resp.json()["error"]["message"] == "Mock upstream error (status 503)"
    assert resp.headers["x-portkey-provider"] == "@broken" and gw.upstream.requests == []
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success, log.provider) == (503, False, "@broken")


def test_when_every_target_fails_the_last_answer_goes_to_the_client(gw):
    resp = send(gw, {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@broken"}, {"provider": "@broken"}]})
    assert resp.status_code == 503 and resp.headers["x-portkey-last-used-option-index"] == "config.targets[1]"
    assert gw.broken.stats["requests"] == 2
    [log] = gw.wait_for_logs(1)
    assert [a["status"] for a in log.attempts] == [503, 503]


def test_retry_honours_retry_after_ms(gw):
    config = {"provider": "@mock", "retry": {"attempts": 3}}
    started = time.monotonic()
    resp = send(
        gw, config, x_mock_status="429", x_mock_fail_first="2", x_mock_retry_after_ms="300", x_mock_retry_after="30"
    )
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert resp.headers["x-portkey-retry-attempt-count"] == "2"
    # Two waits of 300 ms as asked (retry-after-ms wins over retry-after), not the 30 s, not backoff.
    assert 0.6 <= elapsed < 5
    assert len(gw.upstream.requests) == 3
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.retry_count) == (200, 2)
    assert [a["status"] for a in log.attempts] == [429, 429, 200]


def test_retry_after_longer_than_the_wait_budget_is_answered_not_waited(gw):
    started = time.monotonic()
    resp = send(gw, {"provider": "@mock", "retry": {"attempts": 2}}, x_mock_status="429", x_mock_retry_after="120")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "120"
    assert time.monotonic() - started < 2 and len(gw.upstream.requests) == 1
    assert resp.headers["x-portkey-retry-attempt-count"] == "0"


def test_retry_backs_off_exponentially_without_retry_after(gw):
    config = {"provider": "@mock", "retry": {"attempts": 2, "on_status_codes": [500]}}
    started = time.monotonic()
    resp = send(gw, config, x_mock_status="500", x_mock_fail_first="2")
    assert resp.status_code == 200 and resp.headers["x-portkey-retry-attempt-count"] == "2"
    assert 0.75 <= time.monotonic() - started < 5  # 0.25 s then 0.5 s


def test_statuses_outside_on_status_codes_are_not_retried(gw):
    resp = send(gw, {"provider": "@mock", "retry": {"attempts": 3}}, x_mock_status="400")
    assert resp.status_code == 400 and len(gw.upstream.requests) == 1


def test_retries_then_fallback(gw):
    config = {"retry": {"attempts": 1, "on_status_codes": [503]}, **FALLBACK}
    resp = send(gw, config)
    assert resp.status_code == 200 and resp.headers["x-portkey-provider"] == "@backup"
    assert gw.broken.stats["requests"] == 2  # first try + one retry, then the fallback


def test_loadbalance_follows_the_weights(gw):
    config = {
        "strategy": {"mode": "loadbalance"},
        "targets": [{"provider": "@mock", "weight": 3}, {"provider": "@backup", "weight": 1}],
    }
    n = 200
    with httpx.Client(timeout=30) as client:
        for _ in range(n):
            headers = {"x-portkey-api-key": gw.key, "x-portkey-config": orjson.dumps(config).decode()}
            assert client.post(gw.v1 + "/chat/completions", json=CHAT, headers=headers).status_code == 200
    counts = answered_by(gw.upstream)
    # Expected 150 / 50; the standard deviation is ~6, so +-30 fails one run in millions.
    assert abs(counts.count("@mock") - 150) <= 30 and counts.count("@mock") + counts.count("@backup") == n


def test_override_params_are_merged_into_the_body(gw):
    config = {
        "strategy": {"mode": "fallback"},
        "targets": [{"provider": "@broken"}, {"provider": "@backup", "override_params": {"model": "gpt-4o"}}],
    }
    resp = send(gw, config)
    assert resp.json()["model"] == "gpt-4o"
    assert orjson.loads(gw.upstream.requests[-1]["body"])["model"] == "gpt-4o"
    assert orjson.loads(gw.broken.requests[-1]["body"])["model"] == "gpt-4o-mini"
    [log] = gw.wait_for_logs(1)
    assert log.model == "gpt-4o"


def test_request_timeout_per_target_then_fallback(gw):
    config = {
        "strategy": {"mode": "fallback"},
        "targets": [{"provider": "@mock", "request_timeout": 200}, {"provider": "@backup"}],
    }
    # The header reaches both targets: only @mock's 200 ms timeout cuts the 500 ms answer.
    started = time.monotonic()
    resp = send(gw, config, x_mock_latency_ms="500")
    assert resp.status_code == 200 and resp.headers["x-portkey-provider"] == "@backup"
    assert time.monotonic() - started < 3
    [log] = gw.wait_for_logs(1)
    assert [(a["provider"], a["status"]) for a in log.attempts] == [("@mock", 408), ("@backup", 200)]


def test_a_timeout_on_the_last_target_is_a_408(gw):
    resp = send(gw, {"provider": "@mock", "request_timeout": 100}, x_mock_latency_ms="400")
    assert resp.status_code == 408 and resp.json()["error"]["code"] == "request_timeout"


def test_streams_fall_back_before_the_first_byte(gw):
    with httpx.stream(
        "POST",
        gw.v1 + "/chat/completions",
        json={**CHAT, "stream": True},
        headers={"x-portkey-api-key": gw.key, "x-portkey-config": orjson.dumps(FALLBACK).decode()},
        timeout=30,
    ) as resp:
        body = resp.read()
    assert resp.status_code == 200 and resp.headers["x-portkey-provider"] == "@backup"
    assert body.endswith(b"data: [DONE]\n\n") and b'"usage":{' not in body  # usage asked for us stays hidden
    [log] = gw.wait_for_logs(1)
    assert (log.is_stream, log.provider, log.status_code) == (True, "@backup", 200)
    assert log.completion_tokens > 0


def test_a_stream_broken_after_the_first_byte_is_not_replayed_elsewhere(gw):
    config = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@mock"}, {"provider": "@backup"}]}
    with httpx.stream(
        "POST",
        gw.v1 + "/chat/completions",
        json={**CHAT, "stream": True},
        headers={
            "x-portkey-api-key": gw.key,
            "x-portkey-config": orjson.dumps(config).decode(),
            "x-mock-reset-after": "2",
        },
        timeout=30,
    ) as resp:
        body = resp.read()
    # The client got the first events and then the end of a broken stream (no [DONE]).
    assert resp.status_code == 200 and resp.headers["x-portkey-provider"] == "@mock"
    assert body.startswith(b"data: ") and b"[DONE]" not in body
    assert answered_by(gw.upstream) == ["@mock"]  # @backup was never asked
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.provider) == (502, "@mock")


def test_a_config_without_provider_uses_x_portkey_provider(gw):
    resp = send(gw, {"retry": {"attempts": 1}}, x_portkey_provider="@backup")
    assert resp.status_code == 200 and answered_by(gw.upstream) == ["@backup"]
    assert resp.headers["x-portkey-last-used-option-index"] == "config"


@pytest.mark.parametrize(
    ("value", "param", "words"),
    [
        ('{"retry": }', "x-portkey-config", "not valid JSON"),
        ("pc-doesnotexist", "x-portkey-config", "neither a JSON config nor the id or slug"),
        ('{"cache": {"mode": "semantic"}}', "x-portkey-config.cache.mode", "semantic"),
        ('{"provider": "@mock", "input_guardrails": ["pg-1"]}', "x-portkey-config.input_guardrails", "guardrails"),
        (
            '{"strategy": {"mode": "conditional"}, "targets": [{"provider": "@mock"}]}',
            "x-portkey-config.strategy.mode",
            "conditional routing",
        ),
        ('{"provider": "@nowhere"}', "x-portkey-config", "Invalid provider passed"),
        ("{}", "x-portkey-config", "names no provider"),
    ],
)
def test_bad_configs_are_a_400_naming_the_field(gw, value, param, words):
    resp = send(gw, value)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == param and words in error["message"] and error["type"] == "invalid_request_error"
    assert gw.upstream.requests == []
    [log] = gw.wait_for_logs(1)  # refused requests are logged like any other 400
    assert log.status_code == 400
