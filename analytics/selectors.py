"""Reads of request logs shared by the REST API, the export and the dashboard.

Lists are keyset-paginated newest first on (created_at, id) and always inside a time window
(LogFilter supplies it); no page ever runs COUNT(*). Exports walk the same keyset in chunks
of plain tuples, so memory stays flat however many rows match. Aggregates (graphs, groups)
live in analytics/reports.py.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from decimal import Decimal

import orjson
from asgiref.sync import sync_to_async
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Case, F, Func, Q, QuerySet, TextField, Value, When
from django.db.models.expressions import Combinable
from django.db.models.functions import Cast
from django.http import Http404

from analytics.models import Feedback, MetadataKey, RequestBody, RequestLog
from config.parsing import parse_timestamp
from workspaces.models import Workspace

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
EXPORT_CHUNK = 5000
ORDERING = ("-created_at", "-id")

LOG_FIELDS = (
    "id",
    "created_at",
    "api_key_id",
    "provider",
    "model",
    "endpoint",
    "method",
    "status_code",
    "success",
    "is_stream",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_prompt_tokens",
    "audio_completion_tokens",
    "cost",
    "currency",
    "price_version",
    "cache_status",
    "cache_saved_cost",
    "retry_count",
    "finish_reasons",
    "config_id",
    "last_used_option_index",
    "attempts",
    "trace_id",
    "span_id",
    "parent_span_id",
    "span_name",
    "user",
    "metadata",
)
DETAIL_FIELDS = (*LOG_FIELDS, "metadata_changes", "error_message", "client_runtime", "sdk_version")
# The export's fixed columns, in order ("workspace" is the slug; metadata a JSON string).
EXPORT_COLUMNS = (
    "id",
    "created_at",
    "workspace",
    *[f for f in LOG_FIELDS if f not in ("id", "created_at", "metadata")],
    "metadata",
)


class InvalidCursor(ValueError):
    pass


# --- Keyset pagination -------------------------------------------------------------------


def encode_cursor(created_at: datetime, log_id: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), log_id.hex])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) position a cursor names. Its time goes through parse_timestamp like
    any request time: a crafted ``0001-01-01T00:00:00+23:59`` is refused here rather than
    overflowing in SQLite or reaching Postgres unnormalised."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, log_id = orjson.loads(raw)
        if not isinstance(created, str) or not isinstance(log_id, str):
            raise TypeError
        return parse_timestamp(created, param="cursor"), uuid.UUID(hex=log_id)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):  # InvalidParameter is a ValueError
        raise InvalidCursor("Invalid cursor: pass back the next_cursor of the previous page unchanged.") from None


def _after(queryset: QuerySet, position: tuple[datetime, uuid.UUID]) -> QuerySet:
    """Rows strictly after ``position`` in newest-first order. The redundant ``created_at <=``
    bound lets the (workspace, created_at, id) index seek straight to the position."""
    created_at, log_id = position
    return queryset.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=log_id)).filter(
        created_at__lte=created_at
    )


def log_page(
    queryset: QuerySet, *, cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> tuple[list[dict], str | None]:
    """One page of ``queryset`` (already filtered and scoped) as dicts, and the next cursor."""
    if cursor:
        queryset = _after(queryset, decode_cursor(cursor))
    rows = list(queryset.order_by(*ORDERING).values(*LOG_FIELDS)[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["created_at"], rows[-1]["id"])


# --- One log -----------------------------------------------------------------------------


def log_detail(*, workspace: Workspace, log_id: str) -> dict:
    """A log with its bodies and the feedback on its trace; 404 for another tenant's log."""
    try:
        parsed = uuid.UUID(str(log_id))
    except ValueError:
        raise Http404("No such log.") from None
    log = RequestLog.objects.filter(workspace=workspace, id=parsed).values(*DETAIL_FIELDS).first()
    if log is None:
        raise Http404("No such log.")
    body = RequestBody.objects.filter(log_id=parsed).values("request_headers", "request_body", "response_body").first()
    feedback = (
        list(
            Feedback.objects.filter(workspace=workspace, trace_id=log["trace_id"]).values(
                "id", "value", "weight", "metadata", "created_at"
            )[:100]
        )
        if log["trace_id"]
        else []
    )
    return {**log, "workspace": workspace.slug, "body": body, "feedback": feedback}


# --- Export ------------------------------------------------------------------------------


def _export_values(queryset: QuerySet) -> QuerySet:
    # Metadata read as the database's JSON text: written out as is, never decoded per row.
    fields = [f for f in EXPORT_COLUMNS if f not in ("workspace", "metadata")]
    return queryset.annotate(metadata_text=Cast("metadata", TextField())).values_list(*fields, "metadata_text")


def export_chunks(queryset: QuerySet, *, chunk_size: int = EXPORT_CHUNK) -> Iterator[list[tuple]]:
    """Rows of ``queryset`` newest first, ``chunk_size`` per query, each query seeking past the
    previous chunk's last (created_at, id): constant memory, no OFFSET."""
    position = None
    while True:
        page = queryset if position is None else _after(queryset, position)
        rows = list(_export_values(page.order_by(*ORDERING))[:chunk_size])
        if rows:
            yield rows
        if len(rows) < chunk_size:
            return
        position = (rows[-1][1], rows[-1][0])


def _jsonb_text(value: object) -> str:
    """JSON text as Postgres writes a jsonb value, so both export paths agree: object keys by
    length then bytes, ", " and ": " between items."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: (len(item[0].encode()), item[0].encode()))
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_jsonb_text(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return _jsonb_text(value)  # attempts, finish_reasons: JSON, as Postgres' COPY writes jsonb
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return value


def csv_lines(chunks: Iterator[list[tuple]], *, workspace_slug: str) -> Iterator[bytes]:
    """The CSV export: a header line, then one encoded block per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue().encode()
    for rows in chunks:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(
            (_csv_cell(row[0]), _csv_cell(row[1]), workspace_slug, *map(_csv_cell, row[2:])) for row in rows
        )
        yield buffer.getvalue().encode()


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))  # the exact decimal, as a JSON number
    raise TypeError


def jsonl_lines(chunks: Iterator[list[tuple]], *, workspace_slug: str) -> Iterator[bytes]:
    """The JSONL export: one object per log, keys as the CSV columns, metadata an object."""
    names = EXPORT_COLUMNS[3:-1]
    for rows in chunks:
        lines = []
        for row in rows:
            doc = {"id": row[0], "created_at": row[1].isoformat(timespec="microseconds"), "workspace": workspace_slug}
            doc.update(zip(names, row[2:-1], strict=True))
            doc["metadata"] = orjson.Fragment(row[-1] or "{}")
            lines.append(orjson.dumps(doc, default=_json_default))
        yield b"\n".join(lines) + b"\n"


def export_lines(queryset: QuerySet, *, export_format: str, workspace_slug: str) -> Iterator[bytes]:
    """The export's bytes: CSV (header first) or JSONL, in keyset chunks, newest first."""
    if connection.vendor == "postgresql":
        return _postgres_blocks(queryset, export_format=export_format, workspace_slug=workspace_slug)
    encode = csv_lines if export_format == "csv" else jsonl_lines
    return encode(export_chunks(queryset, chunk_size=EXPORT_CHUNK), workspace_slug=workspace_slug)


# Postgres formats the rows itself (COPY for CSV, json_build_object for JSONL): Python only
# moves bytes, which is what makes a large export run at a fraction of plain COPY's speed.
_PG_TIME = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def _pg_columns(workspace_slug: str) -> dict[str, Combinable]:
    def flag(name: str) -> Case:
        return Case(When(**{name: True}, then=Value("true")), default=Value("false"), output_field=TextField())

    columns: dict[str, Combinable] = {}
    for name in EXPORT_COLUMNS:
        if name == "created_at":
            columns[name] = Func(F(name), template=_PG_TIME, output_field=TextField())
        elif name == "workspace":
            columns[name] = Value(workspace_slug, output_field=TextField())
        elif name in ("success", "is_stream"):
            columns[name] = flag(name)
        elif name == "metadata":
            columns[name] = Cast(name, TextField())
        else:
            columns[name] = F(name)
    return {f"x_{name}": expr for name, expr in columns.items()}


def _postgres_blocks(queryset: QuerySet, *, export_format: str, workspace_slug: str) -> Iterator[bytes]:
    columns = _pg_columns(workspace_slug)
    if export_format == "csv":
        yield (",".join(EXPORT_COLUMNS) + "\n").encode()
    position = None
    while True:
        page = (queryset if position is None else _after(queryset, position)).order_by(*ORDERING)
        # The chunk's last key first (an index walk), then every row up to it in one statement.
        last = list(page.values_list("created_at", "id")[EXPORT_CHUNK - 1 : EXPORT_CHUNK])
        if last:
            at, log_id = last[0]
            page = page.filter(Q(created_at__gt=at) | Q(created_at=at, id__gte=log_id)).filter(created_at__gte=at)
        if export_format == "csv":
            block = _copy_csv(page.annotate(**columns).values_list(*columns))
        else:
            block = _json_lines(page, workspace_slug)
        if block:
            yield block
        if not last:
            return
        position = last[0]


def _compiled(rows: QuerySet) -> tuple[str, tuple] | None:
    """The query's SQL and parameters; None when Django knows it matches nothing (a token range
    past the column's maximum, ``prompt_token_min=99999999999``, compiles to EmptyResultSet,
    which the ORM turns into no rows but raw SQL must be told about)."""
    try:
        return rows.query.sql_with_params()
    except EmptyResultSet:
        return None


def _copy_csv(rows: QuerySet) -> bytes:
    compiled = _compiled(rows)
    return _copy_statement(*compiled) if compiled else b""


def _copy_statement(sql: str, params: tuple, options: str = "") -> bytes:
    statement = f"COPY ({sql}) TO STDOUT (FORMAT csv{', ' + options if options else ''})"
    with connection.cursor() as wrapper, wrapper.cursor.copy(statement, params) as copy:
        return b"".join(bytes(block) for block in copy)


def _json_lines(page: QuerySet, workspace_slug: str) -> bytes:
    """JSONL by ``row_to_json`` over the export columns, renamed to their JSON keys: Postgres
    writes each row's JSON in one pass in C (booleans, numbers and NULLs as JSON, strings
    escaped, metadata as its jsonb text); created_at is formatted as the CSV has it."""
    columns: dict[str, Combinable] = {}
    for name in EXPORT_COLUMNS:
        if name == "created_at":
            columns[f"x_{name}"] = Func(F(name), template=_PG_TIME, output_field=TextField())
        elif name == "workspace":
            columns[f"x_{name}"] = Value(workspace_slug, output_field=TextField())
        else:
            columns[f"x_{name}"] = F(name)
    compiled = _compiled(page.annotate(**columns).values_list(*columns))
    if compiled is None:
        return b""
    sql, params = compiled
    renamed = ", ".join(f'i."x_{name}" AS "{name}"' for name in EXPORT_COLUMNS)
    # The inner query keeps its ORDER BY (a sorted subquery is not flattened). One CSV column
    # whose quote and delimiter are control characters, which JSON text never holds raw: COPY
    # then writes each document as is, one per line.
    return _copy_statement(
        f"SELECT row_to_json(r) FROM (SELECT {renamed} FROM ({sql}) i) r",  # noqa: S608
        params,
        options="QUOTE E'\\x01', DELIMITER E'\\x02'",
    )


async def aiterate(iterator: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Serve a sync export iterator to an ASGI server chunk by chunk. (Django buffers a sync
    iterator whole under ASGI; each step here runs in the request's thread instead.)"""
    step = sync_to_async(lambda: next(iterator, None), thread_sensitive=True)
    while (chunk := await step()) is not None:
        yield chunk


# --- Metadata key registry ---------------------------------------------------------------


def metadata_keys(*, workspace: Workspace, top: int = 10) -> list[dict]:
    rows = MetadataKey.objects.filter(workspace=workspace).order_by("key")
    result = []
    for row in rows:
        values = sorted((row.top_values or {}).items(), key=lambda item: (-item[1], item[0]))[:top]
        result.append(
            {
                "key": row.key,
                "first_seen": row.first_seen,
                "last_seen": row.last_seen,
                "requests": row.requests,
                "distinct_values": row.distinct_values,
                "distinct_values_capped": row.distinct_values >= MetadataKey.VALUE_CAP,
                "top_values": [{"value": value, "requests": count} for value, count in values],
            }
        )
    return result
