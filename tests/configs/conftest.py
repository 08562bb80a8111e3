"""A real gateway (tests/conftest.py's session server) with three providers: ``@mock`` and
``@backup`` on the healthy mock upstream (told apart by their secrets) and ``@broken`` on a
second mock that answers 503 to everything."""

from __future__ import annotations

import pytest

from bench.mock_upstream import MockUpstream
from gateway.auth import config_cache, key_cache, provider_cache
from gateway.pricing import price_cache
from gateway.response_cache import response_cache
from tests.gateway.conftest import Gateway, wait_for_the_log_buffer
from workspaces import services

SECRETS = {"sk-mock": "@mock", "sk-backup": "@backup", "sk-broken": "@broken"}


@pytest.fixture(scope="session")
def broken():
    with MockUpstream(status=503) as mock:
        yield mock


@pytest.fixture
def gw(transactional_db, gateway_url, upstream, broken):
    for cache in (key_cache, provider_cache, config_cache, price_cache):
        cache.clear()
    response_cache.clear_local()
    upstream.clear()
    broken.clear()
    ws = services.workspace_create(slug="acme", name="Acme")
    api_key, full_key = services.api_key_create(workspace=ws, name="ci")
    provider = services.provider_create(workspace=ws, slug="mock", base_url=upstream.base_url, api_key="sk-mock")
    services.provider_create(workspace=ws, slug="backup", base_url=upstream.base_url, api_key="sk-backup")
    services.provider_create(workspace=ws, slug="broken", base_url=broken.base_url, api_key="sk-broken")
    gateway = Gateway(
        url=gateway_url,
        workspace=ws,
        api_key=api_key,
        key=full_key,
        provider=provider,
        upstream=upstream,
        broken=broken,
    )
    yield gateway
    wait_for_the_log_buffer()


def answered_by(upstream: MockUpstream) -> list[str]:
    """Which provider each request the healthy mock received came through."""
    return [SECRETS.get((r["authorization"] or "").removeprefix("Bearer "), "?") for r in upstream.requests]
