"""Celery app. Periodic tasks are declared here, in one place, each with an expiry so a
backlog never piles up duplicates."""

import os
import time

from celery import Celery, signals
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("portico")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class HeartbeatScheduler(PersistentScheduler):
    """Celery beat's scheduler, touching ``BEAT_HEARTBEAT_FILE`` at most every few seconds so a
    healthcheck can tell a live beat from a hung one (docker-compose.yml)."""

    heartbeat_every_s = 5.0
    _last_beat = 0.0

    def tick(self, *args, **kwargs):
        if time.monotonic() - self._last_beat >= self.heartbeat_every_s:
            from django.conf import settings

            settings.BEAT_HEARTBEAT_FILE.parent.mkdir(parents=True, exist_ok=True)
            settings.BEAT_HEARTBEAT_FILE.touch()
            self._last_beat = time.monotonic()
        return super().tick(*args, **kwargs)


app.conf.beat_scheduler = "config.celery:HeartbeatScheduler"


@signals.worker_ready.connect
def _metrics_listener(**kwargs) -> None:
    # A worker's main process is a candidate for METRICS_BIND's listener too (its pool children
    # close what they inherit of it): a host running only workers still has its metrics served.
    from analytics.metrics_listener import start_metrics_listener

    start_metrics_listener()


@signals.worker_ready.connect
def _start_log_consumers(sender=None, **kwargs) -> None:
    # Beat sends consume_log_stream once a second, so a fresh worker's pool processes would
    # start reading the log stream one by one, a second apart (a backlog waits on one writer
    # meanwhile): one run per pool process now, and beat's keep them going.
    from django.conf import settings

    if not settings.REDIS_URL:
        return
    from analytics.tasks import consume_log_stream

    concurrency = getattr(getattr(sender, "controller", None), "concurrency", None) or 1
    for _ in range(concurrency):
        consume_log_stream.apply_async(expires=5)


app.conf.beat_schedule = {
    # Log stream -> database. Each run reads for up to ~5 s; expiry drops runs that queued
    # behind a backlog instead of stacking them.
    "consume-log-stream": {
        "task": "analytics.tasks.consume_log_stream",
        "schedule": 1.0,
        "options": {"expires": 5},
    },
    # Batches the gateway spooled while Redis and the database were both unreachable.
    "replay-log-spool": {
        "task": "analytics.tasks.replay_spool",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    # Logs, bodies and rollups past their retention (whole daily partitions on Postgres).
    "apply-retention": {
        "task": "analytics.tasks.apply_retention",
        "schedule": 3600.0,
        "options": {"expires": 3000},
    },
    # Metadata key registry recomputed from the rollups (top values, retention drift).
    "refresh-metadata-keys": {
        "task": "analytics.tasks.refresh_metadata_keys",
        "schedule": 300.0,
        "options": {"expires": 240},
    },
    # Alert rules checked against the rollups (analytics.alerts.evaluation), then due deliveries sent.
    "evaluate-alerts": {
        "task": "analytics.tasks.evaluate_alerts",
        "schedule": 60.0,
        "options": {"expires": 50},
    },
    # Alert delivery retries whose backoff has passed (analytics.alerts.delivery).
    "send-alert-deliveries": {
        "task": "analytics.tasks.send_alert_deliveries",
        "schedule": 10.0,
        "options": {"expires": 9},
    },
    # Daily log partitions created a week ahead (Postgres; a no-op on SQLite).
    "maintain-log-partitions": {
        "task": "analytics.tasks.maintain_partitions",
        "schedule": 86400.0,
        "options": {"expires": 3600},
    },
}
