"""Pipeline health on /metrics: the writer's counters, and the gauges read at scrape time (spool,
Redis stream, database), which never fail a scrape when a service is down."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics import ingest, pipeline
from tests.analytics.records import log_record
from tests.monitoring.conftest import TOKEN, scrape, value


@pytest.mark.django_db
def test_the_writer_counts_batches_and_records(metrics_on, workspace):
    before = scrape()
    records = [log_record(workspace, created_at=(timezone.now() - timedelta(seconds=3)).isoformat()) for _ in range(4)]
    ingest.write_log_batch(records)
    ingest.write_log_batch(records[:2])  # redelivered: duplicates
    after = scrape()

    def grew(name, **labels):
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert grew("portico_log_writer_batches_total") == 2
    assert grew("portico_log_writer_records_total", result="inserted") == 4
    assert grew("portico_log_writer_records_total", result="duplicate") == 2
    assert grew("portico_log_write_delay_seconds_count") == 2
    # Both batches' oldest log was made at least 3 s before its commit.
    assert grew("portico_log_write_delay_seconds_bucket", le="2.5") == 0


@pytest.mark.django_db
def test_spool_files_show_with_their_size_and_age(metrics_on, tmp_path):
    metrics_on.LOG_SPOOL_DIR = tmp_path
    metrics_on.REDIS_URL = ""
    assert value(scrape(), "portico_log_spool_files") == 0
    path = pipeline.spool_append([{"id": "x"}], spool_dir=tmp_path)
    two_minutes_ago = time.time() - 120
    os.utime(path, (two_minutes_ago, two_minutes_ago))
    text = scrape()
    assert value(text, "portico_log_spool_files") == 1
    assert value(text, "portico_log_spool_bytes") == path.stat().st_size
    assert 120 <= value(text, "portico_log_spool_oldest_file_age_seconds") < 150
    assert 120 <= value(text, "portico_rollup_lag_seconds") < 150


@pytest.mark.django_db
def test_nothing_waiting_means_no_lag(metrics_on, tmp_path):
    metrics_on.LOG_SPOOL_DIR = tmp_path
    metrics_on.REDIS_URL = ""
    text = scrape()
    assert value(text, "portico_rollup_lag_seconds") == 0
    assert value(text, "portico_redis_up") is None  # embedded mode has no Redis to be up


@pytest.mark.redis
@pytest.mark.django_db
def test_the_log_stream_shows_entries_pending_dead_letters_and_lag(metrics_on, tmp_path):
    metrics_on.LOG_SPOOL_DIR = tmp_path
    stream = metrics_on.LOG_STREAM_KEY = f"portico:test:metrics:{uuid.uuid4().hex}"
    client = pipeline.redis_client()
    try:
        minute_ago_ms = int((time.time() - 60) * 1000)
        client.xadd(stream, {"batch": b"[]"}, id=f"{minute_ago_ms}-0")
        client.xadd(stream, {"batch": b"[]"})
        pipeline.ensure_group(client, stream)
        client.xreadgroup(pipeline.CONSUMER_GROUP, "test-writer", {stream: ">"}, count=1)  # taken, not acked
        client.xadd(f"{stream}:dead", {"reason": b"undecodable entry"})
        text = scrape()
        assert value(text, "portico_redis_up") == 1
        assert value(text, "portico_log_stream_entries") == 2
        assert value(text, "portico_log_stream_pending_entries") == 1
        assert value(text, "portico_log_stream_dead_letter_entries") == 1
        assert 60 <= value(text, "portico_rollup_lag_seconds") < 90
    finally:
        client.delete(stream, f"{stream}:dead")


@pytest.mark.django_db
def test_a_dead_redis_does_not_fail_the_scrape(client, metrics_on, tmp_path):
    metrics_on.LOG_SPOOL_DIR = tmp_path
    metrics_on.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    started = time.monotonic()
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert time.monotonic() - started < 5
    assert value(response.content, "portico_redis_up") == 0
    assert value(response.content, "portico_log_stream_entries") is None
    assert value(response.content, "portico_database_up") == 1
    assert value(response.content, "portico_log_spool_files") == 0


@pytest.mark.django_db
def test_a_dead_database_does_not_fail_the_scrape(metrics_on, tmp_path, monkeypatch):
    from django.db import connection

    metrics_on.LOG_SPOOL_DIR = tmp_path

    def refuse(*args, **kwargs):
        from django.db import OperationalError

        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    text = scrape()
    assert value(text, "portico_database_up") == 0
    assert value(text, "portico_log_spool_files") == 0
