"""Rollups and the metadata key registry, written by write_log_batch in its transaction, and
rebuild_rollups / refresh_metadata_keys (analytics.recompute). Runs on SQLite and on Postgres
(the ``postgres`` tests cover concurrent writers and the SQL histogram merge)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections

from analytics import histogram, recompute
from analytics.ingest import write_log_batch
from analytics.models import DimensionRollup, MetadataKey, MetadataRollup, RequestLog
from config.celery import app
from tests.analytics.records import log_record

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
OTHER = MetadataRollup.OTHER_VALUE


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def metadata_rows(**filters) -> dict[tuple[str, str], MetadataRollup]:
    return {(r.key, r.value): r for r in MetadataRollup.objects.filter(**filters)}


def snapshot() -> dict:
    fields = [f.attname for f in MetadataRollup._meta.concrete_fields if f.attname != "id"]
    dims = [f.attname for f in DimensionRollup._meta.concrete_fields if f.attname != "id"]
    return {
        "metadata": sorted(tuple(str(v) for v in row) for row in MetadataRollup.objects.values_list(*fields)),
        "dimensions": sorted(tuple(str(v) for v in row) for row in DimensionRollup.objects.values_list(*dims)),
    }


def test_a_batch_is_summed_per_key_value_and_hour(workspace, api_key):
    write_log_batch(
        [
            log_record(workspace, api_key[0], created_at=at(1), latency_ms=100.0, cost="0.5"),
            log_record(workspace, api_key[0], created_at=at(50), latency_ms=300.0, cost=None, success=False),
            log_record(workspace, api_key[0], created_at=at(70), metadata={"environment": "staging"}),
        ]
    )
    rows = metadata_rows(bucket=T0)
    assert set(rows) == {("_user", "alice"), ("environment", "production"), ("feature", "chat")}
    prod = rows[("environment", "production")]
    assert (prod.requests, prod.errors, prod.prompt_tokens, prod.completion_tokens) == (2, 1, 240, 96)
    assert (prod.cost, prod.priced_requests, prod.latency_sum_ms) == (Decimal("0.5"), 1, 400.0)
    assert prod.latency_hist == histogram.add(histogram.add({}, 100.0), 300.0)
    assert prod.last_seen == T0 + timedelta(minutes=50)
    assert metadata_rows(bucket=T0 + timedelta(hours=1)).keys() == {("environment", "staging")}


def test_dimension_rows_split_by_provider_model_key_and_status_code(workspace, api_key):
    write_log_batch(
        [
            log_record(workspace, api_key[0], created_at=at(1)),
            log_record(workspace, api_key[0], created_at=at(2), status_code=201),
            log_record(workspace, api_key[0], created_at=at(3), status_code=429, success=False),
            log_record(workspace, None, created_at=at(4), model="gpt-4o"),
        ]
    )
    rows = {
        (r.model, r.api_key_id, r.status_class, r.status_code): (r.requests, r.errors)
        for r in DimensionRollup.objects.filter(workspace=workspace, bucket=T0, provider="openai")
    }
    assert rows == {
        ("gpt-4o-mini", api_key[0].id, 2, 200): (1, 0),
        ("gpt-4o-mini", api_key[0].id, 2, 201): (1, 0),
        ("gpt-4o-mini", api_key[0].id, 4, 429): (1, 1),
        ("gpt-4o", 0, 2, 200): (1, 0),
    }


def test_a_redelivered_batch_is_not_counted_twice(workspace):
    first = [log_record(workspace, created_at=at(i)) for i in range(3)]
    write_log_batch(first)
    write_log_batch([*first, log_record(workspace, created_at=at(5))])
    assert metadata_rows()[("feature", "chat")].requests == 4
    assert DimensionRollup.objects.get().requests == 4
    assert MetadataKey.objects.get(key="feature").requests == 4


def test_values_past_the_cap_go_to_other_across_batches(workspace, settings):
    settings.ROLLUP_VALUE_CAP = 2
    user = lambda name, minute: log_record(workspace, created_at=at(minute), metadata={"_user": name})  # noqa: E731
    write_log_batch([user("u1", 1), user("u2", 2), user("u3", 3)])
    write_log_batch([user("u4", 4), user("u1", 5), user("u3", 6)])
    write_log_batch([user("u4", 70)])  # the next hour has its own slots
    rows = metadata_rows(bucket=T0)
    assert {value: row.requests for (_key, value), row in rows.items()} == {"u1": 2, "u2": 1, OTHER: 3}
    assert rows[("_user", OTHER)].last_seen == T0 + timedelta(minutes=6)
    assert metadata_rows(bucket=T0 + timedelta(hours=1)).keys() == {("_user", "u4")}
    # The registry keeps the real values (its own cap is MetadataKey.VALUE_CAP).
    assert MetadataKey.objects.get(key="_user").top_values == {"u1": 2, "u2": 1, "u3": 2, "u4": 2}


def test_within_a_batch_earlier_logs_take_the_free_slots(workspace, settings):
    settings.ROLLUP_VALUE_CAP = 1
    late = log_record(workspace, created_at=at(30), metadata={"team": "late"})
    early = log_record(workspace, created_at=at(10), metadata={"team": "early"})
    write_log_batch([late, early])
    assert set(metadata_rows()) == {("team", "early"), ("team", OTHER)}


def test_a_literal_other_value_is_counted_with_the_folded_ones(workspace, settings):
    settings.ROLLUP_VALUE_CAP = 1
    write_log_batch([log_record(workspace, created_at=at(i), metadata={"k": v}) for i, v in enumerate("ab")])
    write_log_batch([log_record(workspace, created_at=at(9), metadata={"k": OTHER})])
    assert {value: row.requests for (_key, value), row in metadata_rows().items()} == {"a": 1, OTHER: 2}


def test_metadata_values_are_normalised(workspace):
    metadata = {"n": 5, "flag": True, "nested": {"a": 1}, "none": None, "long": "x" * 300, "k" * 200: "too long a key"}
    write_log_batch([log_record(workspace, created_at=at(1), metadata=metadata)])
    assert set(metadata_rows()) == {("n", "5"), ("flag", "true"), ("long", "x" * 128)}


def test_the_registry_tracks_keys_first_and_last_seen(workspace, monkeypatch):
    monkeypatch.setattr(MetadataKey, "VALUE_CAP", 2)
    write_log_batch([log_record(workspace, created_at=at(30), metadata={"team": "a"})])
    write_log_batch(
        [
            log_record(workspace, created_at=at(10), metadata={"team": "b"}),
            log_record(workspace, created_at=at(200), metadata={"team": "c"}),
            log_record(workspace, created_at=at(201), metadata={"team": "c"}),
            log_record(workspace, created_at=at(202), metadata={"team": "a"}),
        ]
    )
    key = MetadataKey.objects.get(workspace=workspace, key="team")
    assert (key.first_seen, key.last_seen, key.requests) == (T0 + timedelta(minutes=10), T0 + timedelta(minutes=202), 5)
    # "a" held a slot; of the batch's new values the busiest ("c") took the last one.
    assert (key.top_values, key.distinct_values) == ({"a": 2, "c": 2}, 2)


def test_refresh_recomputes_the_registry_from_the_rollups(workspace, other_workspace):
    write_log_batch(
        [log_record(workspace, created_at=at(i), metadata={"team": t}) for i, t in enumerate("aab")]
        + [log_record(other_workspace, created_at=at(1), metadata={"team": "z"})]
    )
    MetadataKey.objects.filter(workspace=workspace).update(requests=99, top_values={"zzz": 1}, distinct_values=7)
    MetadataKey.objects.create(workspace=workspace, key="gone", first_seen=T0, last_seen=T0, requests=3)
    assert recompute.refresh_metadata_keys(workspace_id=workspace.id) == 2
    key = MetadataKey.objects.get(workspace=workspace, key="team")
    assert (key.requests, key.top_values, key.distinct_values) == (3, {"a": 2, "b": 1}, 2)
    assert key.first_seen == T0  # exact, not just the hour
    assert not MetadataKey.objects.filter(key="gone").exists()
    assert MetadataKey.objects.get(workspace=other_workspace).top_values == {"z": 1}


def test_refresh_task_is_scheduled_with_an_expiry():
    schedule = app.conf.beat_schedule
    tasks = {entry["task"]: entry for entry in schedule.values()}
    for name in ("apply_retention", "refresh_metadata_keys", "maintain_partitions"):
        entry = tasks[f"analytics.tasks.{name}"]
        assert 0 < entry["options"]["expires"] < entry["schedule"]


# --- rebuild_rollups ------------------------------------------------------------------------


def test_rebuild_recreates_what_ingestion_wrote(workspace, other_workspace, settings):
    settings.ROLLUP_VALUE_CAP = 2
    records = [
        log_record(ws, created_at=at(i * 17), metadata={"_user": f"u{i % 5}", "env": "prod"}, latency_ms=i * 10.0)
        for i in range(30)
        for ws in (workspace, other_workspace)
    ]
    for start in range(0, len(records), 7):
        write_log_batch(records[start : start + 7])
    before = snapshot()
    MetadataRollup.objects.filter(key="env").update(requests=0)
    DimensionRollup.objects.all().delete()
    MetadataKey.objects.all().delete()
    out = StringIO()
    call_command("rebuild_rollups", chunk_size=4, stdout=out)
    assert snapshot() == before
    assert out.getvalue().startswith("Rebuilt rollups from 60 log(s)")
    assert MetadataKey.objects.get(workspace=workspace, key="env").requests == 30


def test_rebuild_is_limited_to_the_workspace_and_hours_asked_for(workspace, other_workspace):
    write_log_batch([log_record(ws, created_at=at(m)) for ws in (workspace, other_workspace) for m in (5, 65)])
    MetadataRollup.objects.update(requests=42)
    call_command("rebuild_rollups", workspace="acme", since=at(61), stdout=StringIO())
    requests = {(row.workspace_id, row.bucket): row.requests for row in MetadataRollup.objects.filter(key="feature")}
    hour = T0 + timedelta(hours=1)
    assert requests == {
        (workspace.id, T0): 42,
        (workspace.id, hour): 1,
        (other_workspace.id, T0): 42,
        (other_workspace.id, hour): 42,
    }


def test_rebuild_refuses_an_unknown_workspace_or_a_bad_time(workspace):
    with pytest.raises(CommandError, match="No workspace"):
        call_command("rebuild_rollups", workspace="nope")
    with pytest.raises(CommandError, match="--since: enter an ISO 8601 date-time"):
        call_command("rebuild_rollups", since="last tuesday")


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:00", "2025-01-01\x00junk"])
def test_rebuild_refuses_a_time_outside_the_stored_range_by_name(workspace, since):
    # 0001-01-01T00:00+23:59 was an OverflowError traceback (before year 1 in UTC).
    with pytest.raises(CommandError, match=r"^--since: enter"):
        call_command("rebuild_rollups", since=since, stdout=StringIO())


# --- Postgres -------------------------------------------------------------------------------


@pytest.mark.postgres
def test_histograms_merge_in_sql():
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT portico_hist_merge('{"1": 2, "5": 1}', '{"5": 3, "9": 1}'), portico_hist_merge('{}', NULL)"""
        )
        merged, empty = cursor.fetchone()
    # Django reads jsonb as text and decodes it in JSONField.
    assert (json.loads(merged), json.loads(empty)) == ({"1": 2, "5": 4, "9": 1}, {})


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_the_cap_and_the_totals_exact(workspace, settings):
    settings.ROLLUP_VALUE_CAP = 5
    writers, per_writer = 6, 40
    batches = [
        [
            log_record(
                workspace, created_at=at(i % 60), metadata={"_user": f"w{w}-{i % 8}", "env": "prod"}, latency_ms=50.0
            )
            for i in range(per_writer)
        ]
        for w in range(writers)
    ]
    barrier = threading.Barrier(writers)
    errors = []

    def write(batch):
        barrier.wait()
        try:
            for start in range(0, len(batch), 10):
                write_log_batch(batch[start : start + 10])
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    users = MetadataRollup.objects.filter(key="_user", bucket=T0)
    assert users.exclude(value=OTHER).count() == 5
    assert sum(users.values_list("requests", flat=True)) == writers * per_writer
    env = MetadataRollup.objects.get(key="env", value="prod")
    assert (env.requests, env.latency_hist) == (
        writers * per_writer,
        {str(histogram.bucket_of(50.0)): writers * per_writer},
    )
    key = MetadataKey.objects.get(key="_user")
    assert (key.requests, key.distinct_values) == (writers * per_writer, writers * 8)
    assert DimensionRollup.objects.get().requests == writers * per_writer


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_rebuild_during_ingestion_neither_loses_nor_double_counts(workspace, other_workspace):
    write_log_batch([log_record(ws, created_at=at(i)) for i in range(60) for ws in (workspace, other_workspace)])
    rebuilt = threading.Event()
    errors = []

    def write():
        # Until the last rebuild is over, every batch brings a new hour (no rollup rows yet,
        # ahead of where the rebuild reads); every other batch has no metadata at all.
        try:
            hour = 0
            while not rebuilt.is_set():
                hour += 1
                metadata = {} if hour % 2 else {"metadata": {}}
                write_log_batch(
                    [
                        log_record(ws, created_at=at(60 * hour + i), **metadata)
                        for i in range(10)
                        for ws in (workspace, other_workspace)
                    ]
                )
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    def rebuild():
        try:
            for _ in range(3):
                recompute.rebuild_rollups(workspace_id=workspace.id, chunk_size=7)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            rebuilt.set()
            connections.close_all()

    threads = [threading.Thread(target=write), threading.Thread(target=rebuild)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for ws in (workspace, other_workspace):
        logs = RequestLog.objects.filter(workspace=ws).count()
        assert sum(DimensionRollup.objects.filter(workspace=ws).values_list("requests", flat=True)) == logs
        tagged = RequestLog.objects.filter(workspace=ws, metadata__has_key="feature").count()
        feature = MetadataRollup.objects.filter(workspace=ws, key="feature")
        assert sum(feature.values_list("requests", flat=True)) == tagged
        assert MetadataKey.objects.get(workspace=ws, key="feature").requests == tagged
