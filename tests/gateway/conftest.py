"""A real gateway: uvicorn serving config.asgi on a loopback port, in front of the real mock
upstream (the session fixtures ``upstream``, ``log_consumer`` and ``gateway_url`` live in
tests/conftest.py, shared with tests/configs: one server per test run, since the ASGI app and
its pooled client belong to one event loop). Gateway tests use the transactional database so
the server thread sees the data."""

from __future__ import annotations

import time

import httpx
import pytest
from django.conf import settings

from analytics.models import RequestLog
from gateway.auth import key_cache, provider_cache
from gateway.logbuffer import get_log_buffer
from gateway.pricing import price_cache
from workspaces import services


@pytest.fixture
def gw(transactional_db, gateway_url, upstream):
    """A workspace with a key and an ``@mock`` provider; returns a small namespace."""
    key_cache.clear()
    provider_cache.clear()
    price_cache.clear()
    upstream.clear()
    ws = services.workspace_create(slug="acme", name="Acme")
    api_key, full_key = services.api_key_create(workspace=ws, name="ci")
    provider = services.provider_create(
        workspace=ws, slug="mock", base_url=upstream.base_url, api_key="sk-provider-secret"
    )
    yield Gateway(url=gateway_url, workspace=ws, api_key=api_key, key=full_key, provider=provider, upstream=upstream)
    wait_for_the_log_buffer()


def wait_for_the_log_buffer(timeout: float = 5.0) -> None:
    """Let the gateway's log buffer deliver what the test's requests emitted before the tables
    are flushed for the next test: until it is idle (nothing queued, no flush writing) twice in
    a row with no record emitted in between (a record is emitted just after its answer went
    out). With REDIS_URL the batch is then the stream consumer's to write: it gets a moment."""
    buffer = get_log_buffer()
    deadline = time.monotonic() + timeout
    emitted = None
    while time.monotonic() < deadline:
        if not buffer.idle:
            emitted = None
        elif buffer.stats["emitted"] == emitted:
            break
        else:
            emitted = buffer.stats["emitted"]
        time.sleep(0.02)
    if settings.REDIS_URL:
        time.sleep(0.1)


class Gateway:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"x-portkey-api-key": self.key, "x-portkey-provider": "@mock"}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        return headers

    def post(self, path: str = "/chat/completions", json: dict | None = None, headers: dict | None = None, **kw):
        body = json if json is not None else {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        return httpx.post(
            self.v1 + path, json=body, headers=headers if headers is not None else self.headers(), timeout=10, **kw
        )

    def wait_for_logs(self, count: int, timeout: float = 10.0) -> list[RequestLog]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = list(RequestLog.objects.filter(workspace=self.workspace).order_by("created_at"))
            if len(logs) >= count:
                return logs
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} logs, found {RequestLog.objects.filter(workspace=self.workspace).count()}"
        )
