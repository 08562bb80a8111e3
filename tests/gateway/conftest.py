"""A real gateway: uvicorn serving config.asgi on a loopback port, in front of the real mock
upstream. Gateway tests use the transactional database so the server thread sees the data."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from django.conf import settings
from django.db import connections
from django.db.backends.signals import connection_created

from analytics.models import RequestLog
from bench.mock_upstream import MockUpstream
from gateway.auth import key_cache, provider_cache
from gateway.logbuffer import get_log_buffer
from gateway.pricing import price_cache
from workspaces import services


@pytest.fixture(scope="session")
def upstream():
    with MockUpstream() as mock:
        yield mock


@pytest.fixture(scope="session")
def log_consumer():
    """With REDIS_URL the gateway hands logs to a Redis stream; this thread plays the Celery
    worker, running the same consumer the ``consume_log_stream`` task runs."""
    if not settings.REDIS_URL:
        yield None
        return
    from analytics import pipeline

    stop = threading.Event()
    # Fixed at start, like the gateway's buffer: a test that points settings.LOG_STREAM_KEY at a
    # stream of its own (test_logbuffer's `stream`) must not have this thread drain it (it did,
    # and dropped the records as orphans: the test's workspace is not committed).
    stream_key, name = settings.LOG_STREAM_KEY, f"{pipeline.consumer_name()}-test-consumer"

    def yield_to_the_flush(sender, connection, **kwargs):
        # Between transactional tests the database is flushed (one TRUNCATE of every table)
        # while this thread may be writing a batch; the two lock tables in opposite orders. With
        # a shorter deadlock_timeout this thread notices first and is the one rolled back (its
        # entries stay pending and are written later), never the test's flush.
        if threading.current_thread().name == "test-log-consumer" and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET deadlock_timeout = '100ms'")

    connection_created.connect(yield_to_the_flush, weak=False)

    def loop():
        while not stop.is_set():
            try:
                pipeline.consume_log_stream(
                    stream_key=stream_key, consumer=name, max_seconds=0.5, block_ms=50, min_idle_ms=2_000
                )
            except Exception:  # between tests the database is blocked; try again shortly
                time.sleep(0.05)
        connections.close_all()

    thread = threading.Thread(target=loop, name="test-log-consumer", daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join(timeout=10)
    connection_created.disconnect(yield_to_the_flush)
    pipeline.redis_client().delete(stream_key)


@pytest.fixture(scope="session")
def gateway_url(log_consumer):
    from config.asgi import application

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(application, lifespan="on", log_level="warning", loop="asyncio", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "gateway server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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
    # Let the log buffer drain before the tables are flushed for the next test.
    buffer = get_log_buffer()
    deadline = time.monotonic() + 5
    while buffer.stats["pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
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
