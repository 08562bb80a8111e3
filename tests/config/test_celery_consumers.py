"""A Celery worker starts one log-stream consumer per pool process as soon as it is ready,
rather than waiting for beat to send them a second apart."""

from __future__ import annotations

from types import SimpleNamespace

from analytics import tasks
from config.celery import _start_log_consumers


def sent_runs(monkeypatch) -> list[dict]:
    sent: list[dict] = []
    monkeypatch.setattr(tasks.consume_log_stream, "apply_async", lambda **options: sent.append(options))
    return sent


def test_a_ready_worker_starts_one_consumer_per_pool_process(monkeypatch, settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    sent = sent_runs(monkeypatch)

    _start_log_consumers(sender=SimpleNamespace(controller=SimpleNamespace(concurrency=3)))

    assert sent == [{"expires": 5}] * 3


def test_it_starts_none_in_embedded_mode(monkeypatch, settings):
    settings.REDIS_URL = None
    sent = sent_runs(monkeypatch)

    _start_log_consumers(sender=SimpleNamespace(controller=SimpleNamespace(concurrency=2)))

    assert sent == []
