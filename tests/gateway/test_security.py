"""SSRF guard, per-key rate and usage limits, header size limit."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from gateway.auth import key_cache, provider_cache
from workspaces import services


@pytest.fixture
def no_private_upstreams(settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = []
    key_cache.clear()
    provider_cache.clear()


def test_provider_base_urls_in_internal_networks_are_refused(workspace, settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = []
    for url in ("http://169.254.169.254/latest", "http://10.0.0.7/v1", "http://[::1]:8080/v1"):
        with pytest.raises(ValidationError) as info:
            services.provider_create(workspace=workspace, slug="bad", base_url=url)
        assert "base_url" in info.value.message_dict


def test_the_gateway_refuses_internal_upstreams_at_request_time(gw, no_private_upstreams):
    # The provider was saved while loopback was allowed; the guard still holds at call time,
    # for IP literals and for names resolving to loopback alike.
    for base in (gw.upstream.base_url, gw.upstream.base_url.replace("127.0.0.1", "localhost")):
        gw.provider.base_url = base
        gw.provider.save()
        provider_cache.clear()
        resp = gw.post()
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "upstream_blocked"
    assert gw.upstream.requests == []
    assert len(gw.wait_for_logs(2)) == 2


def test_custom_hosts_are_guarded_too(gw, no_private_upstreams):
    services.workspace_update(workspace=gw.workspace, allow_custom_hosts=True)
    key_cache.clear()
    headers = gw.headers(x_portkey_provider="openai", x_portkey_custom_host="http://169.254.169.254/v1")
    resp = gw.post(headers=headers)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "upstream_blocked"


def test_rate_limits_answer_429_and_are_logged(gw):
    services.api_key_update(api_key=gw.api_key, rate_limit_rpm=3)
    key_cache.clear()
    if time.time() % 60 > 55:  # fixed one-minute windows: do not straddle a boundary
        time.sleep(60 - time.time() % 60 + 0.1)
    statuses = [gw.post().status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    resp = gw.post()
    assert resp.status_code == 429 and 1 <= int(resp.headers["retry-after"]) <= 60
    assert resp.json()["error"]["code"] == "rate_limit_exceeded"
    logs = gw.wait_for_logs(6)
    assert [log.status_code for log in logs].count(429) == 3


def test_usage_limits_answer_412_once_spent(gw):
    services.api_key_update(api_key=gw.api_key, usage_limit_cost=Decimal("0.0001"), usage_limit_period="day")
    key_cache.clear()
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}  # ~0.00045 USD a call
    first = gw.post(json=body)
    assert first.status_code == 200  # nothing spent yet
    gw.wait_for_logs(1)
    second = gw.post(json=body)
    assert second.status_code == 412
    assert second.json()["error"]["code"] == "usage_limit_exceeded"
    assert gw.wait_for_logs(2)[1].status_code == 412


def test_oversized_headers_are_refused(gw, settings):
    settings.GATEWAY_MAX_HEADER_BYTES = 4096
    resp = gw.post(headers=gw.headers(x_padding="p" * 5000))
    assert resp.status_code == 431
    assert "headers" in resp.json()["error"]["message"]
    assert gw.post(headers=gw.headers(x_padding="p" * 1000)).status_code == 200
