"""Celery tasks for the log pipeline: thin wrappers over analytics.pipeline, scheduled in
config/celery.py."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from analytics import pipeline


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
