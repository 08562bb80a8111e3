"""Log export jobs as Portkey's API has them (``/v1/logs/exports``): a draft holds filters and
the requested fields; ``start`` runs it; ``download`` hands out a signed link to the JSONL.

One job holds at most LOG_EXPORT_MAX_LOGS logs (50,000, Portkey's limit), newest first. Running
walks the same keyset chunks as the streamed export (``selectors.export_chunks``) and stores
each chunk's JSONL gzip-compressed (LogExportChunk), so a job's file is what matched when it
ran, whatever arrives or expires later, and memory stays flat both ways. It runs inside the
``start`` request: a capped export is one indexed walk, and answering ``success`` at once
spares clients a worker round trip. ``cancel`` of a running job (from another request) is
noticed between chunks.

Rows carry Portkey's field names (:data:`FIELDS`); money is in cents as everywhere on
Portkey's paths.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import uuid
from collections.abc import Iterator

import orjson
from django.core import signing
from django.db import transaction

from analytics import portkey, selectors
from analytics.models import LogExport, LogExportChunk, RequestBody
from config.parsing import InvalidParameter, clean_text
from workspaces.models import ApiKey, Workspace

logger = logging.getLogger(__name__)

# Portkey's requested_data names -> the export row column they are read from (None: computed).
FIELDS = {
    "id": "id",
    "trace_id": "trace_id",
    "created_at": "created_at",
    "request": None,
    "response": None,
    "is_success": "success",
    "ai_org": "provider",
    "ai_model": "model",
    "req_units": "prompt_tokens",
    "res_units": "completion_tokens",
    "total_units": "total_tokens",
    "request_url": "endpoint",
    "cost": "cost",
    "cost_currency": "currency",
    "response_time": "latency_ms",
    "response_status_code": "status_code",
    "mode": None,
    "config": "config_id",
    "prompt_slug": None,
    "metadata": "metadata_text",
    # Portico's own extras.
    "span_id": "span_id",
    "parent_span_id": "parent_span_id",
    "span_name": "span_name",
    "user": "user",
    "api_key_id": "api_key_id",
    "cache_status": "cache_status",
    "cache_saved_cost": "cache_saved_cost",
    "retry_count": "retry_count",
    "last_used_option_index": "last_used_option_index",
    "attempts": "attempts",
    "is_stream": "is_stream",
    "finish_reasons": "finish_reasons",
    "cached_prompt_tokens": "cached_prompt_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "audio_prompt_tokens": "audio_prompt_tokens",
    "audio_completion_tokens": "audio_completion_tokens",
    "price_version": "price_version",
}
PORTKEY_FIELDS = list(FIELDS)[: list(FIELDS).index("metadata") + 1]
# The columns of selectors.export_chunks' tuples, in order.
_COLUMNS = [*[c for c in selectors.EXPORT_COLUMNS if c not in ("workspace", "metadata")], "metadata_text"]
LINK_SECONDS = 3600
_SIGNER_SALT = "portico.log-export"


class ExportStateError(ValueError):
    """The job is not in a state that allows this action."""


# --- Drafts ------------------------------------------------------------------------------


def _requested(requested_data: object) -> list[str]:
    if requested_data is None or requested_data == []:
        return list(PORTKEY_FIELDS)
    if not isinstance(requested_data, list):
        raise InvalidParameter("requested_data", "Send a list of field names.")
    for index, name in enumerate(requested_data):
        if not isinstance(name, str) or name not in FIELDS:  # a list or object is unhashable: a 500
            raise InvalidParameter(f"requested_data[{index}]", f"Unknown field; use: {', '.join(FIELDS)}.")
    return list(dict.fromkeys(requested_data))


def _matching(workspace: Workspace, filters: dict) -> tuple[object, int, int]:
    """(queryset, limit, offset) of the logs a job's filters select; raises InvalidParameter."""
    query, limit, offset = portkey.export_filters(filters)
    log_filter = portkey.log_filter(query, workspace=workspace, extra_params=(), prefix="filters.")
    return log_filter.qs, limit, offset


def _count(queryset, limit: int, offset: int) -> int:
    # Bounded: never counts past the job's own cap.
    return queryset.order_by()[offset : offset + limit].count()


def export_create(
    *, api_key: ApiKey, filters: object, requested_data: object = None, description: object = ""
) -> LogExport:
    """A draft job; ``total_records`` is how many logs match now (capped)."""
    workspace = api_key.workspace
    queryset, limit, offset = _matching(workspace, filters or {})
    export = LogExport(
        workspace=workspace,
        created_by=api_key,
        description=clean_text(description or "", param="description", max_length=500),
        filters=filters or {},
        requested_data=_requested(requested_data),
        total_records=_count(queryset, limit, offset),
    )
    export.full_clean()
    export.save()
    return export


def export_update(*, export: LogExport, filters: object = None, requested_data: object = None) -> LogExport:
    """Change a draft's filters and/or fields."""
    if export.status != LogExport.Status.DRAFT:
        raise ExportStateError(f"Only a draft export can be changed; this one is {export.status}.")
    if filters is not None:
        queryset, limit, offset = _matching(export.workspace, filters)
        export.filters = filters
        export.total_records = _count(queryset, limit, offset)
    if requested_data is not None:
        export.requested_data = _requested(requested_data)
    export.full_clean()
    export.save()
    return export


def export_cancel(*, export: LogExport) -> LogExport:
    if export.status not in (LogExport.Status.DRAFT, LogExport.Status.IN_PROGRESS):
        raise ExportStateError(f"Only a draft or running export can be cancelled; this one is {export.status}.")
    LogExport.objects.filter(pk=export.pk).update(status=LogExport.Status.STOPPED)
    export.refresh_from_db()
    return export


# --- Running -----------------------------------------------------------------------------


def export_start(*, export: LogExport) -> LogExport:
    """Run a draft: in_progress, then success (chunks stored), stopped or failed."""
    claimed = LogExport.objects.filter(pk=export.pk, status=LogExport.Status.DRAFT).update(
        status=LogExport.Status.IN_PROGRESS
    )
    if not claimed:
        export.refresh_from_db()
        raise ExportStateError(f"Only a draft export can be started; this one is {export.status}.")
    try:
        written = _run(export)
    except Exception as exc:  # recorded on the job, which the client polls
        logger.exception("log export %s failed", export.pk)
        LogExportChunk.objects.filter(export=export).delete()
        LogExport.objects.filter(pk=export.pk).update(status=LogExport.Status.FAILED, error_message=str(exc)[:1000])
    else:
        with transaction.atomic():
            finished = LogExport.objects.filter(pk=export.pk, status=LogExport.Status.IN_PROGRESS).update(
                status=LogExport.Status.SUCCESS, total_records=written
            )
            if not finished:  # cancelled meanwhile
                LogExportChunk.objects.filter(export=export).delete()
    export.refresh_from_db()
    return export


def _run(export: LogExport) -> int:
    queryset, limit, offset = _matching(export.workspace, export.filters)
    rows = itertools.chain.from_iterable(selectors.export_chunks(queryset))
    rows = itertools.islice(rows, offset, offset + limit)
    written = 0
    for seq, batch in enumerate(_batches(rows, selectors.EXPORT_CHUNK)):
        if LogExport.objects.filter(pk=export.pk, status=LogExport.Status.STOPPED).exists():
            LogExportChunk.objects.filter(export=export).delete()
            return written
        lines = _jsonl(batch, export.requested_data)
        LogExportChunk.objects.create(export=export, seq=seq, data=gzip.compress(lines, compresslevel=5))
        written += len(batch)
    return written


def _batches(rows: Iterator[tuple], size: int) -> Iterator[tuple[tuple, ...]]:
    while batch := tuple(itertools.islice(rows, size)):
        yield batch


def _jsonl(rows: tuple[tuple, ...], requested: list[str]) -> bytes:
    bodies = {}
    if "request" in requested or "response" in requested:
        ids = [row[0] for row in rows]
        bodies = {
            log_id: (request, response)
            for log_id, request, response in RequestBody.objects.filter(log_id__in=ids).values_list(
                "log_id", "request_body", "response_body"
            )
        }
    lines = []
    for row in rows:
        values = dict(zip(_COLUMNS, row, strict=True))
        body = bodies.get(values["id"], (None, None))
        doc = {name: _value(name, values, body) for name in requested}
        lines.append(orjson.dumps(doc))
    return b"\n".join(lines) + b"\n"


def _value(name: str, values: dict, body: tuple[str | None, str | None]) -> object:
    if name in ("request", "response"):
        return _json_or_text(body[0 if name == "request" else 1])
    if name == "mode":
        # The strategy is not stored on the log: "single" is only claimed without a config.
        return None if values["config_id"] else "single"
    if name == "prompt_slug":
        return None
    value = values[FIELDS[name]]
    if name == "config":
        return value or None
    if name == "created_at":
        return value.isoformat(timespec="microseconds")
    if name in ("cost", "cache_saved_cost"):
        return portkey.cents(value, 8)
    if name == "metadata":
        return orjson.Fragment(value or "{}")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _json_or_text(text: str | None) -> object:
    if not text:
        return None
    try:
        return orjson.Fragment(orjson.dumps(orjson.loads(text)))
    except orjson.JSONDecodeError:
        return text


# --- Download ----------------------------------------------------------------------------


def download_token(export: LogExport) -> str:
    """A token for the export's file link, valid LINK_SECONDS (like a pre-signed URL)."""
    if export.status != LogExport.Status.SUCCESS:
        raise ExportStateError(f"The export is {export.status}: start it and wait for success before downloading.")
    return signing.TimestampSigner(salt=_SIGNER_SALT).sign(str(export.pk)).split(":", 1)[1]


def export_for_token(export_id: str, token: str) -> LogExport | None:
    """The finished export a download link names, or None when the link is wrong or expired."""
    try:
        signing.TimestampSigner(salt=_SIGNER_SALT).unsign(f"{export_id}:{token}", max_age=LINK_SECONDS)
    except signing.BadSignature:  # also SignatureExpired
        return None
    return LogExport.objects.filter(pk=export_id, status=LogExport.Status.SUCCESS).first()


def file_lines(export: LogExport) -> Iterator[bytes]:
    """The export's JSONL, one stored chunk at a time."""
    chunks = LogExportChunk.objects.filter(export=export).order_by("seq").values_list("data", flat=True)
    for data in chunks.iterator(chunk_size=1):
        yield gzip.decompress(bytes(data))
