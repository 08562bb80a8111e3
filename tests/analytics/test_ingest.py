"""write_log_batch: idempotent on the record id, bodies only when given, bad records skipped.

Run on SQLite (bulk_create path) in the embedded pass and on Postgres (COPY path) in the
Postgres pass; the ``postgres``-marked tests cover what only the COPY path does."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection, connections

from analytics import ingest
from analytics.models import RequestBody, RequestLog
from tests.analytics.records import log_record
from workspaces import services

pytestmark = pytest.mark.django_db


def test_it_returns_the_new_ids(workspace, api_key):
    records = [log_record(workspace, api_key[0]) for _ in range(3)]
    assert ingest.write_log_batch(records) == [r["id"] for r in records]
    log = RequestLog.objects.get(id=records[0]["id"])
    assert (log.workspace_id, log.api_key_id, log.status_code, log.success) == (workspace.id, api_key[0].id, 200, True)
    assert log.metadata == {"_user": "alice", "environment": "production", "feature": "chat"}
    assert log.cost == Decimal("0.00004680")


def test_a_second_write_inserts_nothing(workspace):
    records = [log_record(workspace) for _ in range(5)]
    ingest.write_log_batch(records)
    assert ingest.write_log_batch(records) == []
    assert RequestLog.objects.count() == 5


def test_it_inserts_only_the_new_part_of_a_partly_written_batch(workspace):
    old = [log_record(workspace) for _ in range(2)]
    ingest.write_log_batch(old)
    new = [log_record(workspace) for _ in range(2)]
    assert ingest.write_log_batch([old[0], new[0], old[1], new[1]]) == [new[0]["id"], new[1]["id"]]
    assert RequestLog.objects.count() == 4


def test_a_repeated_id_within_a_batch_is_written_once(workspace):
    record = log_record(workspace)
    assert ingest.write_log_batch([record, dict(record)]) == [record["id"]]
    assert RequestLog.objects.count() == 1


def test_bodies_are_stored_only_when_given(workspace):
    with_body = log_record(
        workspace,
        body={"request_headers": {"content-type": "application/json"}, "request_body": "{}", "response_body": "ok"},
    )
    without_body = log_record(workspace)
    ingest.write_log_batch([with_body, without_body])
    body = RequestBody.objects.get()
    assert str(body.log_id) == with_body["id"]
    assert (body.request_headers, body.request_body, body.response_body) == (
        {"content-type": "application/json"},
        "{}",
        "ok",
    )


def test_a_redelivered_batch_does_not_duplicate_bodies(workspace):
    record = log_record(workspace, body={"request_headers": {}, "request_body": "a", "response_body": "b"})
    ingest.write_log_batch([record])
    ingest.write_log_batch([record])
    assert RequestBody.objects.count() == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"id": None},
        {"id": "not-a-uuid"},
        {"workspace_id": None},
        {"workspace_id": 0},
        {"status_code": "two hundred"},
        {"success": "maybe"},
        {"created_at": "yesterday"},
        {"latency_ms": float("nan")},
        {"cost": "free"},
        {"metadata": ["not", "an", "object"]},
        {"body": "not an object"},
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_a_malformed_record_is_skipped_without_losing_the_others(workspace, bad, caplog):
    good = [log_record(workspace) for _ in range(2)]
    broken = log_record(workspace, **bad)
    before = ingest.ingest_counters["malformed"]
    assert ingest.write_log_batch([good[0], broken, good[1]]) == [good[0]["id"], good[1]["id"]]
    assert ingest.ingest_counters["malformed"] == before + 1
    assert "Skipping malformed log record" in caplog.text


def test_a_record_that_is_not_an_object_is_skipped(workspace):
    good = log_record(workspace)
    assert ingest.write_log_batch(["oops", None, good]) == [good["id"]]


def test_missing_optional_keys_take_the_model_defaults(workspace):
    created = "2026-01-02T03:04:05+00:00"
    record = {"id": str(uuid.uuid4()), "created_at": created, "workspace_id": workspace.id, "status_code": 502}
    record["success"] = False
    ingest.write_log_batch([record])
    log = RequestLog.objects.get()
    assert (log.method, log.currency, log.cache_status, log.metadata, log.metadata_changes) == (
        "POST",
        "USD",
        "DISABLED",
        {},
        [],
    )
    assert (log.api_key_id, log.cost, log.ttft_ms, log.model) == (None, None, None, "")
    assert log.created_at.isoformat() == created


def test_a_record_without_created_at_is_skipped(workspace, caplog):
    # created_at is part of the conflict target on Postgres: a record that took a fresh
    # timestamp per delivery could be stored twice, so it must come with one.
    record = log_record(workspace)
    del record["created_at"]
    assert ingest.write_log_batch([record]) == []
    assert "missing created_at" in caplog.text
    assert RequestLog.objects.count() == 0


def test_over_long_and_awkward_values_are_coerced(workspace):
    record = log_record(
        workspace,
        model="m" * 500,
        user="bob\x00",
        status_code="429",
        prompt_tokens=-3,
        created_at="2026-01-02T03:04:05",  # naive: taken as UTC
        error_message="line 1\nline 2\ttab \\ backslash \"quotes\" 'single' caf\u00e9 \U0001f600",
        metadata={"note": "a\x00b", "team": "tab\there"},
    )
    ingest.write_log_batch([record])
    log = RequestLog.objects.get()
    assert (len(log.model), log.user, log.status_code, log.prompt_tokens) == (200, "bob", 429, 0)
    assert log.created_at.isoformat() == "2026-01-02T03:04:05+00:00"
    assert log.error_message == record["error_message"]
    assert log.metadata == {"note": "ab", "team": "tab\there"}


def test_records_of_a_deleted_workspace_are_skipped(workspace, other_workspace):
    kept = log_record(workspace)
    orphan = log_record(other_workspace)
    other_workspace.delete()
    assert ingest.write_log_batch([orphan, kept]) == [kept["id"]]
    assert ingest.write_log_batch([orphan]) == []


def test_a_deleted_api_key_is_cleared(workspace):
    key, _ = services.api_key_create(workspace=workspace, name="temporary")
    record = log_record(workspace, key)
    key.delete()
    ingest.write_log_batch([record])
    assert RequestLog.objects.get().api_key_id is None


def test_deleting_a_key_or_workspace_still_reaches_its_stored_logs(workspace, other_workspace):
    # The log table has no database foreign keys (migration 0010): Django's on_delete does it.
    key, _ = services.api_key_create(workspace=workspace, name="temporary")
    keyed, other = log_record(workspace, key), log_record(other_workspace)
    ingest.write_log_batch([keyed, other])
    key.delete()
    assert RequestLog.objects.get(id=keyed["id"]).api_key_id is None
    other_workspace.delete()
    assert list(RequestLog.objects.values_list("id", flat=True)) == [uuid.UUID(keyed["id"])]


def test_the_rollup_hook_sees_only_new_rows(workspace, monkeypatch):
    seen = []
    monkeypatch.setattr(ingest, "_update_rollups", lambda rows, batch=None: seen.append([str(r["id"]) for r in rows]))
    first = log_record(workspace)
    ingest.write_log_batch([first])
    second = log_record(workspace)
    ingest.write_log_batch([first, second])
    assert seen == [[first["id"]], [second["id"]]]


# --- Postgres: the COPY path -------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_copy_path_commits_and_is_idempotent(workspace):
    assert connection.vendor == "postgresql"
    records = [
        log_record(workspace, body={"request_headers": {"a": "1"}, "request_body": "x", "response_body": "y"})
        for _ in range(50)
    ]
    assert len(ingest.write_log_batch(records)) == 50
    assert ingest.write_log_batch(records) == []
    # Committed: a second connection sees the rows, and the temp table kept none.
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM analytics_requestlog")
            assert cursor.fetchone()[0] == 50
            cursor.execute("SELECT count(*) FROM analytics_requestbody")
            assert cursor.fetchone()[0] == 50
    finally:
        other.close()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT to_regclass('pg_temp.{ingest._TMP_LOG_TABLE}')")
        if cursor.fetchone()[0] is not None:  # only made by the ON CONFLICT path
            cursor.execute(f"SELECT count(*) FROM {ingest._TMP_LOG_TABLE}")
            assert cursor.fetchone()[0] == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_copy_that_hits_stored_rows_falls_back_to_on_conflict(workspace):
    # A batch redelivered with new records added (or another writer stored some): the COPY hits
    # the primary key, is undone, and the ON CONFLICT path inserts only what is new, once.
    from analytics.models import DimensionRollup

    old = [log_record(workspace) for _ in range(3)]
    ingest.write_log_batch(old)
    new = [log_record(workspace) for _ in range(2)]
    assert ingest.write_log_batch([*old, *new]) == [r["id"] for r in new]
    assert ingest.write_log_batch([*old, *new]) == []
    assert RequestLog.objects.count() == 5
    assert sum(DimensionRollup.objects.values_list("requests", flat=True)) == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_copy_path_survives_a_failed_batch_on_the_same_connection(workspace, monkeypatch):
    records = [log_record(workspace) for _ in range(3)]

    def boom(rows, batch=None):
        raise RuntimeError("rollup failed")

    monkeypatch.setattr(ingest, "_update_rollups", boom)
    with pytest.raises(RuntimeError):
        ingest.write_log_batch(records)
    monkeypatch.undo()
    assert RequestLog.objects.count() == 0  # one transaction: nothing half-written
    assert len(ingest.write_log_batch(records)) == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_the_same_batch_insert_it_once(workspace):
    records = [log_record(workspace) for _ in range(200)]
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def writer():
        barrier.wait()
        try:
            results.append(ingest.write_log_batch(records))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert sorted(id_ for ids in results for id_ in ids) == sorted(r["id"] for r in records)
    assert RequestLog.objects.count() == 200
