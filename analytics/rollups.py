"""Hourly rollups and the metadata key registry, kept up to date by the log writer.

``apply_rows(rows)`` is called by ``analytics.ingest.write_log_batch`` inside the transaction that
inserted the rows, with only the rows that were new (a redelivered batch adds nothing), and by
``analytics.recompute.rebuild_rollups`` with rows read back from RequestLog, so a rebuild computes
what ingestion computed. A row counts:

- once in DimensionRollup under (workspace, hour, provider, model, api key or 0, status_code // 100,
  status_code);
- once in MetadataRollup per metadata key, under (workspace, key, hour, value). String values are
  used as they are, numbers and booleans as their JSON text, cut to 128 characters; null,
  objects and arrays, and keys longer than 128 characters, are not grouped.

``errors`` counts rows with ``success`` false; ``cost`` sums priced rows only (``cost`` not NULL)
and ``priced_requests`` counts them; ``unpriced_requests`` counts rows with tokens but no cost
(a model without a price: "N requests with no price"); the token parts (cached prompt, cache
write, reasoning, audio) are summed like the prompt and completion tokens; ``last_seen`` is the latest ``created_at``; the latency
histogram is analytics.histogram's, merged by adding counts.

High-cardinality cap: per (workspace, key, hour) at most ``settings.ROLLUP_VALUE_CAP`` distinct
values get a row of their own. First come, first served: values already holding a row keep it;
a value new to the hour takes a free slot if one is left, otherwise it is counted under
``MetadataRollup.OTHER_VALUE`` ("(other)"). "First" is the order rows are applied in: batch by
batch, and within a batch (or a rebuild, which reads logs in that order) by (created_at, id).
So totals per key and hour are always exact; which values have their own row can differ
between live ingestion and a rebuild when logs arrived out of order. A metadata value that is
literally "(other)" is counted with the folded values.

Concurrency (Postgres), with transaction-scoped advisory locks, always taken in the same order:
1. a SHARED lock per workspace of the batch (sorted), which a rebuild of that workspace takes
   EXCLUSIVE: writers wait while a workspace is rebuilt, and their logs (not yet committed, so
   not seen by the rebuild) are then counted once, by themselves;
2. an exclusive lock per (workspace, key) of the batch (sorted). Under it a writer counts the
   hour's existing values (the cap is exact across concurrent workers) and updates the key's
   registry row (select-then-update is safe).
Rollup rows are upserted with ``INSERT ... ON CONFLICT DO UPDATE`` adding the counters and
merging histograms in SQL (``portico_hist_merge``, migration 0005). DimensionRollup rows are not
covered by the key locks; they are upserted in sorted key order, which keeps concurrent writers
from deadlocking. A hash collision between lock ids only makes two workspaces or keys share a
lock (more waiting, never a wrong count). On SQLite writers are serialised by the database
(BEGIN IMMEDIATE): plain select-then-update/insert.

MetadataKeySender (which API keys send a key: first/last seen, requests) is updated under the same
key locks. A partial rebuild (``since``) leaves it as it is; a full rebuild recomputes it.

The registry (MetadataKey) is updated in the same transaction: first/last seen and requests
exactly; ``top_values`` adds counts to values it holds and admits new values while it has fewer
than ``MetadataKey.VALUE_CAP`` (it never evicts), ``distinct_values`` is its size. The periodic
``analytics.recompute.refresh_metadata_keys`` recomputes both from the rollups (top values by requests, "(other)"
excluded), which also corrects for rollups removed by retention.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import reduce
from operator import or_
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.db import connection, models
from django.db.models import Q

from analytics import histogram
from analytics.models import ROLLUP_TOTALS, TOKEN_PARTS, DimensionRollup, MetadataKey, MetadataKeySender, MetadataRollup

OTHER = MetadataRollup.OTHER_VALUE
KEY_MAX_LENGTH = MetadataRollup._meta.get_field("key").max_length
VALUE_MAX_LENGTH = MetadataRollup._meta.get_field("value").max_length
# RequestLog fields the rollups read (attnames, as ingest's coerced rows carry them).
LOG_FIELDS = (
    "id",
    "created_at",
    "workspace_id",
    "api_key_id",
    "provider",
    "model",
    "status_code",
    "success",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_prompt_tokens",
    "audio_completion_tokens",
    "cost",
    "metadata",
)


MetadataGroup = tuple[int, str, datetime]  # workspace_id, key, bucket
DimensionKey = tuple[int, datetime, str, str, int, int, int]  # workspace, bucket, provider, model, key, class, code
SenderKey = tuple[int, str, int]  # workspace, metadata key, api key or 0


def hour_of(moment: datetime) -> datetime:
    """Start of the UTC hour holding ``moment`` (an aware datetime)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def metadata_items(metadata: Any) -> list[tuple[str, str]]:
    """The (key, value) pairs of a log's metadata that rollups group by (rules in the docstring)."""
    if not isinstance(metadata, dict):
        return []
    items = []
    for key, value in metadata.items():
        if type(key) is not str or not key or len(key) > KEY_MAX_LENGTH:
            continue
        if type(value) is str:
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = str(value)
        else:
            continue
        items.append((key, text[:VALUE_MAX_LENGTH]))
    return items


class Totals:
    """The additive metrics of one rollup row (RollupMetrics' fields)."""

    FIELDS = ROLLUP_TOTALS
    __slots__ = FIELDS

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        for name in TOKEN_PARTS:
            setattr(self, name, 0)
        self.cost = Decimal(0)
        self.priced_requests = 0
        self.unpriced_requests = 0
        self.latency_sum_ms = 0.0
        self.latency_hist: dict[str, int] = {}
        self.last_seen: datetime | None = None

    @classmethod
    def of(cls, contributions: list[Contribution]) -> Totals:
        """Totals of logs' contributions."""
        totals = cls()
        totals.requests = len(contributions)
        totals.errors = sum(1 for c in contributions if not c.success)
        totals.prompt_tokens = sum(c.prompt_tokens for c in contributions)
        totals.completion_tokens = sum(c.completion_tokens for c in contributions)
        # Most logs have no parts: one pass finds the ones that do.
        with_parts = [c.parts for c in contributions if c.parts is not None]
        if with_parts:
            for name, total in zip(TOKEN_PARTS, map(sum, zip(*with_parts, strict=True)), strict=True):
                setattr(totals, name, total)
        priced = [c.cost for c in contributions if c.cost is not None]
        totals.cost = sum(priced, Decimal(0))
        totals.priced_requests = len(priced)
        totals.unpriced_requests = sum(1 for c in contributions if c.cost is None and c.tokens)
        totals.latency_sum_ms = sum(c.latency_ms for c in contributions)
        totals.latency_hist = dict(Counter(c.hist_key for c in contributions))
        totals.last_seen = max(c.created_at for c in contributions)
        return totals

    def merge_into(self, row: models.Model) -> None:
        """Add these totals to a stored rollup row (the SQLite path)."""
        row.requests += self.requests
        row.errors += self.errors
        row.prompt_tokens += self.prompt_tokens
        row.completion_tokens += self.completion_tokens
        for name in TOKEN_PARTS:
            setattr(row, name, getattr(row, name) + getattr(self, name))
        row.cost += self.cost
        row.priced_requests += self.priced_requests
        row.unpriced_requests += self.unpriced_requests
        row.latency_sum_ms += self.latency_sum_ms
        row.latency_hist = histogram.merge(dict(row.latency_hist or {}), self.latency_hist)
        if row.last_seen is None or (self.last_seen is not None and self.last_seen > row.last_seen):
            row.last_seen = self.last_seen

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}


class Contribution(NamedTuple):
    """What one log adds to each rollup row it counts in."""

    created_at: datetime
    success: bool
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal | None
    latency_ms: float
    hist_key: str
    parts: tuple[int, ...] | None  # TOKEN_PARTS' counts, None when all are 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class KeyStats:
    """What one batch adds to a registry row."""

    first_seen: datetime
    last_seen: datetime
    requests: int = 0
    values: Counter[str] = field(default_factory=Counter)


@dataclass
class BatchRollup:
    """A batch's contributions grouped per rollup row (summed once the cap is applied)."""

    # Values in order of first appearance: the cap gives free slots in this order.
    metadata: dict[MetadataGroup, dict[str, list[Contribution]]] = field(default_factory=dict)
    dimensions: dict[DimensionKey, list[Contribution]] = field(default_factory=dict)
    # (workspace, api key or 0, the row's metadata keys) -> [first, last, requests]: rows of one
    # client mostly carry the same keys, so this is one dict update per row, expanded per key later.
    senders: dict[tuple[int, int, tuple[str, ...]], list] = field(default_factory=dict)

    def sender_stats(self) -> dict[SenderKey, list]:
        stats: dict[SenderKey, list] = {}
        for (workspace_id, api_key_id, keys), (first, last, requests) in self.senders.items():
            for key in keys:
                current = stats.get((workspace_id, key, api_key_id))
                if current is None:
                    stats[(workspace_id, key, api_key_id)] = [first, last, requests]
                else:
                    current[0], current[1] = min(current[0], first), max(current[1], last)
                    current[2] += requests
        return stats

    def key_stats(self) -> dict[tuple[int, str], KeyStats]:
        keys: dict[tuple[int, str], KeyStats] = {}
        for (workspace_id, key, _bucket), values in self.metadata.items():
            for value, group in values.items():
                # Groups are in (created_at, id) order: first and last are the extremes.
                first, last = group[0].created_at, group[-1].created_at
                stats = keys.get((workspace_id, key))
                if stats is None:
                    stats = keys[(workspace_id, key)] = KeyStats(first, last)
                stats.first_seen, stats.last_seen = min(stats.first_seen, first), max(stats.last_seen, last)
                stats.requests += len(group)
                stats.values[value] += len(group)
        return keys


def _metadata_item(key: Any, value: Any) -> tuple[str, str] | None:
    """One (key, value) pair as metadata_items groups it, or None."""
    items = metadata_items({key: value})
    return items[0] if items else None


def aggregate(rows: Iterable[dict]) -> BatchRollup:
    """Group rows' (dicts with LOG_FIELDS) contributions per rollup row, before the cap.

    Contributions are summed per row only after the cap folded the groups (summing lists with
    sum() runs in C; adding field by field per log and key costs several times more). This
    runs for every log the writer stores, so the common cases are inlined: string metadata
    values (anything else goes through metadata_items' rules), hours and histogram buckets
    memoised per batch.
    """
    batch = BatchRollup()
    metadata, dimensions, senders = batch.metadata, batch.dimensions, batch.senders
    hours: dict[int, datetime] = {}
    hist_keys: dict[float, str] = {}
    for row in sorted(rows, key=_by_time):
        workspace_id, created_at = row["workspace_id"], row["created_at"]
        hour_number = int(created_at.timestamp()) // 3600
        bucket = hours.get(hour_number)
        if bucket is None:
            bucket = hours[hour_number] = hour_of(created_at)
        latency = row["latency_ms"]
        hist_key = hist_keys.get(latency)
        if hist_key is None:
            hist_key = hist_keys[latency] = str(histogram.bucket_of(latency))
        parts = (
            row["cached_prompt_tokens"],
            row["cache_write_tokens"],
            row["reasoning_tokens"],
            row["audio_prompt_tokens"],
            row["audio_completion_tokens"],
        )
        contribution = Contribution(
            created_at,
            row["success"],
            row["prompt_tokens"],
            row["completion_tokens"],
            row["cost"],
            latency,
            hist_key,
            parts if any(parts) else None,
        )
        status, api_key_id = row["status_code"], row["api_key_id"] or 0
        dimension = (workspace_id, bucket, row["provider"], row["model"], api_key_id, status // 100, status)
        group = dimensions.get(dimension)
        if group is None:
            dimensions[dimension] = [contribution]
        else:
            group.append(contribution)
        row_metadata = row["metadata"]
        if not row_metadata or type(row_metadata) is not dict:
            continue
        keys = []
        for key, value in row_metadata.items():
            if type(value) is not str or type(key) is not str or not 0 < len(key) <= KEY_MAX_LENGTH:
                item = _metadata_item(key, value)
                if item is None:
                    continue
                key, value = item
            elif len(value) > VALUE_MAX_LENGTH:
                value = value[:VALUE_MAX_LENGTH]
            keys.append(key)
            values = metadata.get((workspace_id, key, bucket))
            if values is None:
                metadata[(workspace_id, key, bucket)] = {value: [contribution]}
            else:
                group = values.get(value)
                if group is None:
                    values[value] = [contribution]
                else:
                    group.append(contribution)
        if keys:
            signature = (workspace_id, api_key_id, tuple(keys))
            sender = senders.get(signature)
            if sender is None:
                senders[signature] = [created_at, created_at, 1]
            else:
                sender[1] = created_at  # rows are in created_at order
                sender[2] += 1
    return batch


def _by_time(row: dict) -> tuple:
    # The id's integer (a slot): comparing UUID objects runs Python code on every tie, and
    # records of one gateway flush often share a timestamp to the microsecond.
    return row["created_at"], row["id"].int


# --- Applying a batch ---------------------------------------------------------------------


def apply_rows(rows: list[dict], *, lock: bool = True, senders: bool = True) -> None:
    """Add ``rows`` (new RequestLog rows, as dicts with LOG_FIELDS) to the rollups and registry.

    Must run inside the transaction that wrote the rows. ``lock=False`` is for callers that
    already exclude concurrent writers (a rebuild holds its workspace's lock exclusively);
    ``senders=False`` leaves MetadataKeySender alone (a partial rebuild).
    """
    if not rows:
        return
    batch = aggregate(rows)
    keys = batch.key_stats()
    if lock and connection.vendor == "postgresql":
        lock_for_writing({dimension[0] for dimension in batch.dimensions}, keys)
    folded = fold_capped(batch.metadata, existing_values(batch.metadata), settings.ROLLUP_VALUE_CAP)
    upsert(MetadataRollup, [(key, Totals.of(group)) for key, group in folded])
    upsert(DimensionRollup, [(key, Totals.of(group)) for key, group in sorted(batch.dimensions.items())])
    update_registry(keys)
    if senders:
        update_senders(batch.sender_stats())


def lock_for_writing(workspace_ids: Iterable[int], keys: Iterable[tuple[int, str]]) -> None:
    """Postgres: take the advisory locks for writing these workspaces' rollups and these
    (workspace, key)s' registry rows in this transaction: shared workspace locks, then key
    locks (see the module docstring)."""
    _advisory_locks("pg_advisory_xact_lock_shared", [_lock_id("workspace", w) for w in workspace_ids])
    _advisory_locks("pg_advisory_xact_lock", [_lock_id("key", w, key) for w, key in keys])


def lock_workspace(workspace_id: int) -> None:
    """Postgres: exclude every rollup writer of this workspace until the transaction ends."""
    _advisory_locks("pg_advisory_xact_lock", [_lock_id("workspace", workspace_id)])


def _advisory_locks(function: str, lock_ids: list[int]) -> None:
    if lock_ids:
        with connection.cursor() as cursor:
            # Sorted, and unnest keeps the array's order: locks are always taken low to high.
            sql = f"SELECT {function}(k) FROM unnest(%s::bigint[]) AS k"  # noqa: S608 (a fixed function name)
            cursor.execute(sql, [sorted(set(lock_ids))])


def _lock_id(*parts: object) -> int:
    digest = hashlib.blake2b(":".join(map(str, ("portico-rollup", *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def existing_values(groups: Iterable[MetadataGroup]) -> dict[MetadataGroup, set[str]]:
    """Values that already have a row, per (workspace, key, hour)."""
    groups = set(groups)
    if not groups:
        return {}
    # Three IN lists (index ranges on the unique index) select a superset of the groups
    # (their cross product); a long OR of the exact groups costs more to build than to run.
    rows = MetadataRollup.objects.filter(
        workspace_id__in={g[0] for g in groups}, key__in={g[1] for g in groups}, bucket__in={g[2] for g in groups}
    ).values_list("workspace_id", "key", "bucket", "value")
    found: dict[MetadataGroup, set[str]] = {}
    for workspace_id, key, bucket, value in rows:
        if (workspace_id, key, bucket) in groups:
            found.setdefault((workspace_id, key, bucket), set()).add(value)
    return found


def fold_capped(
    groups: dict[MetadataGroup, dict[str, list[Contribution]]], existing: dict[MetadataGroup, set[str]], cap: int
) -> list[tuple[tuple, list[Contribution]]]:
    """Rows to upsert, keyed (workspace, key, bucket, value), with the cap applied (see docstring)."""
    result = []
    for group, values in sorted(groups.items()):
        have = existing.get(group, set())
        free = cap - len(have - {OTHER})
        other: list[Contribution] = []
        for value, contributions in values.items():
            if value != OTHER and (value in have or free > 0):
                if value not in have:
                    free -= 1
                result.append(((*group, value), contributions))
            else:
                other.extend(contributions)
        if other:
            result.append(((*group, OTHER), other))
    return result


_KEY_FIELDS = {
    MetadataRollup: ("workspace_id", "key", "bucket", "value"),
    DimensionRollup: ("workspace_id", "bucket", "provider", "model", "api_key_id", "status_class", "status_code"),
}
_PG_TYPES = {
    "workspace_id": "bigint",
    "key": "text",
    "bucket": "timestamptz",
    "value": "text",
    "provider": "text",
    "model": "text",
    "api_key_id": "bigint",
    "status_class": "integer",
    "status_code": "integer",
    "requests": "integer",
    "errors": "integer",
    "prompt_tokens": "bigint",
    "completion_tokens": "bigint",
    **dict.fromkeys(TOKEN_PARTS, "bigint"),
    "cost": "numeric",
    "priced_requests": "integer",
    "unpriced_requests": "integer",
    "latency_sum_ms": "double precision",
    "latency_hist": "jsonb",
    "last_seen": "timestamptz",
}


def upsert(model: type[models.Model], rows: list[tuple[tuple, Totals]]) -> None:
    """Add ``rows`` ((key tuple, Totals), unique keys) to ``model``'s rollup rows."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        _upsert_postgres(model, rows)
    else:
        _upsert_generic(model, rows)


def _upsert_postgres(model: type[models.Model], rows: list[tuple[tuple, Totals]]) -> None:
    # The rows travel as one JSON array (orjson, then Postgres' JSON parser: both in C); array
    # parameters cost more to encode (psycopg escapes each element in Python) than the upsert
    # takes to run. WITH ORDINALITY keeps the (sorted) order rows are locked in.
    key_fields = _KEY_FIELDS[model]
    columns = (*key_fields, *Totals.FIELDS)
    payload = orjson.dumps(
        [[*key, *(getattr(totals, name) for name in Totals.FIELDS)] for key, totals in rows],
        default=str,  # Decimal cost, as a JSON string
    )
    q = connection.ops.quote_name
    names = ", ".join(q(c) for c in columns)
    indexes = ", ".join(
        f"(r->>{i})::{_PG_TYPES[c]}" if c != "latency_hist" else f"r->{i}" for i, c in enumerate(columns)
    )
    add = (
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        *TOKEN_PARTS,
        "cost",
        "priced_requests",
        "unpriced_requests",
        "latency_sum_ms",
    )
    updates = ", ".join(f"{q(c)} = t.{q(c)} + EXCLUDED.{q(c)}" for c in add)
    sql = (
        f"INSERT INTO {q(model._meta.db_table)} AS t ({names}) "  # noqa: S608 (names from the model)
        f"SELECT {indexes} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n "
        f"ON CONFLICT ({', '.join(q(c) for c in key_fields)}) DO UPDATE SET {updates}, "
        "latency_hist = portico_hist_merge(t.latency_hist, EXCLUDED.latency_hist), "
        "last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [payload.decode()])


_LOOKUP_CHUNK = 100  # rows per "WHERE (a AND b ...) OR (...)" lookup


def _any_of(field_names: tuple[str, ...], keys: list[tuple]) -> Q:
    return reduce(or_, (Q(**dict(zip(field_names, key, strict=True))) for key in keys))


def _upsert_generic(model: type[models.Model], rows: list[tuple[tuple, Totals]]) -> None:
    key_fields = _KEY_FIELDS[model]
    keys = [key for key, _totals in rows]
    stored = {}
    for start in range(0, len(keys), _LOOKUP_CHUNK):
        for obj in model.objects.filter(_any_of(key_fields, keys[start : start + _LOOKUP_CHUNK])):
            stored[tuple(getattr(obj, name) for name in key_fields)] = obj
    changed, created = [], []
    for key, totals in rows:
        obj = stored.get(key)
        if obj is None:
            created.append(model(**dict(zip(key_fields, key, strict=True)), **totals.fields()))
        else:
            totals.merge_into(obj)
            changed.append(obj)
    model.objects.bulk_create(created)
    model.objects.bulk_update(changed, list(Totals.FIELDS), batch_size=500)


def update_registry(keys: dict[tuple[int, str], KeyStats]) -> None:
    """Add a batch's key statistics to MetadataKey (the caller holds the keys' locks)."""
    if not keys:
        return
    pairs = sorted(keys)
    candidates = MetadataKey.objects.filter(workspace_id__in={p[0] for p in pairs}, key__in={p[1] for p in pairs})
    stored = {(obj.workspace_id, obj.key): obj for obj in candidates if (obj.workspace_id, obj.key) in keys}
    changed, created = [], []
    for pair in pairs:
        stats = keys[pair]
        obj = stored.get(pair)
        if obj is None:
            obj = MetadataKey(workspace_id=pair[0], key=pair[1], first_seen=stats.first_seen, last_seen=stats.last_seen)
            obj.top_values = {}
            created.append(obj)
        else:
            obj.first_seen = min(obj.first_seen, stats.first_seen)
            obj.last_seen = max(obj.last_seen, stats.last_seen)
            changed.append(obj)
        obj.requests += stats.requests
        top = obj.top_values
        # Most requested first, so a nearly full registry admits the batch's busiest values.
        for value, count in stats.values.most_common():
            if value in top:
                top[value] += count
            elif value != OTHER and len(top) < MetadataKey.VALUE_CAP:
                top[value] = count
        obj.distinct_values = len(top)
    MetadataKey.objects.bulk_create(created)
    if connection.vendor == "postgresql":
        _update_registry_postgres(changed)
    else:
        MetadataKey.objects.bulk_update(changed, _REGISTRY_FIELDS, batch_size=500)


_REGISTRY_FIELDS = ["first_seen", "last_seen", "requests", "distinct_values", "top_values"]


def _update_registry_postgres(changed: list[MetadataKey]) -> None:
    # One UPDATE ... FROM unnest: Django's bulk_update builds a CASE per field and row, which
    # costs more than the rest of a batch's rollup work together.
    if not changed:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {MetadataKey._meta.db_table} AS m SET first_seen = u.first_seen, last_seen = u.last_seen, "  # noqa: S608
            "requests = u.requests, distinct_values = u.distinct_values, top_values = u.top_values::jsonb "
            "FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::bigint[], %s::integer[], %s::text[]) "
            "AS u(id, first_seen, last_seen, requests, distinct_values, top_values) WHERE m.id = u.id",
            [
                [obj.id for obj in changed],
                [obj.first_seen for obj in changed],
                [obj.last_seen for obj in changed],
                [obj.requests for obj in changed],
                [obj.distinct_values for obj in changed],
                [orjson.dumps(obj.top_values).decode() for obj in changed],
            ],
        )


def update_senders(stats: dict[SenderKey, list]) -> None:
    """Add a batch's (workspace, key, API key) counts to MetadataKeySender (under the key locks)."""
    if not stats:
        return
    rows = sorted(stats.items())
    if connection.vendor == "postgresql":
        payload = orjson.dumps([[*key, first, last, requests] for key, (first, last, requests) in rows])
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {MetadataKeySender._meta.db_table} AS t "  # noqa: S608 (the model's table)
                "(workspace_id, key, api_key_id, first_seen, last_seen, requests) "
                "SELECT (r->>0)::bigint, r->>1, (r->>2)::bigint, (r->>3)::timestamptz, (r->>4)::timestamptz, "
                "(r->>5)::bigint FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n "
                "ON CONFLICT (workspace_id, key, api_key_id) DO UPDATE SET "
                "first_seen = LEAST(t.first_seen, EXCLUDED.first_seen), "
                "last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen), requests = t.requests + EXCLUDED.requests",
                [payload.decode()],
            )
        return
    stored = {
        (obj.workspace_id, obj.key, obj.api_key_id): obj
        for obj in MetadataKeySender.objects.filter(
            workspace_id__in={key[0] for key, _ in rows}, key__in={key[1] for key, _ in rows}
        )
    }
    changed, created = [], []
    for (workspace_id, key, api_key_id), (first, last, requests) in rows:
        obj = stored.get((workspace_id, key, api_key_id))
        if obj is None:
            created.append(
                MetadataKeySender(
                    workspace_id=workspace_id,
                    key=key,
                    api_key_id=api_key_id,
                    first_seen=first,
                    last_seen=last,
                    requests=requests,
                )
            )
        else:
            obj.first_seen, obj.last_seen = min(obj.first_seen, first), max(obj.last_seen, last)
            obj.requests += requests
            changed.append(obj)
    MetadataKeySender.objects.bulk_create(created)
    MetadataKeySender.objects.bulk_update(changed, ["first_seen", "last_seen", "requests"], batch_size=500)
