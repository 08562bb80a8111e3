"""The SSRF guard's address rules: IPv6 forms that carry an internal IPv4 address are refused
like the IPv4 address itself, unless the operator allowed the network."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from django.core.exceptions import ValidationError
from yarl import URL

from workspaces import services
from workspaces.upstream import netguard
from workspaces.upstream.client import make_client

EMBEDDED_LOOPBACK = [
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:0:127.0.0.1",  # IPv4-translated (SIIT)
    "64:ff9b::7f00:1",  # NAT64, well-known prefix
    "64:ff9b:1::a00:1",  # NAT64, local-use prefix
    "2002:7f00:1::",  # 6to4
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254 (cloud metadata)
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "::ffff:a9fe:a9fe",  # mapped cloud metadata
    "::10.0.0.1",
]


@pytest.fixture
def nothing_allowed(settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = []


@pytest.mark.parametrize("address", EMBEDDED_LOOPBACK)
def test_embedded_ipv4_forms_of_internal_addresses_are_blocked(nothing_allowed, address):
    assert netguard.is_blocked(address)
    with pytest.raises(netguard.BlockedUpstreamError):
        netguard.check_url(f"http://[{address}]:8080/v1")


@pytest.mark.parametrize(
    "address", ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111", "8.8.8.8"]
)
def test_public_addresses_in_those_forms_are_not(nothing_allowed, address):
    assert not netguard.is_blocked(address)


def test_an_allowed_network_allows_its_embedded_forms(settings):
    settings.UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert not netguard.is_blocked("::ffff:127.0.0.1")
    assert not netguard.is_blocked("::127.0.0.1")
    assert netguard.is_blocked("::ffff:10.0.0.1")


def test_provider_base_urls_with_embedded_loopback_are_refused(workspace, nothing_allowed):
    with pytest.raises(ValidationError) as info:
        services.provider_create(workspace=workspace, slug="bad", base_url="http://[::127.0.0.1]:8080/v1")
    assert "base_url" in info.value.message_dict


def test_the_upstream_client_refuses_blocked_ip_literals_itself(nothing_allowed, upstream_client):
    # The gateway checks literals before calling; the client does not rely on it.
    async def scenario():
        connections = 0

        async def count(reader, writer):
            nonlocal connections
            connections += 1
            writer.close()

        server = await asyncio.start_server(count, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = make_client()
        try:
            for host in ("127.0.0.1", "[::ffff:127.0.0.1]"):
                with pytest.raises(netguard.BlockedUpstreamError):
                    await client.request(
                        "GET",
                        URL(f"http://{host}:{port}/v1/models"),
                        {},
                        None,
                        aiohttp.ClientTimeout(total=2),
                        base_path="/v1",
                    )
        finally:
            await client.close()
            server.close()
        return connections

    assert asyncio.run(scenario()) == 0


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1]]/v1", "http://h:99999/v1", "http://xn--/v1"])
def test_malformed_provider_base_urls_are_a_form_error_not_a_crash(workspace, url):
    with pytest.raises(ValidationError) as info:
        services.provider_create(workspace=workspace, slug="bad", base_url=url)
    assert "base_url" in info.value.message_dict
