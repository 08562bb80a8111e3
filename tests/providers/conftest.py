"""A workspace with one provider of each kind, all pointing at the providers' mock upstream
(bench/mock_providers.py: real HTTP on loopback speaking Anthropic, Azure and Gemini), behind
the real gateway (tests/conftest.py ``gateway_url``)."""

from __future__ import annotations

import time

import httpx
import pytest

from analytics.models import RequestLog
from bench.mock_providers import MockProviders
from gateway.auth import key_cache, provider_cache
from tests.gateway.conftest import wait_for_the_log_buffer
from workspaces import services

SECRETS = {"claude": "sk-ant-stored", "azure": "azure-stored", "azure-fixed": "azure-stored", "gemini": "goog-stored"}


@pytest.fixture(scope="session")
def providers_mock():
    with MockProviders() as mock:
        yield mock


class ProvidersGateway:
    def __init__(self, url: str, key: str, workspace, mock: MockProviders) -> None:
        self.url = url
        self.v1 = url + "/v1"
        self.key = key
        self.workspace = workspace
        self.mock = mock

    def headers(self, provider: str, **extra: str) -> dict[str, str]:
        return {"x-portkey-api-key": self.key, "x-portkey-provider": f"@{provider}", **extra}

    def post(self, provider: str, path: str, body: dict, **extra: str) -> httpx.Response:
        return httpx.post(self.v1 + path, json=body, headers=self.headers(provider, **extra), timeout=10)

    def last_request(self) -> dict:
        return self.mock.requests[-1]

    def wait_for_logs(self, count: int, timeout: float = 10.0) -> list[RequestLog]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = list(RequestLog.objects.filter(workspace=self.workspace).order_by("created_at"))
            if len(logs) >= count:
                return logs
            time.sleep(0.05)
        raise AssertionError(f"expected {count} logs")


@pytest.fixture
def pgw(transactional_db, gateway_url, providers_mock):
    key_cache.clear()
    provider_cache.clear()
    providers_mock.clear()
    ws = services.workspace_create(slug="acme", name="Acme")
    _, full_key = services.api_key_create(workspace=ws, name="ci")
    for slug, kind, extra in (
        ("claude", "anthropic", {}),
        ("azure", "azure-openai", {"api_version": "2024-10-21"}),
        ("azure-fixed", "azure-openai", {"deployment": "gpt4o-prod"}),
        ("gemini", "google", {}),
    ):
        services.provider_create(
            workspace=ws,
            slug=slug,
            kind=kind,
            base_url=providers_mock.base_for(kind),
            api_key=SECRETS[slug],
            **extra,
        )
    yield ProvidersGateway(gateway_url, full_key, ws, providers_mock)
    wait_for_the_log_buffer()
