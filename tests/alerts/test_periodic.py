"""The periodic path as deployed: Celery beat's tasks through a real Celery worker on Redis in
the Postgres + Redis pass (eager, in process, in the embedded pass), and the embedded
scheduler running the same jobs without Redis."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from analytics import tasks
from analytics.alerts.models import AlertDelivery
from config.scheduler import EmbeddedScheduler, beat_jobs
from tests.alerts.conftest import make_rule, write_logs

ALERT_JOBS = {"evaluate-alerts", "send-alert-deliveries"}


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@contextlib.contextmanager
def celery_worker():
    """A Celery worker thread consuming the Redis broker; nothing in embedded mode, where
    CELERY_TASK_ALWAYS_EAGER runs tasks in the caller."""
    if not settings.REDIS_URL:
        assert settings.CELERY_TASK_ALWAYS_EAGER
        yield
        return
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    app.control.purge()  # nothing left over from an earlier run
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield


@pytest.fixture
def breaching_rule(transactional_db, workspace, receiver):
    write_logs(workspace, {"created_at": timezone.now(), "cost": "3", "metadata": {"feature": "chat"}})
    rule, secret = make_rule(
        workspace, scope="metadata.feature=chat", window="5m", threshold="1", webhook_urls=[receiver.url]
    )
    rule.secret = secret
    return rule


def test_celery_tasks_evaluate_and_deliver(breaching_rule, receiver, settings):
    settings.ALERT_DELIVERY_BACKOFF_SECONDS = 0.01
    receiver.statuses.append(503)  # the first attempt fails; the retry task delivers it
    with celery_worker():
        tasks.evaluate_alerts.delay()
        wait_until(lambda: len(receiver.requests) == 1)
        wait_until(lambda: AlertDelivery.objects.filter(status="pending").exists())
        time.sleep(0.02)  # past the backoff
        tasks.send_alert_deliveries.delay()
        wait_until(lambda: len(receiver.requests) == 2)
    assert [r.status for r in receiver.requests] == [503, 200]
    assert all(r.signature_valid(breaching_rule.secret) for r in receiver.requests)
    assert receiver.requests[0].json["rule"]["name"] == breaching_rule.name


def test_the_embedded_scheduler_runs_the_alert_jobs(breaching_rule, receiver, tmp_path: Path):
    jobs = [job for job in beat_jobs() if job.name in ALERT_JOBS]
    assert {job.name for job in jobs} == ALERT_JOBS
    scheduler = EmbeddedScheduler(jobs, lock_path=tmp_path / "scheduler.lock", first_run_after_s=0).start()
    try:
        wait_until(lambda: len(receiver.requests) == 1)
    finally:
        scheduler.stop()
    assert scheduler.failures == dict.fromkeys(ALERT_JOBS, 0)
    assert receiver.requests[0].signature_valid(breaching_rule.secret)
