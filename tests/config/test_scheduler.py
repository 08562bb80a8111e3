"""Embedded mode's in-process scheduler (config/scheduler.py): Celery beat's jobs run in the
server process when there is no Redis, once per deployment however many workers serve."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from analytics import pipeline
from analytics.ingest import write_log_batch
from analytics.models import RequestLog
from config.scheduler import EmbeddedScheduler, Job, beat_jobs, start_embedded_scheduler
from tests.analytics.records import log_record
from tests.envs import deployment_env

BASE_DIR = Path(__file__).resolve().parents[2]


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def fast(jobs: list[Job], interval_s: float = 0.2) -> list[Job]:
    for job in jobs:
        job.interval_s = interval_s
    return jobs


def test_it_runs_celery_beats_jobs(transactional_db, workspace, settings, tmp_path):
    settings.LOG_SPOOL_DIR = tmp_path / "spool"
    workspace.log_retention_days = 7
    workspace.save()
    old = log_record(workspace, created_at=(timezone.now() - timedelta(days=8)).isoformat())
    write_log_batch([old])
    spooled = log_record(workspace)
    pipeline.spool_append([spooled])

    jobs = fast(beat_jobs())
    assert {job.name for job in jobs} == {
        "replay-log-spool",
        "apply-retention",
        "refresh-metadata-keys",
        "maintain-log-partitions",
        "evaluate-alerts",
        "send-alert-deliveries",
    }
    scheduler = EmbeddedScheduler(jobs, lock_path=tmp_path / "scheduler.lock", first_run_after_s=0).start()
    try:
        # Retention removed the week-old log; the spooled batch was replayed into the database.
        wait_until(lambda: {str(i) for i in RequestLog.objects.values_list("id", flat=True)} == {spooled["id"]})
        wait_until(lambda: min(scheduler.runs.values()) >= 2)  # every job, again on its interval
    finally:
        scheduler.stop()
    assert scheduler.failures == dict.fromkeys(scheduler.runs, 0)
    assert not list(settings.LOG_SPOOL_DIR.iterdir())


def test_a_failing_job_is_logged_and_the_others_keep_running(tmp_path, caplog):
    done = []

    def broken():
        raise RuntimeError("disk full")

    jobs = [Job("broken", broken, 0.05), Job("counter", lambda: done.append(1), 0.05)]
    scheduler = EmbeddedScheduler(jobs, lock_path=tmp_path / "scheduler.lock", first_run_after_s=0)
    with caplog.at_level(logging.ERROR, logger="config.scheduler"):
        scheduler.start()
        wait_until(lambda: scheduler.failures["broken"] >= 3 and len(done) >= 3)
        scheduler.stop()
    assert "Periodic job broken failed" in caplog.text
    assert "RuntimeError: disk full" in caplog.text


def test_one_process_of_a_deployment_runs_the_jobs_and_another_takes_over(tmp_path):
    lock = tmp_path / "scheduler.lock"
    first = EmbeddedScheduler([Job("a", lambda: None, 0.05)], lock_path=lock, first_run_after_s=0, lock_retry_s=0.05)
    second = EmbeddedScheduler([Job("b", lambda: None, 0.05)], lock_path=lock, first_run_after_s=0, lock_retry_s=0.05)
    first.start()
    wait_until(lambda: first.runs["a"] >= 1)
    second.start()
    time.sleep(0.3)
    assert second.runs["b"] == 0 and not second.owns_lock
    first.stop()  # a stopped (or killed) holder releases the lock
    wait_until(lambda: second.runs["b"] >= 1)
    second.stop()
    assert not first.owns_lock and not second.owns_lock


def test_it_does_not_start_when_redis_is_configured(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.EMBEDDED_SCHEDULER = True
    settings.REDIS_URL = "redis://127.0.0.1:6379/7"
    assert start_embedded_scheduler() is None
    settings.REDIS_URL = ""
    scheduler = start_embedded_scheduler()
    assert scheduler is not None
    scheduler.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_runs_one_scheduler_and_stops_it_cleanly(tmp_path, workers):
    """uvicorn in embedded mode: every worker starts a scheduler thread, one runs the jobs, and
    a SIGTERM shuts the server down without an error."""
    env = deployment_env("DATABASE_URL", "REDIS_URL")
    env.update(DEBUG="true", PORTICO_VAR_DIR=str(tmp_path), LOG_LEVEL="info")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: log.read_text().count("Application startup complete") == workers, timeout=60)
            time.sleep(1.0)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    text = log.read_text()
    assert text.count("Embedded scheduler running") == 1, text
    assert text.count("Application shutdown complete") == workers, text
    assert "Traceback" not in text
