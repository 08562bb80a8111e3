"""Writing log records: the one place rows enter RequestLog / RequestBody.

``write_log_batch`` is called by the Redis stream consumer, by the gateway's direct-to-database
fallback and by the spool replayer. Delivery upstream is at-least-once, so the write is
idempotent on the record id: a batch written twice inserts nothing the second time.

Records are the gateway's JSON-serialisable dicts (see DESIGN.md, "The log pipeline"). They are
coerced here, defensively: a record that cannot be stored is skipped and counted, never allowed
to fail the batch it travels in. On Postgres the records already stored are looked up and the
rest COPY'd straight into the log table; if a concurrent writer stored some of them meanwhile
(the COPY hits the primary key), that is undone and the batch goes through a temporary table
and ``INSERT ... ON CONFLICT (created_at, id) DO NOTHING RETURNING id`` instead (the table is
partitioned by created_at, so its primary key is (id, created_at); a record always carries the
same created_at, so this is idempotency on the id). Elsewhere (the SQLite embedded default)
existing ids are looked up and the rest bulk-created.
"""

from __future__ import annotations

import gc
import logging
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

import orjson
import psycopg
from django.db import connection, models, transaction
from django.utils import timezone

from analytics import health, otel_export, rollups
from analytics.models import RequestBody, RequestLog
from analytics.reads import cache as dashboard_cache
from workspaces.models import ApiKey, Workspace

logger = logging.getLogger(__name__)

# Process-wide counters (records), for metrics and tests: inserted, duplicate, malformed, orphaned.
ingest_counters: Counter[str] = Counter()

# created_at is required: on Postgres it is part of the conflict target, so a record that got a
# fresh timestamp per delivery could be inserted twice.
REQUIRED_KEYS = ("id", "created_at", "workspace_id", "status_code", "success")
_SMALLINT_MAX = 32767
_INT_MAX = 2147483647
_COST_LIMIT = Decimal(10) ** 10  # DecimalField(max_digits=18, decimal_places=8)
_COST_QUANTUM = Decimal("0.00000001")
_TMP_LOG_TABLE = "portico_ingest_requestlog"
_ID_CHUNK = 500


class MalformedRecord(ValueError):
    """A record that cannot be stored (missing or uncoercible field)."""


# --- Coercion ----------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    # Postgres text and jsonb refuse NUL characters.
    return value.replace("\x00", "") if "\x00" in value else value


def _scrub_json(value: Any) -> Any:
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, dict):
        return {_no_nul(str(k)): _scrub_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_json(v) for v in value]
    return value


def _string(max_length: int | None) -> Callable[[Any], str]:
    def coerce(value: Any) -> str:
        if type(value) is not str:
            if isinstance(value, dict | list | bytes):
                raise MalformedRecord(f"expected a string, got {type(value).__name__}")
            value = str(value)
        value = _no_nul(value)
        # Over-long values are cut rather than refused: the rest of the record is still useful.
        return value[:max_length] if max_length and len(value) > max_length else value

    return coerce


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedRecord(f"expected a number, got {type(value).__name__}")
    try:
        return kind(value)
    except (ValueError, OverflowError):
        raise MalformedRecord(f"expected a number, got {value!r:.40}") from None


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def coerce(value: Any) -> int:
        return min(max(_number(value, int), low), high)

    return coerce


def _object_id(value: Any) -> int:
    # Never clamped: a wrong id would file the log under someone else's workspace.
    number = _number(value, int)
    if not 0 < number < 2**63:
        raise MalformedRecord(f"expected a positive id, got {number}")
    return number


def _float(value: Any) -> float:
    number = _number(value, float)
    if not math.isfinite(number):
        raise MalformedRecord("expected a finite number")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise MalformedRecord(f"expected a boolean, got {value!r:.40}")


def _decimal(value: Any) -> Decimal | None:
    if value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise MalformedRecord(f"expected a decimal, got {type(value).__name__}")
    try:
        number = Decimal(str(value)).quantize(_COST_QUANTUM)
    except (InvalidOperation, ValueError):
        raise MalformedRecord(f"expected a decimal, got {value!r:.40}") from None
    if not number.is_finite() or abs(number) >= _COST_LIMIT:
        raise MalformedRecord("decimal out of range")
    return number


def _datetime(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise MalformedRecord(f"expected an ISO-8601 timestamp, got {value!r:.40}") from None
    if not isinstance(value, datetime):
        raise MalformedRecord(f"expected an ISO-8601 timestamp, got {type(value).__name__}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise MalformedRecord(f"expected a UUID, got {value!r:.40}") from None


def _json(kind: type) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if not isinstance(value, kind):
            raise MalformedRecord(f"expected a JSON {kind.__name__}, got {type(value).__name__}")
        return value

    return coerce


def _coercer(field: models.Field) -> Callable[[Any], Any]:
    # None never reaches a coercer: _coerce_log maps it to NULL or the field default.
    if isinstance(field, models.ForeignKey):
        return _object_id
    if isinstance(field, models.UUIDField):
        return _uuid
    if isinstance(field, models.DateTimeField):
        return _datetime
    if isinstance(field, models.BooleanField):
        return _boolean
    if isinstance(field, models.PositiveSmallIntegerField):
        return _integer(0, _SMALLINT_MAX)
    if isinstance(field, models.PositiveIntegerField):
        return _integer(0, _INT_MAX)
    if isinstance(field, models.FloatField):
        return _float
    if isinstance(field, models.DecimalField):
        return _decimal
    if isinstance(field, models.JSONField):
        return _json(_json_kind(field))
    if isinstance(field, models.CharField | models.TextField):
        return _string(field.max_length)
    raise TypeError(f"write_log_batch cannot coerce {field.__class__.__name__} {field.name}")


def _json_kind(field: models.JSONField) -> type:
    # The JSON columns hold an object (metadata) or a list (attempts, finish_reasons, ...).
    return dict if field.default is dict else list


# (record key / attname, column, coerce, field). Built from the model so a new column is
# picked up without touching this module (add a coercer above if its type is new).
_LOG_FIELDS = [(f.attname, f.column, _coercer(f), f) for f in RequestLog._meta.concrete_fields]
_JSON_COLUMNS = [f.attname for f in RequestLog._meta.concrete_fields if isinstance(f, models.JSONField)]


def _coerce_log(record: dict) -> dict:
    """A full row (every concrete field, by attname) from one record; raises MalformedRecord."""
    if not isinstance(record, dict):
        raise MalformedRecord(f"expected an object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if record.get(key) is None]
    if missing:
        raise MalformedRecord(f"missing {', '.join(missing)}")
    row = {}
    for attname, _column, coerce, field in _LOG_FIELDS:
        value = record.get(attname)
        if value is None:
            row[attname] = None if field.null else field.get_default()
            continue
        try:
            row[attname] = coerce(value)
        except MalformedRecord as exc:
            raise MalformedRecord(f"{attname}: {exc}") from None
    return row


# The fast path: gateway records are well-formed, so each value is checked with a type test and
# taken as it is; a record with any value that would need coercing (or is missing a required
# key) goes through _coerce_log instead, which stays the reference for every rule. A value is
# only taken here when _coerce_log would return an equal one.
_KIND_TEXT, _KIND_INT, _KIND_FLOAT, _KIND_BOOL, _KIND_UUID, _KIND_TIME, _KIND_DECIMAL, _KIND_JSON = range(8)
_DECIMAL_TEXT = re.compile(r"-?\d{1,10}(?:\.\d{1,8})?")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _fast_plan() -> list[tuple]:
    plan = []
    for field in RequestLog._meta.concrete_fields:
        low, high = 0, None
        if isinstance(field, models.ForeignKey):
            kind, low, high = _KIND_INT, 1, 2**63 - 1  # an object id: never clamped, see _object_id
        elif isinstance(field, models.UUIDField):
            kind = _KIND_UUID
        elif isinstance(field, models.DateTimeField):
            kind = _KIND_TIME
        elif isinstance(field, models.BooleanField):
            kind = _KIND_BOOL
        elif isinstance(field, models.PositiveSmallIntegerField):
            kind, high = _KIND_INT, _SMALLINT_MAX
        elif isinstance(field, models.PositiveIntegerField):
            kind, high = _KIND_INT, _INT_MAX
        elif isinstance(field, models.FloatField):
            kind = _KIND_FLOAT
        elif isinstance(field, models.DecimalField):
            kind = _KIND_DECIMAL
        elif isinstance(field, models.JSONField):
            kind, high = _KIND_JSON, _json_kind(field)
        else:
            kind, high = _KIND_TEXT, field.max_length or 2**62
        required = field.attname in REQUIRED_KEYS
        # None: NULL, or the default (JSON defaults are callables: a fresh object per row).
        plan.append((field.attname, kind, low, high, required, field.null, field.get_default))
    return plan


_FAST_PLAN = _fast_plan()


def _coerce_fast(record: Any) -> dict | None:
    """The row _coerce_log would build, for a record needing no coercion; otherwise None."""
    if type(record) is not dict:
        return None
    get = record.get
    row = {}
    for attname, kind, low, high, required, null, default in _FAST_PLAN:
        value = get(attname)
        if value is None:
            if required:
                return None
            row[attname] = None if null else default()
            continue
        vtype = type(value)
        if kind == _KIND_TEXT:
            if vtype is not str or len(value) > high or "\x00" in value:
                return None
        elif kind == _KIND_INT:
            if vtype is not int or not low <= value <= high:
                return None
        elif kind == _KIND_FLOAT:
            if vtype is float:
                if not math.isfinite(value):
                    return None
            elif vtype is int:
                value = float(value)
            else:
                return None
        elif kind == _KIND_BOOL:
            if vtype is not bool:
                return None
        elif kind == _KIND_UUID:
            if vtype is not str or not _CANONICAL_UUID.fullmatch(value):
                return None
            value = uuid.UUID(value)
        elif kind == _KIND_TIME:
            if vtype is not str:
                return None
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                return None
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
        elif kind == _KIND_DECIMAL:
            if vtype is not str or not _DECIMAL_TEXT.fullmatch(value):
                return None
            value = Decimal(value).quantize(_COST_QUANTUM)
        elif kind == _KIND_JSON and vtype is not high:
            return None
        row[attname] = value
    return row


def _json_text(value: Any) -> tuple[Any, str]:
    """(the value as stored, its JSON text): the text is what COPY writes, the value is what
    the rollups read, so both must agree. A JSON-born object of strings is its own stored form;
    anything else is read back from its text (NUL characters dropped, odd types as strings)."""
    if (type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())) or (
        type(value) is list and all(type(v) is str for v in value)
    ):
        encoded = orjson.dumps(value)
        if b"\\u0000" not in encoded:
            return value, encoded.decode()
    text = _dump_json(value)
    return orjson.loads(text), text


def _coerce_body(body: Any) -> dict:
    if not isinstance(body, dict):
        raise MalformedRecord(f"body: expected an object, got {type(body).__name__}")
    headers = body.get("request_headers") or {}
    if not isinstance(headers, dict):
        raise MalformedRecord("body.request_headers: expected an object")
    text = _string(None)
    return {
        "request_headers": headers,
        "request_body": text(body.get("request_body") or ""),
        "response_body": text(body.get("response_body") or ""),
    }


def _dump_json(value: Any) -> str:
    encoded = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    if b"\\u0000" in encoded:
        encoded = orjson.dumps(_scrub_json(value), default=str, option=orjson.OPT_NON_STR_KEYS)
    return encoded.decode()


def _prepare(records: Iterable[Any]) -> tuple[list[dict], dict[uuid.UUID, dict], dict[uuid.UUID, list[str]]]:
    """Coerced rows (first occurrence of each id), bodies by id and the JSON columns' text by
    id (what COPY writes); malformed records skipped."""
    rows: list[dict] = []
    bodies: dict[uuid.UUID, dict] = {}
    json_texts: dict[uuid.UUID, list[str]] = {}
    seen: set[uuid.UUID] = set()
    for record in records:
        try:
            row = _coerce_fast(record) or _coerce_log(record)
            texts = []
            for attname in _JSON_COLUMNS:
                if row[attname] is None:  # a nullable column: SQL NULL, not JSON null
                    texts.append(None)
                    continue
                # Checked here so an unserialisable value skips this record, not the batch.
                row[attname], text = _json_text(row[attname])
                texts.append(text)
            body = _coerce_body(record["body"]) if record.get("body") is not None else None
        except (MalformedRecord, TypeError, ValueError) as exc:
            record_id = record.get("id") if isinstance(record, dict) else None
            logger.warning("Skipping malformed log record %s: %s", str(record_id)[:64], exc)
            ingest_counters["malformed"] += 1
            continue
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        rows.append(row)
        json_texts[row["id"]] = texts
        if body is not None:
            bodies[row["id"]] = body
    return rows, bodies, json_texts


# --- Writing -----------------------------------------------------------------------------


def write_log_batch(records: list[dict]) -> list[str]:
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
        inserted = _write_log_batch(records)
    finally:
        if collecting:
            gc.enable()
    health.observe_write(counts_before, records)  # committed: counted in /metrics
    return inserted


def _write_log_batch(records: list[dict]) -> list[str]:
    rows, bodies, json_texts = _prepare(records)
    if not rows:
        return []
    with transaction.atomic():
        rows = _drop_orphans(rows)
        if not rows:
            return []
        if connection.vendor == "postgresql":
            new_ids = _insert_postgres(rows, bodies, json_texts)
        else:
            new_ids = _insert_generic(rows, bodies)
        new_rows = [row for row in rows if row["id"] in new_ids]
        _update_rollups(new_rows)
        if new_rows:
            # Spans go out after the commit, from a background queue that never raises here.
            transaction.on_commit(partial(otel_export.enqueue, new_rows), robust=True)
    if new_rows and dashboard_cache.is_closed(min(row["created_at"] for row in new_rows)):
        # Late logs (a spool replayed hours after an outage) changed hours the dashboard caches.
        now = timezone.now()
        dashboard_cache.note_changed(
            row["workspace_id"] for row in new_rows if dashboard_cache.is_closed(row["created_at"], now)
        )
    ingest_counters["inserted"] += len(new_rows)
    ingest_counters["duplicate"] += len(rows) - len(new_rows)
    return [str(row["id"]) for row in new_rows]


def _update_rollups(new_records: list[dict]) -> None:
    """Update the hourly rollups and the metadata key registry for rows inserted by this batch,
    in its transaction. ``new_records`` are the coerced rows (RequestLog attnames, Python
    values) that were new in this batch, so a redelivered batch never counts twice."""
    rollups.apply_rows(new_records)


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


_PLAIN_FIELDS = [attname for attname, _column, _coerce, _field in _LOG_FIELDS if attname not in _JSON_COLUMNS]
# COPY column order: the plain columns, then the JSON ones (written from their prepared text).
_COPY_COLUMNS = ", ".join(f'"{RequestLog._meta.get_field(name).column}"' for name in _PLAIN_FIELDS + _JSON_COLUMNS)


def _insert_postgres(
    rows: list[dict], bodies: dict[uuid.UUID, dict], json_texts: dict[uuid.UUID, list[str]]
) -> set[uuid.UUID]:
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor  # the psycopg 3 cursor, for COPY
        new_ids = _copy_new_rows(cursor, rows, json_texts)
        if new_ids is None:
            new_ids = _insert_on_conflict(cursor, rows, json_texts)
        new_bodies = [(log_id, body) for log_id, body in bodies.items() if log_id in new_ids]
        if new_bodies:
            # The log rows were created by this transaction, so their bodies cannot exist yet.
            body_table = RequestBody._meta.db_table
            copy_sql = f"COPY {body_table} (log_id, request_headers, request_body, response_body) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for log_id, body in new_bodies:
                    copy.write_row(
                        [log_id, _dump_json(body["request_headers"]), body["request_body"], body["response_body"]]
                    )
    return new_ids


def _copy_new_rows(cursor, rows: list[dict], json_texts: dict[uuid.UUID, list[str]]) -> set[uuid.UUID] | None:
    """The usual case, no concurrent writer of the same records: look up which (id, created_at)
    are stored already (primary key probes, pruned to the partitions of the batch's time span)
    and COPY the others straight into the log table. Returns the ids inserted, or None when the
    COPY hit the primary key (another writer stored some of them meanwhile): then nothing of it
    is kept (rolled back to a savepoint) and the caller takes the ON CONFLICT path."""
    log_table = RequestLog._meta.db_table
    stored = _stored_keys(cursor, rows)
    fresh = [row for row in rows if (row["id"], row["created_at"]) not in stored] if stored else rows
    if not fresh:
        return set()
    savepoint = transaction.savepoint()
    try:
        with cursor.copy(f"COPY {log_table} ({_COPY_COLUMNS}) FROM STDIN") as copy:
            for row in fresh:
                copy.write_row([*map(row.__getitem__, _PLAIN_FIELDS), *json_texts[row["id"]]])
    except psycopg.errors.UniqueViolation:
        transaction.savepoint_rollback(savepoint)
        return None
    transaction.savepoint_commit(savepoint)
    return {row["id"] for row in fresh}


def _stored_keys(cursor, rows: list[dict]) -> set[tuple[uuid.UUID, datetime]]:
    times = [row["created_at"] for row in rows]
    cursor.execute(
        f"SELECT id, created_at FROM {RequestLog._meta.db_table} "  # noqa: S608
        "WHERE id = ANY(%s) AND created_at BETWEEN %s AND %s",
        [[row["id"] for row in rows], min(times), max(times)],
    )
    return set(cursor.fetchall())


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
    column_list = ", ".join(f'"{column}"' for _attname, column, _coerce, _field in _LOG_FIELDS)
    cursor.execute(
        f"INSERT INTO {log_table} ({column_list}) SELECT {column_list} FROM {_TMP_LOG_TABLE} "  # noqa: S608
        "ON CONFLICT (created_at, id) DO NOTHING RETURNING id"
    )
    return {row[0] for row in cursor.fetchall()}
