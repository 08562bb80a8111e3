"""Celery tasks for the log pipeline, retention, the metadata key registry and alerts: thin
wrappers over analytics.pipeline, analytics.retention, analytics.rollups and analytics.alerts,
scheduled in config/celery.py."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from analytics import pipeline, recompute, retention


@shared_task(ignore_result=True)
def consume_log_stream() -> int:
    """Write log batches from the Redis stream for up to ~5 s; return the records written."""
    if not settings.REDIS_URL:
        return 0  # embedded mode: the gateway writes to the database itself
    return pipeline.consume_log_stream()


@shared_task(ignore_result=True)
def replay_spool() -> int:
    """Write spooled log batches (Redis and database were both down at the gateway)."""
    return pipeline.replay_spool()


@shared_task(ignore_result=True)
def apply_retention() -> dict[str, int]:
    """Delete logs, bodies and rollups past their retention (drops whole partitions on Postgres)."""
    return retention.apply_retention()


@shared_task(ignore_result=True)
def maintain_partitions() -> int:
    """Create the log table's daily partitions ahead of time (Postgres); return how many were made."""
    return len(retention.maintain_partitions())


@shared_task(ignore_result=True)
def refresh_metadata_keys() -> int:
    """Recompute the metadata key registry from the rollups (corrects top values and retention drift)."""
    return recompute.refresh_metadata_keys()


@shared_task(ignore_result=True)
def evaluate_alerts() -> dict[str, int]:
    """Evaluate every enabled alert rule, then send the deliveries that are due."""
    from analytics.alerts import delivery, evaluation

    outcome = evaluation.evaluate_all()
    sent = delivery.send_due()
    return {"rules": outcome.rules, "fired": outcome.fired, "resolved": outcome.resolved, "sent": sent}


@shared_task(ignore_result=True)
def send_alert_deliveries() -> int:
    """Send alert deliveries that are due (first attempts and retries after their backoff)."""
    from analytics.alerts import delivery

    return delivery.send_due()
