"""Retention: range deletes per workspace (every database), rollups kept longer than logs, and
on Postgres the daily partitions of the log table (created ahead, DEFAULT for strays, dropped
past the longest retention)."""

from __future__ import annotations

from datetime import UTC, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from analytics import retention
from analytics.ingest import write_log_batch
from analytics.models import DimensionRollup, MetadataRollup, RequestBody, RequestLog
from tests.analytics.records import log_record

pytestmark = pytest.mark.django_db

BODY = {"request_headers": {}, "request_body": "q", "response_body": "a"}


@pytest.fixture
def now():
    return timezone.now()


def write_at(workspace, moment, **overrides) -> str:
    record = log_record(workspace, created_at=moment.isoformat(), body=BODY, **overrides)
    write_log_batch([record])
    return record["id"]


def surviving(ids) -> set[str]:
    return {str(i) for i in RequestLog.objects.filter(id__in=ids).values_list("id", flat=True)}


def test_logs_past_their_workspace_retention_go_with_their_bodies(workspace, other_workspace, now):
    workspace.log_retention_days = 7
    workspace.save()
    old, recent = write_at(workspace, now - timedelta(days=8)), write_at(workspace, now - timedelta(days=6))
    other_old = write_at(other_workspace, now - timedelta(days=8))  # other_workspace keeps 30 days
    report = retention.apply_retention(now)
    assert report["logs_deleted"] == 1
    assert surviving([old, recent, other_old]) == {recent, other_old}
    assert set(RequestBody.objects.values_list("log_id", flat=True)) == set(
        RequestLog.objects.values_list("id", flat=True)
    )


def test_a_zero_day_retention_keeps_the_last_day(workspace, now):
    workspace.log_retention_days = 0
    workspace.save()
    kept, gone = write_at(workspace, now - timedelta(hours=20)), write_at(workspace, now - timedelta(hours=30))
    retention.apply_retention(now)
    assert surviving([kept, gone]) == {kept}


def test_expired_logs_are_deleted_in_chunks(workspace, now):
    ids = [write_at(workspace, now - timedelta(days=40, minutes=i)) for i in range(5)]
    assert retention.delete_expired_logs(workspace.id, now - timedelta(days=30), chunk=2) == 5
    assert surviving(ids) == set()
    assert RequestBody.objects.count() == 0


def test_rollups_outlive_the_logs(workspace, other_workspace, now, settings):
    settings.ROLLUP_RETENTION_DAYS = 400
    other_workspace.log_retention_days = 600
    other_workspace.save()
    for ws in (workspace, other_workspace):
        for days in (100, 500):
            write_at(ws, now - timedelta(days=days))
    retention.apply_retention(now)
    assert RequestLog.objects.filter(workspace=workspace).count() == 0
    buckets = {
        (ws_id, (now - bucket).days)
        for ws_id, bucket in MetadataRollup.objects.filter(key="feature").values_list("workspace_id", "bucket")
    }
    assert buckets == {(workspace.id, 100), (other_workspace.id, 100), (other_workspace.id, 500)}
    assert DimensionRollup.objects.filter(workspace=workspace).count() == 1


def test_the_command_runs_every_step(workspace, now):
    write_at(workspace, now - timedelta(days=45))
    out = StringIO()
    call_command("apply_retention", stdout=out)
    assert "logs deleted: 1" in out.getvalue()
    assert RequestLog.objects.count() == 0


# --- Postgres partitions ----------------------------------------------------------------------


def partition_of(log_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM analytics_requestlog WHERE id = %s", [log_id])
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_the_log_table_is_partitioned_by_day_with_a_default(workspace, now):
    assert retention.is_partitioned()
    log_id = write_at(workspace, now)
    assert partition_of(log_id) == retention.partition_name(now.astimezone(UTC).date())
    stray = write_at(workspace, now + timedelta(days=90))
    assert partition_of(stray) == retention.DEFAULT_PARTITION


@pytest.mark.postgres
def test_partitions_are_created_a_week_ahead(workspace):
    today = timezone.now().astimezone(UTC).date() + timedelta(days=20)
    created = retention.maintain_partitions(today)
    assert retention.partition_name(today + timedelta(days=retention.AHEAD_DAYS)) in created
    assert retention.maintain_partitions(today) == []
    days = retention.partitions()
    assert all(today - timedelta(days=30) + timedelta(days=n) in days for n in range(38))


@pytest.mark.postgres
def test_a_new_partition_takes_over_its_days_rows_from_default(workspace, now):
    moment = now - timedelta(days=200)
    log_id = write_at(workspace, moment)
    assert partition_of(log_id) == retention.DEFAULT_PARTITION
    assert retention.ensure_partitions(moment.date(), moment.date()) == [retention.partition_name(moment.date())]
    assert partition_of(log_id) == retention.partition_name(moment.date())
    assert write_log_batch([log_record(workspace, id=log_id, created_at=moment.isoformat())]) == []


@pytest.mark.postgres
def test_an_old_partition_is_dropped_only_past_the_longest_retention(workspace, other_workspace, now):
    other_workspace.log_retention_days = 60
    other_workspace.save()  # workspace keeps 30 days
    very_old, old = now - timedelta(days=100), now - timedelta(days=45)
    retention.ensure_partitions(very_old.date(), very_old.date())
    retention.ensure_partitions(old.date(), old.date())
    ids = {
        "very_old": write_at(workspace, very_old),
        "other_very_old": write_at(other_workspace, very_old),
        "old": write_at(workspace, old),
        "other_old": write_at(other_workspace, old),
        "recent": write_at(workspace, now - timedelta(days=1)),
    }
    with connection.cursor() as cursor:
        # As if the writes had committed: Postgres refuses to drop a table with foreign-key
        # checks still pending in the transaction (the test's).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    report = retention.apply_retention(now)
    partitions = retention.partitions()
    assert very_old.date() not in partitions and old.date() in partitions
    assert report["partitions_dropped"] == 1
    # The 45-day-old partition is shared: only the 30-day workspace's row left it.
    assert surviving(ids.values()) == {ids["other_old"], ids["recent"]}
    assert report["logs_deleted"] == 1
    assert RequestBody.objects.count() == 2
