"""A dashboard group table as a file (the Summary page's CSV and JSONL export)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal

import orjson

from analytics.reads.window import Window

EXPORT_COLUMNS = (
    "value",
    "requests",
    "cost",
    "unpriced_requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_prompt_tokens",
    "audio_completion_tokens",
    "avg_tokens",
    "avg_latency",
    "p95_latency",
    "success_rate",
    "errors",
    "last_seen",
)


def _export_cell(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def export_group_rows(rows: list[dict], fmt: str, *, group: str, window: Window) -> str:
    """A group table as CSV (header + rows) or JSONL (one object per row, with the grouping
    and window so a file explains itself)."""
    if fmt == "jsonl":
        lines = []
        for row in rows:
            doc = {"group_by": group, "start": window.start.isoformat(), "end": window.end.isoformat()}
            doc.update({name: _export_cell(row[name]) for name in EXPORT_COLUMNS})
            lines.append(orjson.dumps(doc).decode())
        return "\n".join(lines) + ("\n" if lines else "")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[name] is None else _export_cell(row[name]) for name in EXPORT_COLUMNS])
    return buffer.getvalue()
