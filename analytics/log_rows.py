"""Log records (analytics.logrecord.LogRecord) -> RequestLog rows: the writer's defensive
coercion. Records arrive as JSON from other processes (Redis, the spool), so nothing is
trusted: each field is coerced to its column (text cut to its length, NULs dropped, numbers
range-checked), and a record that cannot be stored raises MalformedRecord, which skips that
record (logged, counted by analytics.ingest), never the batch it travels in. ``coerce_fast``
takes the common well-formed record in one pass; ``coerce_log`` is the reference it must agree
with (tests/analytics/test_ingest_fast_path.py).
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from django.db import models

from analytics.logrecord import REQUIRED_KEYS
from analytics.models import RequestLog

logger = logging.getLogger("analytics.ingest")  # the writer's log, where operators look

# REQUIRED_KEYS: created_at among them because on Postgres it is part of the conflict target,
# so a record that got a fresh timestamp per delivery could be inserted twice.
_SMALLINT_MAX = 32767
_INT_MAX = 2147483647
_COST_LIMIT = Decimal(10) ** 10  # DecimalField(max_digits=18, decimal_places=8)
_COST_QUANTUM = Decimal("0.00000001")


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
    # None never reaches a coercer: coerce_log maps it to NULL or the field default.
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
LOG_FIELDS = [(f.attname, f.column, _coercer(f), f) for f in RequestLog._meta.concrete_fields]
JSON_COLUMNS = [f.attname for f in RequestLog._meta.concrete_fields if isinstance(f, models.JSONField)]


def coerce_log(record: dict) -> dict:
    """A full row (every concrete field, by attname) from one record; raises MalformedRecord."""
    if not isinstance(record, dict):
        raise MalformedRecord(f"expected an object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if record.get(key) is None]
    if missing:
        raise MalformedRecord(f"missing {', '.join(missing)}")
    row = {}
    for attname, _column, coerce, field in LOG_FIELDS:
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
# key) goes through coerce_log instead, which stays the reference for every rule. A value is
# only taken here when coerce_log would return an equal one.
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
        plan.append((field.attname, kind, low, high, required, field.null, field))
    return plan


# The checks of each kind, as source: ``v`` is the value, ``L``/``H`` the bounds (or the JSON
# type), and a value that would need coercing returns None (the record goes to coerce_log).
_CHECKS = {
    _KIND_TEXT: ["if type(v) is not str or len(v) > H or '\\x00' in v: return None"],
    _KIND_INT: ["if type(v) is not int or not L <= v <= H: return None"],
    _KIND_FLOAT: [
        "if type(v) is float:",
        "    if not isfinite(v): return None",
        "elif type(v) is int: v = float(v)",
        "else: return None",
    ],
    _KIND_BOOL: ["if type(v) is not bool: return None"],
    _KIND_UUID: ["if type(v) is not str or not uuid_text(v): return None", "v = UUID(v)"],
    _KIND_TIME: [
        "if type(v) is not str: return None",
        "try: v = fromisoformat(v)",
        "except ValueError: return None",
        "if v.tzinfo is None: v = v.replace(tzinfo=UTC)",
    ],
    _KIND_DECIMAL: [
        "if type(v) is not str or not decimal_text(v): return None",
        "v = Decimal(v).quantize(QUANTUM)",
    ],
    _KIND_JSON: ["if type(v) is not H: return None"],
}
_IMMUTABLE = (str, int, float, bool, Decimal, type(None))


def _compile_fast() -> Callable[[Any], dict | None]:
    """coerce_fast, generated from _fast_plan: one straight-line function with each field's
    check inlined (no per-field loop, kind dispatch or Field.get_default call), ~3x cheaper
    than walking the plan per record; what it accepts and returns is unchanged."""
    namespace: dict[str, Any] = {
        "isfinite": math.isfinite,
        "uuid_text": _CANONICAL_UUID.fullmatch,
        "UUID": uuid.UUID,
        "fromisoformat": datetime.fromisoformat,
        "UTC": UTC,
        "decimal_text": _DECIMAL_TEXT.fullmatch,
        "Decimal": Decimal,
        "QUANTUM": _COST_QUANTUM,
    }
    lines = ["def coerce_fast(record):", "    if type(record) is not dict: return None", "    get = record.get"]
    names = []
    for number, (attname, kind, low, high, required, null, field) in enumerate(_FAST_PLAN):
        namespace[f"L{number}"], namespace[f"H{number}"] = low, high
        if required:
            missing = "return None"
        elif null:
            missing = f"r{number} = None"
        elif field.has_default() and callable(field.default):
            namespace[f"D{number}"] = field.default  # dict, list: a fresh object per row
            missing = f"r{number} = D{number}()"
        else:
            default = field.get_default()
            if not isinstance(default, _IMMUTABLE):
                raise TypeError(f"coerce_fast: {attname} has a shared mutable default")
            namespace[f"D{number}"] = default
            missing = f"r{number} = D{number}"
        lines += [f"    v = get({attname!r})", "    if v is None:", f"        {missing}", "    else:"]
        for check in _CHECKS[kind]:
            lines.append(
                "        "
                + check.replace("L <=", f"L{number} <=")
                .replace("<= H", f"<= H{number}")
                .replace("> H", f"> H{number}")
                .replace("is not H", f"is not H{number}")
            )
        lines.append(f"        r{number} = v")
        names.append(f"{attname!r}: r{number}")
    lines.append("    return {" + ", ".join(names) + "}")
    exec(compile("\n".join(lines), "<analytics.log_rows.coerce_fast>", "exec"), namespace)  # noqa: S102
    return namespace["coerce_fast"]


_FAST_PLAN = _fast_plan()
coerce_fast = _compile_fast()
coerce_fast.__doc__ = "The row coerce_log would build, for a record needing no coercion; otherwise None."


_ONLY_STR = frozenset((str,))


def _json_text(value: Any) -> tuple[Any, str]:
    """(the value as stored, its JSON text): the text is what COPY writes, the value is what
    the rollups read, so both must agree. A JSON-born object of strings is its own stored form;
    anything else is read back from its text (NUL characters dropped, odd types as strings)."""
    kind = type(value)
    if kind is list:
        if not value:
            return value, "[]"
        plain = set(map(type, value)) <= _ONLY_STR
    elif kind is dict:
        if not value:
            return value, "{}"
        plain = set(map(type, value.values())) <= _ONLY_STR  # keys: orjson refuses non-str ones
    else:
        plain = False
    if plain:
        try:
            encoded = orjson.dumps(value)
        except TypeError:
            encoded = b"\\u0000"  # not a plain object after all: the general path below
        if b"\\u0000" not in encoded:
            return value, encoded.decode()
    text = dump_json(value)
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


def dump_json(value: Any) -> str:
    encoded = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    if b"\\u0000" in encoded:
        encoded = orjson.dumps(_scrub_json(value), default=str, option=orjson.OPT_NON_STR_KEYS)
    return encoded.decode()


def prepare(
    records: Iterable[Any],
) -> tuple[list[dict], dict[uuid.UUID, dict], dict[uuid.UUID, list[str]], int]:
    """Coerced rows (first occurrence of each id), bodies by id, the JSON columns' text by id
    (what COPY writes), and how many malformed records were skipped."""
    malformed = 0
    rows: list[dict] = []
    bodies: dict[uuid.UUID, dict] = {}
    json_texts: dict[uuid.UUID, list[str]] = {}
    for record in records:
        try:
            row = coerce_fast(record) or coerce_log(record)
            texts = []
            for attname in JSON_COLUMNS:
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
            malformed += 1
            continue
        if row["id"] in json_texts:  # a repeated id: the first occurrence counts
            continue
        rows.append(row)
        json_texts[row["id"]] = texts
        if body is not None:
            bodies[row["id"]] = body
    return rows, bodies, json_texts, malformed
