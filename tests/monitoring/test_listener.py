"""METRICS_BIND: metrics scraped from an address of their own, served by one process per host
(analytics/metrics_listener.py), and /metrics on the main server answering 404."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from analytics.metrics_listener import LOCK_NAME, MetricsListener
from tests.envs import deployment_env
from tests.monitoring.conftest import TOKEN, value
from tests.monitoring.test_multiprocess import Child

ROOT = Path(__file__).resolve().parents[2]
CELERY = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info", "--concurrency", "2"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def scrape(port: int, **headers: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=5)
    except httpx.TransportError:
        return None


@pytest.fixture
def listeners(tmp_path):
    started: list[MetricsListener] = []

    def start(port: int) -> MetricsListener:
        listener = MetricsListener(("127.0.0.1", port), lock_path=tmp_path / LOCK_NAME, retry_s=0.1).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def test_one_listener_serves_and_another_takes_over(db, listeners):
    port = free_port()
    first, second = listeners(port), listeners(port)
    wait_until(lambda: first.serving or second.serving)
    time.sleep(0.3)  # the loser has retried a few times meanwhile
    assert [first.serving, second.serving].count(True) == 1
    response = scrape(port)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert value(response.content, "portico_database_up") == 1
    serving = first if first.serving else second
    serving.stop()  # its process exits: the lock goes with it
    other = second if serving is first else first
    wait_until(lambda: other.serving)
    assert wait_until(lambda: scrape(port)).status_code == 200


def test_it_asks_for_the_token_when_one_is_set_and_serves_only_metrics(db, listeners, settings):
    settings.METRICS_TOKEN = TOKEN
    port = free_port()
    listener = listeners(port)
    wait_until(lambda: listener.serving)
    assert scrape(port).status_code == 401
    assert scrape(port, authorization=f"Bearer {TOKEN}").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
    assert httpx.post(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 405


def test_the_main_servers_metrics_path_is_404_with_a_bind_address(client, settings):
    settings.DEBUG = True  # would open /metrics otherwise
    settings.METRICS_ENABLED = True
    settings.METRICS_BIND = ("127.0.0.1", 9464)
    response = client.get("/metrics")
    assert response.status_code == 404
    assert b"METRICS_BIND" in response.content


def test_uvicorn_workers_elect_one_listener_that_serves_every_process(tmp_path):
    """Two uvicorn workers: one binds METRICS_BIND; a real scrape there sees the values another
    process wrote to the shared directory; the main port's /metrics is a 404."""
    env = deployment_env("DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in env.items() if not k.startswith(("METRICS_", "PROMETHEUS_"))}
    metrics_port, port = free_port(), free_port()
    env.update(DEBUG="true", PORTICO_VAR_DIR=str(tmp_path), LOG_LEVEL="info", METRICS_BIND=f"127.0.0.1:{metrics_port}")
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port), "--workers", "2"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    writer = None
    try:
        wait_until(lambda: log.read_text().count("Application startup complete") == 2, timeout=60)
        writer = Child(tmp_path / "metrics", records=3, ending="wait")  # another process of the host
        response = wait_until(lambda: scrape(metrics_port))
        assert response.status_code == 200
        assert value(response.content, "portico_requests_total", environment="production") == 3
        assert value(response.content, "portico_database_up") == 1
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 404
        time.sleep(0.5)
        assert len(re.findall(r"Metrics listener on http://127\.0\.0\.1:\d+/metrics", log.read_text())) == 1
    finally:
        if writer is not None:
            writer.finish()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    text = log.read_text()
    assert text.count("Application shutdown complete") == 2, text
    assert "Traceback" not in text


def test_a_forked_child_lets_go_of_the_lock_and_the_socket(db, listeners):
    """A Celery pool process is forked from the worker that serves: it must not keep the port
    or the lock once the serving process stops."""
    port = free_port()
    first = listeners(port)
    wait_until(lambda: first.serving)
    child = os.fork()
    if child == 0:  # the pool process: outlives the listener, does nothing
        time.sleep(30)
        os._exit(0)
    try:
        first.stop()
        successor = listeners(port)
        wait_until(lambda: successor.serving, timeout=5)
        assert scrape(port).status_code == 200
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


@pytest.mark.redis
def test_a_celery_workers_main_process_serves_and_its_pool_keeps_nothing(tmp_path, settings):
    """A host running only Celery workers has its metrics served too; when the worker's main
    process dies, its pool processes hold neither the port nor the lock."""
    env = deployment_env("DATABASE_URL")
    env = {k: v for k, v in env.items() if not k.startswith(("METRICS_", "PROMETHEUS_"))}
    metrics_port = free_port()
    env.update(DEBUG="true", PORTICO_VAR_DIR=str(tmp_path), METRICS_BIND=f"127.0.0.1:{metrics_port}")
    env.update(REDIS_URL=settings.REDIS_URL, LOG_STREAM_KEY=f"portico:test-listener:{os.getpid()}")
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [*CELERY, "-Q", f"test-listener-{os.getpid()}", "--without-mingle", "--without-gossip"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        response = wait_until(lambda: scrape(metrics_port), timeout=60)
        assert response.status_code == 200
        assert value(response.content, "portico_redis_up") == 1
        assert log.read_text().count("Metrics listener on") == 1
        worker.kill()  # the main process only: its pool processes live on a while
        worker.wait(timeout=10)
        successor = MetricsListener(("127.0.0.1", metrics_port), lock_path=tmp_path / "metrics" / LOCK_NAME)
        try:
            successor.retry_s = 0.1
            successor.start()
            wait_until(lambda: successor.serving, timeout=5)
        finally:
            successor.stop()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
