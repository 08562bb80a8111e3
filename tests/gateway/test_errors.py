"""Every gateway error is OpenAI-shaped; all but authentication failures are logged."""

from __future__ import annotations

import socket
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from gateway.auth import key_cache
from workspaces import services


def _error(resp: httpx.Response) -> dict:
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def test_it_rejects_a_missing_key(gw):
    resp = gw.post(headers={"x-portkey-provider": "@mock"})
    assert resp.status_code == 401
    assert "x-portkey-api-key" in _error(resp)["message"]


def test_it_rejects_an_unknown_key(gw):
    resp = gw.post(headers=gw.headers(x_portkey_api_key="pk-" + "x" * 48))
    assert resp.status_code == 401
    assert _error(resp)["type"] == "authentication_error"


def test_it_rejects_a_revoked_key_within_the_cache_ttl(gw, settings):
    assert gw.post().status_code == 200
    services.api_key_revoke(api_key=gw.api_key)
    key_cache.clear()  # equivalent to the TTL elapsing
    resp = gw.post()
    assert resp.status_code == 401
    assert "revoked" in _error(resp)["message"]


def test_it_rejects_an_expired_key(gw):
    _, full = services.api_key_create(
        workspace=gw.workspace, name="old", expires_at=timezone.now() - timedelta(seconds=1)
    )
    resp = gw.post(headers=gw.headers(x_portkey_api_key=full))
    assert resp.status_code == 401
    assert "expired" in _error(resp)["message"]


def test_auth_failures_are_not_logged(gw):
    gw.post(headers={"x-portkey-provider": "@mock"})
    gw.post(headers=gw.headers(x_portkey_api_key="pk-" + "y" * 48))
    gw.post()  # one good request, to know the pipeline ran
    assert len(gw.wait_for_logs(1)) == 1


def test_it_refuses_a_key_without_inference_scope(gw):
    _, full = services.api_key_create(workspace=gw.workspace, name="reader", scopes=["logs.read"])
    resp = gw.post(headers=gw.headers(x_portkey_api_key=full))
    assert resp.status_code == 403
    assert "inference" in _error(resp)["message"]
    [log] = gw.wait_for_logs(1)
    assert log.status_code == 403


def test_it_requires_a_provider(gw):
    resp = gw.post(headers={"x-portkey-api-key": gw.key})
    assert resp.status_code == 400
    assert _error(resp)["message"] == "Either x-portkey-config or x-portkey-provider header is required"


def test_it_rejects_an_unknown_provider_slug(gw, other_workspace):
    # A provider of another workspace is as unknown as one that does not exist.
    services.provider_create(workspace=other_workspace, slug="theirs", base_url="http://127.0.0.1:1/v1")
    for slug in ("@nope", "@theirs"):
        resp = gw.post(headers=gw.headers(x_portkey_provider=slug))
        assert resp.status_code == 400
        err = _error(resp)
        assert err["message"].startswith("Invalid provider passed") and err["param"] == "x-portkey-provider"
    assert len(gw.wait_for_logs(2)) == 2


def test_it_rejects_malformed_json(gw):
    resp = httpx.post(
        gw.v1 + "/chat/completions", content=b'{"model": ', headers={**gw.headers(), "content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert _error(resp)["code"] == "invalid_json"
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success) == (400, False)


def test_it_answers_502_when_the_upstream_is_unreachable(gw):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    services.provider_create(workspace=gw.workspace, slug="down", base_url=f"http://127.0.0.1:{dead_port}/v1")
    resp = gw.post(headers=gw.headers(x_portkey_provider="@down"))
    assert resp.status_code == 502
    assert _error(resp)["code"] == "upstream_unreachable"
    [log] = gw.wait_for_logs(1)
    assert log.status_code == 502


def test_it_answers_408_for_the_request_timeout_header(gw):
    resp = gw.post(headers=gw.headers(x_portkey_request_timeout="200", x_mock_hang="1"))
    assert resp.status_code == 408
    assert _error(resp)["code"] == "request_timeout"


def test_it_answers_504_when_the_upstream_is_too_slow(gw, settings):
    settings.GATEWAY_UPSTREAM_TIMEOUT = 0.2
    resp = gw.post(headers=gw.headers(x_mock_latency_ms="1000"))
    assert resp.status_code == 504
    [log] = gw.wait_for_logs(1)
    assert log.status_code == 504


@pytest.mark.parametrize("status", [429, 500, 404])
def test_it_passes_upstream_errors_through(gw, status):
    resp = gw.post(headers=gw.headers(x_mock_status=str(status)))
    assert resp.status_code == status
    assert "error" in resp.json()
    if status == 429:
        assert resp.headers["retry-after"] == "1"
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success) == (status, False)


def test_it_refuses_custom_hosts_unless_allowed(gw, upstream):
    headers = gw.headers(x_portkey_provider="openai", x_portkey_custom_host=upstream.base_url)
    headers["authorization"] = "Bearer sk-client-own"
    assert gw.post(headers=headers).status_code == 403
    services.workspace_update(workspace=gw.workspace, allow_custom_hosts=True)
    key_cache.clear()
    resp = gw.post(headers=headers)
    assert resp.status_code == 200
    assert upstream.requests[-1]["authorization"] == "Bearer sk-client-own"


def test_it_refuses_deeply_nested_json_with_a_400(gw):
    nested = b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    resp = httpx.post(
        gw.v1 + "/chat/completions", content=nested, headers={**gw.headers(), "content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert _error(resp)["code"] == "invalid_json"
    assert gw.post().status_code == 200  # and keeps serving


def test_it_refuses_bodies_over_the_limit(gw, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 2048
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 4096}]}
    resp = gw.post(json=body)
    assert resp.status_code == 413
    assert "larger than 2048" in _error(resp)["message"]
