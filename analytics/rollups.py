"""Hourly rollups and the metadata key registry, kept up to date by the log writer.

``apply_rows(rows)`` is called by ``analytics.ingest.write_log_batch`` inside the transaction that
inserted the rows, with only the rows that were new (a redelivered batch adds nothing), and by
``rebuild`` with rows read back from RequestLog. Both go through ``aggregate`` so a rebuild
computes what ingestion computed. A row counts:

- once in DimensionRollup under (workspace, hour, provider, model, api key or 0, status_code // 100);
- once in MetadataRollup per metadata key, under (workspace, key, hour, value). String values are
  used as they are, numbers and booleans as their JSON text, cut to 128 characters; null,
  objects and arrays, and keys longer than 128 characters, are not grouped.

``errors`` counts rows with ``success`` false; ``cost`` sums priced rows only (``cost`` not NULL)
and ``priced_requests`` counts them; ``last_seen`` is the latest ``created_at``; the latency
histogram is analytics.histogram's, merged by adding counts.

High-cardinality cap: per (workspace, key, hour) at most ``settings.ROLLUP_VALUE_CAP`` distinct
values get a row of their own. First come, first served: values already holding a row keep it;
a value new to the hour takes a free slot if one is left, otherwise it is counted under
``MetadataRollup.OTHER_VALUE`` ("(other)"). "First" is the order rows are applied in: batch by
batch, and within a batch (or a rebuild, which reads logs in that order) by (created_at, id).
So totals per key and hour are always exact; which values have their own row can differ
between live ingestion and a rebuild when logs arrived out of order. A metadata value that is
literally "(other)" is counted with the folded values.

Concurrency (Postgres): every writer first takes a transaction-scoped advisory lock per
(workspace, key) it touches, in sorted order. Under that lock it counts the hour's existing
values (the cap is exact across concurrent workers) and updates the key's registry row
(select-then-update is safe). Rollup rows are then upserted with ``INSERT ... ON CONFLICT DO
UPDATE`` adding the counters and merging histograms in SQL (``portico_hist_merge``, migration
0005); DimensionRollup rows are not covered by the advisory locks, so they are upserted in
sorted key order, which keeps concurrent writers from deadlocking. A rebuild locks both rollup
tables instead (SHARE ROW EXCLUSIVE), so writers wait for it and nothing is lost or counted
twice. On SQLite writers are serialised by the database (BEGIN IMMEDIATE): plain
select-then-update/insert.

The registry (MetadataKey) is updated in the same transaction: first/last seen and requests
exactly; ``top_values`` adds counts to values it holds and admits new values while it has fewer
than ``MetadataKey.VALUE_CAP`` (it never evicts), ``distinct_values`` is its size. The periodic
``refresh_metadata_keys`` recomputes both from the rollups (top values by requests, "(other)"
excluded), which also corrects for rollups removed by retention.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from operator import or_
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Max, Min, Q, Sum

from analytics import histogram
from analytics.models import DimensionRollup, MetadataKey, MetadataRollup, RequestLog

logger = logging.getLogger(__name__)

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
    "cost",
    "metadata",
)
_LOOKUP_CHUNK = 100  # groups per "WHERE (a AND b) OR (...)" lookup

MetadataGroup = tuple[int, str, datetime]  # workspace_id, key, bucket
DimensionKey = tuple[int, datetime, str, str, int, int]  # workspace, bucket, provider, model, key, class


def hour_of(moment: datetime) -> datetime:
    """Start of the UTC hour holding ``moment`` (an aware datetime)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def metadata_items(metadata: Any) -> list[tuple[str, str]]:
    """The (key, value) pairs of a log's metadata that rollups group by (rules in the docstring)."""
    if not isinstance(metadata, dict):
        return []
    items = []
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > KEY_MAX_LENGTH:
            continue
        if isinstance(value, str):
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

    __slots__ = (
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "priced_requests",
        "latency_sum_ms",
        "latency_hist",
        "last_seen",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = Decimal(0)
        self.priced_requests = 0
        self.latency_sum_ms = 0.0
        self.latency_hist: dict[str, int] = {}
        self.last_seen: datetime | None = None

    def add(self, row: dict, hist_key: str) -> None:
        self.requests += 1
        if not row["success"]:
            self.errors += 1
        self.prompt_tokens += row["prompt_tokens"]
        self.completion_tokens += row["completion_tokens"]
        if row["cost"] is not None:
            self.cost += row["cost"]
            self.priced_requests += 1
        self.latency_sum_ms += row["latency_ms"]
        self.latency_hist[hist_key] = self.latency_hist.get(hist_key, 0) + 1
        if self.last_seen is None or row["created_at"] > self.last_seen:
            self.last_seen = row["created_at"]

    def merge(self, other: Totals) -> Totals:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost
        self.priced_requests += other.priced_requests
        self.latency_sum_ms += other.latency_sum_ms
        histogram.merge(self.latency_hist, other.latency_hist)
        if other.last_seen is not None and (self.last_seen is None or other.last_seen > self.last_seen):
            self.last_seen = other.last_seen
        return self

    def merge_into(self, row: models.Model) -> None:
        """Add these totals to a stored rollup row (the SQLite path)."""
        row.requests += self.requests
        row.errors += self.errors
        row.prompt_tokens += self.prompt_tokens
        row.completion_tokens += self.completion_tokens
        row.cost += self.cost
        row.priced_requests += self.priced_requests
        row.latency_sum_ms += self.latency_sum_ms
        row.latency_hist = histogram.merge(dict(row.latency_hist or {}), self.latency_hist)
        if row.last_seen is None or (self.last_seen is not None and self.last_seen > row.last_seen):
            row.last_seen = self.last_seen

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass
class KeyStats:
    """What one batch adds to a registry row."""

    first_seen: datetime
    last_seen: datetime
    requests: int = 0
    values: Counter[str] = field(default_factory=Counter)


@dataclass
class BatchRollup:
    # Values in order of first appearance: the cap gives free slots in this order.
    metadata: dict[MetadataGroup, dict[str, Totals]] = field(default_factory=dict)
    dimensions: dict[DimensionKey, Totals] = field(default_factory=dict)
    keys: dict[tuple[int, str], KeyStats] = field(default_factory=dict)


def aggregate(rows: Iterable[dict]) -> BatchRollup:
    """Sum rows (dicts with LOG_FIELDS) per rollup row, before the cap is applied."""
    batch = BatchRollup()
    for row in sorted(rows, key=lambda r: (r["created_at"], r["id"].int)):
        workspace_id, created_at = row["workspace_id"], row["created_at"]
        bucket = hour_of(created_at)
        hist_key = str(histogram.bucket_of(row["latency_ms"]))
        dimension = (
            workspace_id,
            bucket,
            row["provider"],
            row["model"],
            row["api_key_id"] or 0,
            row["status_code"] // 100,
        )
        totals = batch.dimensions.get(dimension)
        if totals is None:
            totals = batch.dimensions[dimension] = Totals()
        totals.add(row, hist_key)
        for key, value in metadata_items(row["metadata"]):
            values = batch.metadata.setdefault((workspace_id, key, bucket), {})
            totals = values.get(value)
            if totals is None:
                totals = values[value] = Totals()
            totals.add(row, hist_key)
            stats = batch.keys.get((workspace_id, key))
            if stats is None:
                stats = batch.keys[(workspace_id, key)] = KeyStats(first_seen=created_at, last_seen=created_at)
            stats.last_seen = max(stats.last_seen, created_at)
            stats.requests += 1
            stats.values[value] += 1
    return batch


# --- Applying a batch ---------------------------------------------------------------------


def apply_rows(rows: list[dict], *, lock: bool = True) -> None:
    """Add ``rows`` (new RequestLog rows, as dicts with LOG_FIELDS) to the rollups and registry.

    Must run inside the transaction that wrote the rows. ``lock=False`` is for callers that
    already exclude concurrent writers (``rebuild`` holds the rollup tables' lock).
    """
    if not rows:
        return
    batch = aggregate(rows)
    if lock and connection.vendor == "postgresql":
        lock_keys(batch.keys)
    metadata_rows = fold_capped(batch.metadata, existing_values(batch.metadata), settings.ROLLUP_VALUE_CAP)
    upsert(MetadataRollup, metadata_rows)
    upsert(DimensionRollup, sorted(batch.dimensions.items()))
    update_registry(batch.keys)


def lock_keys(keys: Iterable[tuple[int, str]]) -> None:
    """Postgres: take the (workspace, key) advisory locks for this transaction, in sorted order.

    A hash collision only makes two keys share a lock (more waiting, never a wrong count).
    """
    lock_ids = sorted({_lock_id(workspace_id, key) for workspace_id, key in keys})
    if lock_ids:
        with connection.cursor() as cursor:
            # unnest keeps the array's (sorted) order: locks are always taken low to high.
            cursor.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", [lock_ids])


def _lock_id(workspace_id: int, key: str) -> int:
    digest = hashlib.blake2b(f"portico-rollup:{workspace_id}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _any_of(field_names: tuple[str, ...], keys: list[tuple]) -> Q:
    return reduce(or_, (Q(**dict(zip(field_names, key, strict=True))) for key in keys))


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
    groups: dict[MetadataGroup, dict[str, Totals]], existing: dict[MetadataGroup, set[str]], cap: int
) -> list[tuple[tuple, Totals]]:
    """Rows to upsert, keyed (workspace, key, bucket, value), with the cap applied (see docstring)."""
    result = []
    for group, values in sorted(groups.items()):
        have = existing.get(group, set())
        free = cap - len(have - {OTHER})
        other: Totals | None = None
        for value, totals in values.items():
            if value != OTHER and (value in have or free > 0):
                if value not in have:
                    free -= 1
                result.append(((*group, value), totals))
            else:
                other = totals if other is None else other.merge(totals)
        if other is not None:
            result.append(((*group, OTHER), other))
    return result


_KEY_FIELDS = {
    MetadataRollup: ("workspace_id", "key", "bucket", "value"),
    DimensionRollup: ("workspace_id", "bucket", "provider", "model", "api_key_id", "status_class"),
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
    "requests": "integer",
    "errors": "integer",
    "prompt_tokens": "bigint",
    "completion_tokens": "bigint",
    "cost": "numeric",
    "priced_requests": "integer",
    "latency_sum_ms": "double precision",
    "latency_hist": "text",  # JSON text, cast to jsonb in the SELECT
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
    key_fields = _KEY_FIELDS[model]
    columns = (*key_fields, *Totals.__slots__)
    arrays: list[list] = [[] for _ in columns]
    for key, totals in rows:
        values = (*key, *(getattr(totals, name) for name in Totals.__slots__))
        for array, value in zip(arrays, values, strict=True):
            array.append(value)
    hist = columns.index("latency_hist")
    arrays[hist] = [orjson.dumps(h).decode() for h in arrays[hist]]
    q = connection.ops.quote_name
    names = ", ".join(q(c) for c in columns)
    select = ", ".join(f"u.{q(c)}::jsonb" if c == "latency_hist" else f"u.{q(c)}" for c in columns)
    unnest = ", ".join(f"%s::{_PG_TYPES[c]}[]" for c in columns)
    add = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost", "priced_requests", "latency_sum_ms")
    updates = ", ".join(f"{q(c)} = t.{q(c)} + EXCLUDED.{q(c)}" for c in add)
    sql = (
        f"INSERT INTO {q(model._meta.db_table)} AS t ({names}) "  # noqa: S608 (names from the model)
        f"SELECT {select} FROM unnest({unnest}) AS u({names}) "
        f"ON CONFLICT ({', '.join(q(c) for c in key_fields)}) DO UPDATE SET {updates}, "
        "latency_hist = portico_hist_merge(t.latency_hist, EXCLUDED.latency_hist), "
        "last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, arrays)


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
    model.objects.bulk_update(changed, list(Totals.__slots__), batch_size=500)


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


# --- Registry refresh ---------------------------------------------------------------------


def refresh_metadata_keys(*, workspace_id: int | None = None, discover: bool = False, lock: bool = True) -> int:
    """Recompute registry rows from the rollups; return how many keys were looked at.

    Each key is refreshed in its own short transaction under its advisory lock, so ingestion
    waits at most one key's recomputation. ``discover`` also visits keys that have rollups but
    no registry row (after a rebuild); keys whose rollups are all gone lose their row.
    """
    registry = MetadataKey.objects.all()
    rollups = MetadataRollup.objects.all()
    if workspace_id is not None:
        registry = registry.filter(workspace_id=workspace_id)
        rollups = rollups.filter(workspace_id=workspace_id)
    pairs = set(registry.values_list("workspace_id", "key"))
    if discover:
        pairs |= set(rollups.order_by().values_list("workspace_id", "key").distinct())
    for pair in sorted(pairs):
        with transaction.atomic():
            if lock and connection.vendor == "postgresql":
                lock_keys([pair])
            _refresh_key(*pair)
    return len(pairs)


def _refresh_key(workspace_id: int, key: str) -> None:
    rows = MetadataRollup.objects.filter(workspace_id=workspace_id, key=key)
    totals = rows.aggregate(requests=Sum("requests"), first=Min("bucket"), last=Max("last_seen"))
    registry = MetadataKey.objects.filter(workspace_id=workspace_id, key=key)
    if not totals["requests"]:
        registry.delete()
        return
    top = (
        rows.exclude(value=OTHER)
        .values("value")
        .annotate(count=Sum("requests"))
        .order_by("-count", "value")[: MetadataKey.VALUE_CAP]
    )
    top_values = {row["value"]: row["count"] for row in top}
    first_hour = totals["first"]
    current = registry.first()
    # Rollups know the first hour only; keep the exact first_seen when it lies in that hour.
    if current is not None and first_hour <= current.first_seen < first_hour + timedelta(hours=1):
        first_seen = current.first_seen
    else:
        first_seen = first_hour
    MetadataKey.objects.update_or_create(
        workspace_id=workspace_id,
        key=key,
        defaults={
            "first_seen": first_seen,
            "last_seen": totals["last"] or first_hour,
            "requests": totals["requests"],
            "distinct_values": len(top_values),
            "top_values": top_values,
        },
    )


# --- Rebuild ------------------------------------------------------------------------------


@dataclass
class RebuildResult:
    logs: int
    metadata_rows: int
    dimension_rows: int


def rebuild(*, workspace_id: int | None = None, since: datetime | None = None, chunk_size: int = 5000) -> RebuildResult:
    """Delete the rollups in scope (whole hours from ``since``'s hour) and recompute them from
    RequestLog, reading logs in (created_at, id) keyset chunks: memory stays constant.

    One transaction holding the rollup tables' lock: concurrent log writers wait at their
    rollup step (their logs are not committed yet, so they are counted once, by themselves).
    """
    start = hour_of(since) if since is not None else None
    scope = Q() if workspace_id is None else Q(workspace_id=workspace_id)
    if start is not None:
        scope &= Q(bucket__gte=start)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    f"LOCK TABLE {MetadataRollup._meta.db_table}, {DimensionRollup._meta.db_table} "
                    "IN SHARE ROW EXCLUSIVE MODE"
                )
        MetadataRollup.objects.filter(scope).delete()
        DimensionRollup.objects.filter(scope).delete()
        logs = 0
        for workspace in _workspaces_with_logs(workspace_id):
            for chunk in _log_chunks(workspace, start, chunk_size):
                apply_rows(chunk, lock=False)
                logs += len(chunk)
        refresh_metadata_keys(workspace_id=workspace_id, discover=True, lock=False)
        return RebuildResult(
            logs=logs,
            metadata_rows=MetadataRollup.objects.filter(scope).count(),
            dimension_rows=DimensionRollup.objects.filter(scope).count(),
        )


def _workspaces_with_logs(workspace_id: int | None) -> list[int]:
    from workspaces.models import Workspace

    workspaces = Workspace.objects.order_by("id")
    if workspace_id is not None:
        workspaces = workspaces.filter(id=workspace_id)
    return list(workspaces.values_list("id", flat=True))


def _log_chunks(workspace_id: int, start: datetime | None, chunk_size: int) -> Iterator[list[dict]]:
    """A workspace's logs from ``start`` in (created_at, id) order, chunk by chunk (keyset).

    The ``created_at >= last`` bound is redundant with the exclusion but lets the database
    start the (workspace, created_at) index scan at the last position instead of the beginning.
    """
    logs = RequestLog.objects.filter(workspace_id=workspace_id).order_by("created_at", "id")
    if start is not None:
        logs = logs.filter(created_at__gte=start)
    page = logs
    while True:
        chunk = list(page.values(*LOG_FIELDS)[:chunk_size])
        if not chunk:
            return
        yield chunk
        last = chunk[-1]
        page = logs.filter(created_at__gte=last["created_at"]).exclude(
            created_at=last["created_at"], id__lte=last["id"]
        )
