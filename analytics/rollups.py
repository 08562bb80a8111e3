"""Hourly rollups and the metadata key registry, kept up to date by the log writer.

``apply_rows(rows)`` is called by ``analytics.ingest.write_log_batch`` inside the transaction that
inserted the rows, with only the rows that were new (a redelivered batch adds nothing), and by
``analytics.recompute.rebuild_rollups`` with rows read back from RequestLog, so a rebuild computes
what ingestion computed. Which rollup rows a log counts in, and each row's metrics (an analytics.reads.metrics.Metrics),
is analytics.rollup_batch's part; this module writes a batch.

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

PairRollup (two-key rows for a workspace's pair keys, analytics.pair_rollups) is written under
the key locks of its key A, which every log it counts carries; its caps are counted there too.

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
from collections.abc import Iterable
from functools import reduce
from operator import or_

import orjson
from django.conf import settings
from django.db import connection, models
from django.db.models import Q

from analytics import histogram, pair_rollups
from analytics.models import (
    ROLLUP_TOTALS,
    TOKEN_PARTS,
    DimensionRollup,
    MetadataKey,
    MetadataKeySender,
    MetadataRollup,
    PairRollup,
)
from analytics.reads.metrics import Metrics
from analytics.rollup_batch import (
    OTHER,
    BatchRollup,
    KeyStats,
    MetadataGroup,
    SenderKey,
    aggregate,
    cell_metrics,
    fold_capped,
    metrics_of,
)

# --- Applying a batch ---------------------------------------------------------------------


def prepare(rows: list[dict], pair_keys: dict[int, tuple[str, ...]]) -> BatchRollup:
    """The database-free part of ``apply_rows(rows)``: grouping and summing. The writer runs it
    while Postgres still works through the batch's COPY (two cores, one each) and hands the
    result to ``apply_rows(rows, batch=...)``; ``pair_keys``: pair_rollups.pair_keys of the
    rows' workspaces, looked up before the COPY."""
    batch = aggregate(rows, pair_keys)
    batch.dimension_metrics  # noqa: B018 (computed now, cached on the batch)
    return batch


def apply_rows(
    rows: list[dict],
    *,
    lock: bool = True,
    senders: bool = True,
    batch: BatchRollup | None = None,
    pair_keys: dict[int, tuple[str, ...]] | None = None,
) -> None:
    """Add ``rows`` (new RequestLog rows, as dicts with LOG_FIELDS) to the rollups and registry.

    Must run inside the transaction that wrote the rows. ``lock=False`` is for callers that
    already exclude concurrent writers (a rebuild holds its workspace's lock exclusively);
    ``senders=False`` leaves MetadataKeySender alone (a partial rebuild). ``batch``: what
    ``prepare(rows)`` returned, for exactly these rows. ``pair_keys``: the workspaces' pair keys
    (default: pair_rollups.pair_keys now; a rebuild passes the ones it chose once).
    """
    if not rows:
        return
    if batch is None:
        if pair_keys is None:
            pair_keys = pair_rollups.pair_keys({row["workspace_id"] for row in rows})
        batch = aggregate(rows, pair_keys)
    keys = batch.key_stats()
    if lock and connection.vendor == "postgresql":
        lock_for_writing({dimension[0] for dimension in batch.dimensions}, keys)
    folded = fold_capped(batch.metadata, existing_values(batch.metadata), settings.ROLLUP_VALUE_CAP)
    upsert(MetadataRollup, [(key, metrics_of(group)) for key, group in folded])
    upsert(DimensionRollup, batch.dimension_metrics)
    if batch.pairs:
        existing = pair_rollups.existing_pairs(batch.pairs)
        folded_pairs = pair_rollups.fold_pairs(batch.pairs, existing, settings.ROLLUP_PAIR_MAX_VALUES)
        upsert(PairRollup, [(key, cell_metrics(combos)) for key, combos in folded_pairs])
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


_KEY_FIELDS = {
    MetadataRollup: ("workspace_id", "key", "bucket", "value"),
    DimensionRollup: ("workspace_id", "bucket", "provider", "model", "api_key_id", "status_class", "status_code"),
    PairRollup: ("workspace_id", "key_a", "value_a", "key_b", "bucket", "value_b", "b_missing"),
}
_PG_TYPES = {
    "workspace_id": "bigint",
    "key": "text",
    "bucket": "timestamptz",
    "value": "text",
    "key_a": "text",
    "value_a": "text",
    "key_b": "text",
    "value_b": "text",
    "b_missing": "boolean",
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


def upsert(model: type[models.Model], rows: list[tuple[tuple, Metrics]]) -> None:
    """Add ``rows`` ((key tuple, Metrics), unique keys) to ``model``'s rollup rows."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        _upsert_postgres(model, rows)
    else:
        _upsert_generic(model, rows)


def _upsert_postgres(model: type[models.Model], rows: list[tuple[tuple, Metrics]]) -> None:
    # The rows travel as one JSON array (orjson, then Postgres' JSON parser: both in C); array
    # parameters cost more to encode (psycopg escapes each element in Python) than the upsert
    # takes to run. WITH ORDINALITY keeps the (sorted) order rows are locked in.
    key_fields = _KEY_FIELDS[model]
    columns = (*key_fields, *ROLLUP_TOTALS)
    payload = orjson.dumps(
        [[*key, *totals.rollup_fields().values()] for key, totals in rows],
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


def _upsert_generic(model: type[models.Model], rows: list[tuple[tuple, Metrics]]) -> None:
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
            created.append(model(**dict(zip(key_fields, key, strict=True)), **totals.rollup_fields()))
        else:
            _merge_into(obj, totals)
            changed.append(obj)
    model.objects.bulk_create(created)
    model.objects.bulk_update(changed, list(ROLLUP_TOTALS), batch_size=500)


def _merge_into(row: models.Model, metrics: Metrics) -> None:
    """Add ``metrics`` to a stored rollup row (the SQLite path)."""
    for name in ROLLUP_TOTALS:
        if name == "latency_hist":
            row.latency_hist = histogram.merge(dict(row.latency_hist or {}), metrics.hist)
        elif name == "last_seen":
            if row.last_seen is None or (metrics.last_seen is not None and metrics.last_seen > row.last_seen):
                row.last_seen = metrics.last_seen
        else:
            setattr(row, name, getattr(row, name) + getattr(metrics, name))


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
