"""Writing log records: the one place rows enter RequestLog / RequestBody.

``write_log_batch`` is called by the Redis stream consumer, by the gateway's direct-to-database
fallback and by the spool replayer. Delivery upstream is at-least-once, so the write is
idempotent on the record id: a batch written twice inserts nothing the second time.

Records are analytics.logrecord.LogRecord dicts, as JSON from other processes (DESIGN.md, "The
log pipeline"). They are coerced defensively (analytics.log_rows): a record that cannot be stored is skipped and counted, never allowed
to fail the batch it travels in. On Postgres the records are COPY'd straight into the log table;
if some of them are stored already (a redelivered batch, a concurrent writer: the COPY hits the
primary key), that is undone and the batch goes through a temporary table
and ``INSERT ... ON CONFLICT (created_at, id) DO NOTHING RETURNING id`` instead (the table is
partitioned by created_at, so its primary key is (id, created_at); a record always carries the
same created_at, so this is idempotency on the id). Elsewhere (the SQLite embedded default)
existing ids are looked up and the rest bulk-created.
"""

from __future__ import annotations

import gc
import logging
import uuid
from collections import Counter
from datetime import datetime
from functools import partial
from operator import itemgetter

import psycopg
from django.db import connection, models, transaction
from django.utils import timezone

from analytics import health, log_rows, otel_export, pair_rollups, rollups
from analytics.log_rows import JSON_COLUMNS, LOG_FIELDS, dump_json
from analytics.logrecord import LogRecord
from analytics.models import RequestBody, RequestLog
from analytics.reads import cache as dashboard_cache
from analytics.rollup_batch import BatchRollup
from workspaces.models import ApiKey, Workspace

logger = logging.getLogger(__name__)

# Process-wide counters (records), for metrics and tests: inserted, duplicate, malformed, orphaned.
ingest_counters: Counter[str] = Counter()

_TMP_LOG_TABLE = "portico_ingest_requestlog"
_ID_CHUNK = 500


# --- Writing -----------------------------------------------------------------------------


def write_log_batch(records: list[LogRecord]) -> list[str]:
    """Store a batch of log records; return the ids (str) inserted now, in input order.

    Idempotent on ``id``: already-stored records are left as they are and not returned.
    Malformed records and records of deleted workspaces are skipped (logged, counted).
    Logs, bodies and rollups are written in one transaction; database errors propagate
    so the caller can keep the batch and retry (nothing is acknowledged on failure).
    """
    # A batch allocates a few dicts per record and frees them all at the end: the cyclic
    # collector finds nothing to collect, yet runs many times over (~25% of the Python time of
    # a 5,000-record batch). Paused for the batch; the objects are freed by reference counting.
    counts_before = health.writer_counts()
    collecting = gc.isenabled()
    gc.disable()
    try:
        inserted, oldest = _write_log_batch(records)
    finally:
        if collecting:
            gc.enable()
    health.observe_write(counts_before, oldest)  # committed: counted in /metrics
    return inserted


_created_at = itemgetter("created_at")


def _write_log_batch(records: list[LogRecord]) -> tuple[list[str], datetime | None]:
    """(the ids inserted now, the oldest created_at of the batch's storable records)."""
    rows, bodies, json_texts, malformed = log_rows.prepare(records)
    ingest_counters["malformed"] += malformed
    if not rows:
        return [], None
    oldest = min(map(_created_at, rows))
    with transaction.atomic():
        rows = _drop_orphans(rows)
        if not rows:
            return [], oldest
        if connection.vendor == "postgresql":
            new_rows, batch = _insert_postgres(rows, bodies, json_texts)
        else:
            new_ids, batch = _insert_generic(rows, bodies), None
            new_rows = [row for row in rows if row["id"] in new_ids]
        _update_rollups(new_rows, batch)
        if new_rows:
            # Spans go out after the commit, from a background queue that never raises here.
            transaction.on_commit(partial(otel_export.enqueue, new_rows), robust=True)
    if new_rows and dashboard_cache.is_closed(oldest if new_rows is rows else min(map(_created_at, new_rows))):
        # Late logs (a spool replayed hours after an outage) changed hours the dashboard caches.
        now = timezone.now()
        dashboard_cache.note_changed(
            row["workspace_id"] for row in new_rows if dashboard_cache.is_closed(row["created_at"], now)
        )
    ingest_counters["inserted"] += len(new_rows)
    ingest_counters["duplicate"] += len(rows) - len(new_rows)
    return [str(row["id"]) for row in new_rows], oldest


def _update_rollups(new_records: list[dict], batch: BatchRollup | None = None) -> None:
    """Update the hourly rollups and the metadata key registry for rows inserted by this batch,
    in its transaction. ``new_records`` are the coerced rows (RequestLog attnames, Python
    values) that were new in this batch, so a redelivered batch never counts twice; ``batch``
    is their rollups.prepare when the COPY path computed it already."""
    rollups.apply_rows(new_records, batch=batch)


def _existing_ids(model: type[models.Model], ids: list[int]) -> set[int]:
    """Which of ``ids`` exist; on Postgres they are also locked against deletion until commit
    (FOR KEY SHARE, the lock foreign-key checks take: concurrent writers don't block each other)."""
    if not ids:
        return set()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {model._meta.db_table} WHERE id = ANY(%s) FOR KEY SHARE",  # noqa: S608
                [ids],
            )
            return {row[0] for row in cursor.fetchall()}
    return set(model.objects.filter(id__in=ids).values_list("id", flat=True))


def _drop_orphans(rows: list[dict]) -> list[dict]:
    """Skip rows of deleted workspaces; clear the key of rows whose API key was deleted
    (the column is ON DELETE SET NULL)."""
    workspace_ids = {row["workspace_id"] for row in rows}
    live = _existing_ids(Workspace, sorted(workspace_ids))
    if len(live) != len(workspace_ids):
        kept = [row for row in rows if row["workspace_id"] in live]
        skipped = len(rows) - len(kept)
        logger.warning(
            "Skipping %d log record(s) of deleted workspace(s) %s", skipped, sorted(workspace_ids - live)[:20]
        )
        ingest_counters["orphaned"] += skipped
        rows = kept
    key_ids = {row["api_key_id"] for row in rows if row["api_key_id"] is not None}
    live_keys = _existing_ids(ApiKey, sorted(key_ids))
    if len(live_keys) != len(key_ids):
        for row in rows:
            if row["api_key_id"] is not None and row["api_key_id"] not in live_keys:
                row["api_key_id"] = None
    return rows


def _insert_generic(rows: list[dict], bodies: dict[uuid.UUID, dict]) -> set[uuid.UUID]:
    ids = [row["id"] for row in rows]
    existing: set[uuid.UUID] = set()
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        existing.update(RequestLog.objects.filter(id__in=chunk).values_list("id", flat=True))
    fresh = [row for row in rows if row["id"] not in existing]
    RequestLog.objects.bulk_create([RequestLog(**row) for row in fresh])
    RequestBody.objects.bulk_create(
        [RequestBody(log_id=row["id"], **bodies[row["id"]]) for row in fresh if row["id"] in bodies]
    )
    return {row["id"] for row in fresh}


_PLAIN_FIELDS = [attname for attname, _column, _coerce, _field in LOG_FIELDS if attname not in JSON_COLUMNS]
# COPY column order: the plain columns, then the JSON ones (written from their prepared text).
_COPY_COLUMNS = ", ".join(f'"{RequestLog._meta.get_field(name).column}"' for name in _PLAIN_FIELDS + JSON_COLUMNS)


def _insert_postgres(
    rows: list[dict], bodies: dict[uuid.UUID, dict], json_texts: dict[uuid.UUID, list[str]]
) -> tuple[list[dict], BatchRollup | None]:
    """(the rows inserted now, in input order; their rollups.prepare when already computed)."""
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor  # the psycopg 3 cursor, for COPY
        copied = _copy_new_rows(cursor, rows, json_texts)
        if copied is None:
            new_ids = _insert_on_conflict(cursor, rows, json_texts)
            new_rows, batch = [row for row in rows if row["id"] in new_ids], None
        else:
            new_rows, batch = copied
        inserted = {row["id"] for row in new_rows} if bodies else set()
        new_bodies = [(log_id, body) for log_id, body in bodies.items() if log_id in inserted]
        if new_bodies:
            # The log rows were created by this transaction, so their bodies cannot exist yet.
            body_table = RequestBody._meta.db_table
            copy_sql = f"COPY {body_table} (log_id, request_headers, request_body, response_body) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for log_id, body in new_bodies:
                    copy.write_row(
                        [log_id, dump_json(body["request_headers"]), body["request_body"], body["response_body"]]
                    )
    return new_rows, batch


def _copy_new_rows(
    cursor, rows: list[dict], json_texts: dict[uuid.UUID, list[str]]
) -> tuple[list[dict], BatchRollup | None] | None:
    """The usual case, records not stored before: COPY them straight into the log table.
    Returns (the rows inserted, their rollups.prepare), or None when the COPY hit the primary
    key (a redelivered batch, or a concurrent writer of the same records): then nothing of it
    is kept (rolled back to a savepoint) and the caller takes the ON CONFLICT path. Stored ids
    are not looked up first: a batch is new nearly always, and the lookup (5,000 primary key
    probes) cost more than the rare fallback saves.

    The rollups are summed after the last row is sent and before the COPY is ended: Postgres is
    then still inserting the rows (and their six index entries) sent last, so the two cores
    work at once instead of in turn."""
    log_table = RequestLog._meta.db_table
    pair_keys = pair_rollups.pair_keys({row["workspace_id"] for row in rows})  # no query during the COPY
    savepoint = transaction.savepoint()
    try:
        with cursor.copy(f"COPY {log_table} ({_COPY_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([*map(row.__getitem__, _PLAIN_FIELDS), *json_texts[row["id"]]])
            batch = rollups.prepare(rows, pair_keys)
    except psycopg.errors.UniqueViolation:
        transaction.savepoint_rollback(savepoint)
        return None
    transaction.savepoint_commit(savepoint)
    return rows, batch


def _insert_on_conflict(cursor, rows: list[dict], json_texts: dict[uuid.UUID, list[str]]) -> set[uuid.UUID]:
    """COPY into a temporary table, then INSERT ... ON CONFLICT DO NOTHING RETURNING: safe
    beside concurrent writers of the same records (the slower path)."""
    log_table = RequestLog._meta.db_table
    # Kept for the session, emptied at every commit: no catalog churn per batch. Created
    # inside the transaction when missing (also right behind a transaction-mode pooler).
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_TMP_LOG_TABLE} (LIKE {log_table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    # Empty already, unless an enclosing transaction wrote a batch before (tests do).
    cursor.execute(f"DELETE FROM {_TMP_LOG_TABLE}")  # noqa: S608
    with cursor.copy(f"COPY {_TMP_LOG_TABLE} ({_COPY_COLUMNS}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([*map(row.__getitem__, _PLAIN_FIELDS), *json_texts[row["id"]]])
    column_list = ", ".join(f'"{column}"' for _attname, column, _coerce, _field in LOG_FIELDS)
    cursor.execute(
        f"INSERT INTO {log_table} ({column_list}) SELECT {column_list} FROM {_TMP_LOG_TABLE} "  # noqa: S608
        "ON CONFLICT (created_at, id) DO NOTHING RETURNING id"
    )
    return {row[0] for row in cursor.fetchall()}
