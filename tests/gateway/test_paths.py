"""Request paths that leave ``/v1/`` once percent-encoding and dot segments are resolved would
carry the provider's secret to another path of its host: refused with a 400, and the upstream
client refuses such a URL on its own as well."""

from __future__ import annotations

import asyncio
import http.client
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from yarl import URL

from gateway.auth import provider_cache
from workspaces.upstream import netguard
from workspaces.upstream.client import make_client

ESCAPES = [
    "/v1/../_mock/stats",
    "/v1/%2e%2e/_mock/stats",
    "/v1/%2E%2E/_mock/stats",
    "/v1/..%2f_mock/stats",
    "/v1/%2E%2E%2F_mock/stats",
    "/v1/%252e%252e/_mock/stats",
    "/v1/chat/../../_mock/stats",
    "/v1/./../_mock/stats",
    "/v1/..\\_mock/stats",
    "/v1/%2e%2e%5c_mock/stats",
    "/v1/chat\\..\\..\\_mock/stats",
]


def raw_request(
    gw, path: str, method: str = "POST", headers: dict[str, str] | None = None, body: bytes = b"{}"
) -> tuple[int, bytes]:
    """Send ``path`` byte for byte (httpx and browsers resolve dot segments before sending)."""
    parts = urlsplit(gw.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or gw.headers())})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_leaving_v1_are_refused_before_the_upstream(gw, path):
    status, body = raw_request(gw, path, method="GET")  # the mock's stats page answers GET
    assert status == 400, body
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_path" and "/v1/" in error["message"]
    assert b"open_streams" not in body  # the mock's stats page never answered
    assert gw.upstream.stats["requests"] == 0


def test_a_provider_base_path_cannot_be_left_for_a_sibling(gw):
    # With a base of /v1/tenant-a, "/v1/../chat/completions" would reach /v1/chat/completions of
    # the upstream (a path the mock records) with tenant-a's secret attached.
    gw.provider.base_url = gw.upstream.url + "/v1/tenant-a"
    gw.provider.save()
    provider_cache.clear()
    for path in ("/v1/../chat/completions", "/v1/%2e%2e/chat/completions", "/v1/..%2Fchat/completions"):
        status, body = raw_request(gw, path)
        assert status == 400, body
    assert gw.upstream.requests == []
    status, _ = raw_request(gw, "/v1/chat/completions")
    assert status == 200
    assert [r["path"] for r in gw.upstream.requests] == ["/v1/tenant-a/chat/completions"]


def test_dot_segments_that_stay_inside_v1_are_forwarded_resolved(gw):
    status, body = raw_request(gw, "/v1/files/../models")
    assert status == 200, body
    assert [r["path"] for r in gw.upstream.requests] == ["/v1/models"]


def test_the_upstream_client_refuses_a_url_outside_the_base_path(upstream, upstream_client):
    async def scenario():
        client = make_client()
        try:
            for url in (upstream.url + "/v1/../_mock/stats", upstream.url + "/v1/%2e%2e/_mock/stats"):
                with pytest.raises(netguard.PathOutsideBaseError):
                    await client.request("GET", URL(url), {}, None, aiohttp.ClientTimeout(total=5), base_path="/v1")
            resp = await client.request(
                "GET", URL(upstream.url + "/v1/models"), {}, None, aiohttp.ClientTimeout(total=5), base_path="/v1"
            )
            await resp.read()
            resp.release()
        finally:
            await client.close()

    upstream.clear()
    asyncio.run(scenario())
    assert upstream.stats["requests"] == 1  # only the call inside /v1
