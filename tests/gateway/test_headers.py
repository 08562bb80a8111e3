"""Header values the gateway turns into numbers or URLs: anything unusable is a 400 naming the
header, never a 500 and never a call upstream."""

from __future__ import annotations

import pytest

from gateway.auth import key_cache
from workspaces import services


def assert_refused(resp, param: str) -> dict:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and param in error["message"]
    return error


@pytest.mark.parametrize("value", ["²", "¹0", "0", "-5", "1.5", "1e3", "5" * 5000, "9" * 20, "ten"])
def test_unusable_request_timeouts_are_a_400_naming_the_header(gw, value):
    # Sent as latin-1 bytes, which is how the gateway reads header values ("²".isdigit() is True).
    resp = gw.post(headers={**gw.headers(), "x-portkey-request-timeout": value.encode("latin-1")})
    assert_refused(resp, "x-portkey-request-timeout")
    assert gw.upstream.requests == []


def test_a_usable_request_timeout_is_kept(gw):
    assert gw.post(headers=gw.headers(x_portkey_request_timeout="5000")).status_code == 200


@pytest.fixture
def custom_hosts(gw):
    services.workspace_update(workspace=gw.workspace, allow_custom_hosts=True)
    key_cache.clear()
    return gw


MALFORMED_HOSTS = [
    "http://[::1",
    "http://[::1]]/v1",
    "http://127.0.0.1:99999/v1",
    "http://127.0.0.1:-1/v1",
    "http://127.0.0.1:0/v1",
    "http://127.0.0.1:port/v1",
    "http://xn--/v1",
    "http://xn--a/v1",
    "http://a..b/v1",
    "http://.example.com/v1",
    "http://" + "a" * 300 + ".example.com/v1",
    "http://" + ".".join(["abcdefghij"] * 30) + "/v1",
    "ftp://example.com/v1",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "example.com/v1",
    "http:///v1",
    "http://",
    "http://user:pw@example.com/v1",
    "http://user@example.com/v1",
    "http://exa mple.com/v1",
    "http://example.com/v1?x=1",
    "http://example.com/v1#frag",
    "http://example.com/v1/../admin",
    "http://exa_mple!.com/v1",
]


@pytest.mark.parametrize("host", MALFORMED_HOSTS)
def test_malformed_custom_hosts_are_a_400_naming_the_header(custom_hosts, host):
    headers = custom_hosts.headers(x_portkey_provider="openai", x_portkey_custom_host=host)
    assert_refused(custom_hosts.post(headers=headers), "x-portkey-custom-host")


def test_a_well_formed_custom_host_still_works(custom_hosts):
    headers = custom_hosts.headers(
        x_portkey_provider="openai", x_portkey_custom_host=custom_hosts.upstream.base_url + "/"
    )
    assert custom_hosts.post(headers=headers).status_code == 200
    assert [r["path"] for r in custom_hosts.upstream.requests] == ["/v1/chat/completions"]
