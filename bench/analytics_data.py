"""Synthetic analytics data: N request logs loaded straight into the database, then the rollups.

    createdb -h 127.0.0.1 -U postgres portico_bench
    .venv/bin/python bench/analytics_data.py --logs 1000000 \\
        --database-url postgres://postgres@127.0.0.1:5432/portico_bench

The database is migrated first. Logs belong to a few bench workspaces (``bench-data-*``, whose
earlier logs, rollups and registry rows are deleted first; other workspaces are not touched),
spread over the last ``--days`` days in time order, with realistic metadata (10 keys, from 3 to
50,000 distinct values, skewed), 2 providers / 6 models (one unpriced), 2 API keys per
workspace plus some keyless logs, and ~3% errors. No bodies.

Postgres: rows are generated as COPY text and streamed with psycopg's ``COPY ... FROM STDIN``
into analytics_requestlog (daily partitions are created for the window first); rollups are then
built by ``--rollups sql`` (default: one aggregation in SQL, ``build_rollups_sql``, which a test
checks against the Python path), ``python`` (``analytics.rollups.rebuild``, what
``manage.py rebuild_rollups`` runs) or ``none``. SQLite (no ``--database-url``, for trying it
out): rows go through the ORM in bulk and rollups through ``rebuild``.

Prints the load and rollup times and rates.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Metadata keys and their number of distinct values (request_id: 50,000 values, nearly unique).
METADATA_CARDINALITY = {
    "_user": 5000,
    "environment": 3,
    "feature": 20,
    "team": 8,
    "region": 5,
    "request_id": 50_000,
    "prompt_version": 12,
    "customer_tier": 4,
    "experiment": 30,
    "app_version": 15,
}
NAMED_VALUES = {
    "environment": ["production", "staging", "development"],
    "region": ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1"],
    "customer_tier": ["free", "pro", "team", "enterprise"],
}
# (provider, model, share); "llama-3.1-70b" has no price, so its cost is NULL.
MODELS = [
    ("openai", "gpt-4o-mini", 0.40),
    ("openai", "gpt-4o", 0.20),
    ("openai", "gpt-4.1-mini", 0.15),
    ("openai", "o3-mini", 0.10),
    ("openai", "text-embedding-3-small", 0.10),
    ("together", "llama-3.1-70b", 0.05),
]
ERROR_STATUSES = [429, 429, 500, 502, 503, 400]
ERROR_RATE = 0.03
COPY_COLUMNS = [
    "id", "created_at", "workspace_id", "api_key_id", "provider", "model", "endpoint", "method",
    "status_code", "success", "is_stream", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "cost", "currency", "cache_status", "retry_count", "trace_id", "span_id",
    "parent_span_id", "span_name", "user", "metadata", "metadata_changes", "error_message",
    "client_runtime", "sdk_version",
]  # fmt: skip


def _value_pool(key: str) -> list[str]:
    if key in NAMED_VALUES:
        return NAMED_VALUES[key]
    prefix = {"_user": "user", "request_id": "req", "app_version": "1.", "prompt_version": "v"}.get(key, key)
    return [f"{prefix}{n}" if key != "_user" else f"{prefix}-{n:05d}" for n in range(METADATA_CARDINALITY[key])]


class LogGenerator:
    """Yields COPY text lines (tab-separated, \\N for NULL) of synthetic logs in time order."""

    def __init__(self, *, workspaces: list[tuple[int, list[int]]], start: datetime, end: datetime, seed: int):
        self.rng = random.Random(seed)
        self.workspaces = workspaces
        self.start, self.end = start, end
        self.pools = {key: _value_pool(key) for key in METADATA_CARDINALITY}
        self.prices = _prices()
        weights = [share for _p, _m, share in MODELS]
        self.model_cumulative = [sum(weights[: i + 1]) for i in range(len(weights))]

    def _pick(self, key: str) -> str:
        pool = self.pools[key]
        if key == "request_id":
            return pool[self.rng.randrange(len(pool))]
        # Skewed: a few users/features/teams make most of the traffic.
        return pool[int(len(pool) * self.rng.random() ** 2.5)]

    def lines(self, count: int) -> Iterator[str]:
        rng = self.rng
        span_us = (self.end - self.start) / timedelta(microseconds=1)
        step = span_us / max(count, 1)
        position = 0.0
        minute_key, minute_prefix = None, ""
        for _ in range(count):
            position += step * rng.expovariate(1.0)
            offset_us = min(int(position), int(span_us) - 1)
            seconds, micros = divmod(offset_us, 1_000_000)
            minute = seconds // 60
            if minute != minute_key:
                minute_key = minute
                minute_prefix = (self.start + timedelta(minutes=minute)).strftime("%Y-%m-%d %H:%M:")
            created_at = f"{minute_prefix}{seconds % 60:02d}.{micros:06d}+00"
            yield self._line(created_at)

    def _line(self, created_at: str) -> str:
        rng = self.rng
        workspace_id, keys = self.workspaces[int(len(self.workspaces) * rng.random() ** 1.5)]
        api_key = r"\N" if rng.random() < 0.05 else str(keys[rng.randrange(len(keys))])
        draw = rng.random()
        index = next(i for i, edge in enumerate(self.model_cumulative) if draw <= edge or i == len(MODELS) - 1)
        provider, model, _share = MODELS[index]
        embedding = model.startswith("text-embedding")
        success = rng.random() >= ERROR_RATE
        status = 200 if success else ERROR_STATUSES[rng.randrange(len(ERROR_STATUSES))]
        stream = not embedding and rng.random() < 0.3
        latency = rng.lognormvariate(6.4 if not embedding else 4.5, 0.7)
        prompt = int(rng.lognormvariate(6.0, 1.0))
        completion = 0 if embedding or not success else int(rng.lognormvariate(5.0, 0.8))
        price = self.prices.get(model)
        cost = r"\N" if price is None else f"{(price[0] * prompt + price[1] * completion) / 1_000_000:.8f}"
        metadata = {key: self._pick(key) for key in METADATA_CARDINALITY}
        if rng.random() < 0.5:
            del metadata["experiment"]
        user = metadata["_user"]
        trace = f"{rng.getrandbits(128):032x}"
        # A version-4 UUID (32 hex digits, which Postgres accepts without dashes).
        uuid_int = (rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC << 60)) | (0x4000 << 64) | (0x8 << 60)
        meta_json = "{" + ",".join(f'"{k}":"{v}"' for k, v in metadata.items()) + "}"
        return "\t".join(
            (
                f"{uuid_int:032x}",
                created_at,
                str(workspace_id),
                api_key,
                provider,
                model,
                "/v1/embeddings" if embedding else "/v1/chat/completions",
                "POST",
                str(status),
                "t" if success else "f",
                "t" if stream else "f",
                f"{latency:.3f}",
                f"{latency * 0.3:.3f}" if stream else r"\N",
                str(prompt),
                str(completion),
                str(prompt + completion),
                cost,
                "USD",
                "DISABLED",
                "0",
                trace,
                "",
                "",
                "",
                user,
                meta_json,
                "[]",
                "" if success else f"upstream returned {status}",
                "python",
                "1.52.0",
            )
        )


def _prices() -> dict[str, tuple[Decimal, Decimal]]:
    from analytics.models import ModelPrice

    return {p.model: (p.input_per_million, p.output_per_million) for p in ModelPrice.objects.all()}


# --- Setup -------------------------------------------------------------------------------------


def bench_workspaces(count: int, days: int) -> list[tuple[int, list[int]]]:
    """(workspace id, [api key ids]) of the bench workspaces, emptied of earlier bench data."""
    from analytics.models import DimensionRollup, MetadataKey, MetadataRollup, RequestBody, RequestLog
    from workspaces import services
    from workspaces.models import ApiKey, Workspace

    result = []
    for n in range(count):
        slug = f"bench-data-{chr(ord('a') + n)}"
        workspace = Workspace.objects.filter(slug=slug).first()
        if workspace is None:
            from django.contrib.auth import get_user_model

            owner, _ = get_user_model().objects.get_or_create(username="bench-data")
            workspace = services.workspace_create(slug=slug, name=f"Bench data {n + 1}", owner=owner)
        # Longer than the data so the retention task leaves it alone.
        Workspace.objects.filter(id=workspace.id).update(log_retention_days=max(days + 30, 60))
        for model in (MetadataRollup, DimensionRollup, MetadataKey):
            model.objects.filter(workspace=workspace).delete()
        logs = RequestLog.objects.filter(workspace=workspace)
        RequestBody.objects.filter(log_id__in=logs.values("id")).delete()
        logs._raw_delete(logs.db)
        keys = list(ApiKey.objects.filter(workspace=workspace).values_list("id", flat=True))
        while len(keys) < 2:
            key, _secret = services.api_key_create(workspace=workspace, name=f"bench-{len(keys) + 1}")
            keys.append(key.id)
        result.append((workspace.id, keys[:2]))
    return result


def load_postgres(generator: LogGenerator, count: int, chunk_lines: int = 5000) -> None:
    from django.db import connection, transaction

    from analytics.models import RequestLog

    columns = ", ".join(f'"{c}"' for c in COPY_COLUMNS)
    with transaction.atomic(), connection.cursor() as wrapper:
        with wrapper.cursor.copy(f"COPY {RequestLog._meta.db_table} ({columns}) FROM STDIN") as copy:
            buffer: list[str] = []
            for line in generator.lines(count):
                buffer.append(line)
                if len(buffer) >= chunk_lines:
                    copy.write("\n".join(buffer) + "\n")
                    buffer.clear()
            if buffer:
                copy.write("\n".join(buffer) + "\n")


def load_orm(generator: LogGenerator, count: int, chunk: int = 2000) -> None:
    """SQLite: parse the generated lines back into model instances and bulk-create them."""
    import orjson
    from django.db import transaction

    from analytics.models import RequestLog

    fields = {f.column: f for f in RequestLog._meta.concrete_fields}
    batch = []

    def flush():
        with transaction.atomic():
            RequestLog.objects.bulk_create(batch)
        batch.clear()

    for line in generator.lines(count):
        values = {}
        for column, text in zip(COPY_COLUMNS, line.split("\t"), strict=True):
            field = fields[column]
            value = None if text == r"\N" else text
            if value is not None and column in ("metadata", "metadata_changes"):
                value = orjson.loads(value)
            elif value is not None and column in ("success", "is_stream"):
                value = value == "t"
            elif value is not None and column == "created_at":
                value = datetime.fromisoformat(value.replace("+00", "+00:00"))
            elif value is not None:
                value = field.to_python(value)
            values[field.attname] = value
        batch.append(RequestLog(**values))
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()


# --- Rollups in one SQL aggregation (Postgres) -------------------------------------------------

# Same rules as analytics.rollups (cap in (created_at, id) order, as a rebuild applies it; string,
# number and boolean values, cut to 128; keys up to 128), expressed as one INSERT ... SELECT per
# rollup table. Number values are rendered by Postgres, which can differ from Python's str()
# for floats in exponent form; the bench only generates strings.
_HIST_INDEX = (
    "CASE WHEN l.latency_ms < 0.5::float8 THEN 0 "
    "ELSE least(199, 1 + floor(ln(l.latency_ms / 0.5::float8) / ln(1.1::float8))::int) END"
)
_METRICS = """
    sum(n)::int, sum(errors)::int, sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint,
    sum(cost), sum(priced)::int, sum(latency_sum), jsonb_object_agg(hist::text, n), max(last_seen)
"""
_PER_HIST = """
    count(*) AS n, count(*) FILTER (WHERE NOT l.success) AS errors, sum(l.prompt_tokens) AS prompt_tokens,
    sum(l.completion_tokens) AS completion_tokens, coalesce(sum(l.cost), 0) AS cost,
    count(l.cost) AS priced, sum(l.latency_ms) AS latency_sum, max(l.created_at) AS last_seen
"""

METADATA_ROLLUP_SQL = f"""
WITH pairs AS (
    SELECT l.*, e.key AS mkey,
           left(CASE jsonb_typeof(e.value) WHEN 'string' THEN e.value #>> '{{}}' ELSE e.value::text END, 128) AS mvalue,
           date_trunc('hour', l.created_at, 'UTC') AS bucket, {_HIST_INDEX} AS hist
    FROM analytics_requestlog l CROSS JOIN LATERAL jsonb_each(l.metadata) AS e
    WHERE l.workspace_id = ANY(%(workspaces)s) AND l.created_at >= %(since)s
      AND jsonb_typeof(e.value) IN ('string', 'number', 'boolean') AND length(e.key) BETWEEN 1 AND 128
),
per_hist AS (
    SELECT l.workspace_id, l.mkey, l.bucket, l.mvalue, l.hist, {_PER_HIST},
           min(lpad((extract(epoch FROM l.created_at) * 1000000)::bigint::text, 20, '0') || l.id::text
               COLLATE "C") AS first_key
    FROM pairs l GROUP BY 1, 2, 3, 4, 5
),
ranked AS (
    SELECT workspace_id, mkey, bucket, mvalue,
           row_number() OVER (PARTITION BY workspace_id, mkey, bucket ORDER BY min(first_key) COLLATE "C") AS slot
    FROM per_hist WHERE mvalue <> %(other)s GROUP BY 1, 2, 3, 4
),
folded AS (
    SELECT h.workspace_id, h.mkey, h.bucket,
           CASE WHEN r.slot <= %(cap)s THEN h.mvalue ELSE %(other)s END AS mvalue, h.hist,
           sum(h.n) AS n, sum(h.errors) AS errors, sum(h.prompt_tokens) AS prompt_tokens,
           sum(h.completion_tokens) AS completion_tokens, sum(h.cost) AS cost, sum(h.priced) AS priced,
           sum(h.latency_sum) AS latency_sum, max(h.last_seen) AS last_seen
    FROM per_hist h LEFT JOIN ranked r USING (workspace_id, mkey, bucket, mvalue)
    GROUP BY 1, 2, 3, 4, 5
)
INSERT INTO analytics_metadatarollup (workspace_id, key, bucket, value, requests, errors, prompt_tokens,
    completion_tokens, cost, priced_requests, latency_sum_ms, latency_hist, last_seen)
SELECT workspace_id, mkey, bucket, mvalue, {_METRICS} FROM folded GROUP BY 1, 2, 3, 4
"""

DIMENSION_ROLLUP_SQL = f"""
WITH per_hist AS (
    SELECT l.workspace_id, date_trunc('hour', l.created_at, 'UTC') AS bucket, l.provider, l.model,
           coalesce(l.api_key_id, 0) AS api_key_id, l.status_code / 100 AS status_class,
           {_HIST_INDEX} AS hist, {_PER_HIST}
    FROM analytics_requestlog l
    WHERE l.workspace_id = ANY(%(workspaces)s) AND l.created_at >= %(since)s
    GROUP BY 1, 2, 3, 4, 5, 6, 7
)
INSERT INTO analytics_dimensionrollup (workspace_id, bucket, provider, model, api_key_id, status_class,
    requests, errors, prompt_tokens, completion_tokens, cost, priced_requests, latency_sum_ms, latency_hist,
    last_seen)
SELECT workspace_id, bucket, provider, model, api_key_id, status_class, {_METRICS}
FROM per_hist GROUP BY 1, 2, 3, 4, 5, 6
"""


def build_rollups_sql(workspace_ids: list[int], since: datetime | None = None) -> None:
    """Postgres: replace the workspaces' rollups (from ``since``'s hour) by one SQL aggregation
    of their logs, then refresh their registry rows; equal to ``analytics.rollups.rebuild``."""
    from django.conf import settings
    from django.db import connection, transaction

    from analytics import rollups
    from analytics.models import DimensionRollup, MetadataRollup

    start = rollups.hour_of(since) if since else datetime(1970, 1, 1, tzinfo=UTC)
    params = {
        "workspaces": workspace_ids,
        "since": start,
        "cap": settings.ROLLUP_VALUE_CAP,
        "other": MetadataRollup.OTHER_VALUE,
    }
    with transaction.atomic():
        for model in (MetadataRollup, DimensionRollup):
            model.objects.filter(workspace_id__in=workspace_ids, bucket__gte=start).delete()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '256MB'")
            cursor.execute(METADATA_ROLLUP_SQL, params)
            cursor.execute(DIMENSION_ROLLUP_SQL, params)
        for workspace_id in workspace_ids:
            rollups.refresh_metadata_keys(workspace_id=workspace_id, discover=True, lock=False)


# --- Main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=100_000, help="logs to load (default 100000)")
    parser.add_argument("--database-url", help="postgres://... (default: the DATABASE_URL setting)")
    parser.add_argument("--days", type=int, default=30, help="spread over the last N days (default 30)")
    parser.add_argument("--workspaces", type=int, default=3, help="bench workspaces (default 3)")
    parser.add_argument("--rollups", choices=["sql", "python", "none"], default="sql")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from analytics import retention, rollups

    call_command("migrate", verbosity=0)
    postgres = connection.vendor == "postgresql"
    workspaces = bench_workspaces(args.workspaces, args.days)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=args.days)
    if postgres:
        retention.ensure_partitions(start.date(), end.date() + timedelta(days=retention.AHEAD_DAYS))
    generator = LogGenerator(workspaces=workspaces, start=start, end=end, seed=args.seed)
    print(f"{connection.vendor}: {args.logs:,} logs over {args.days} days in {len(workspaces)} workspaces")

    began = time.perf_counter()
    (load_postgres if postgres else load_orm)(generator, args.logs)
    load_seconds = time.perf_counter() - began
    print(f"load:    {load_seconds:7.1f} s  {args.logs / load_seconds:>10,.0f} logs/s")

    method = args.rollups if postgres or args.rollups == "none" else "python"
    if method != "none":
        began = time.perf_counter()
        if method == "sql":
            build_rollups_sql([w for w, _keys in workspaces])
        else:
            for workspace_id, _keys in workspaces:
                rollups.rebuild(workspace_id=workspace_id)
        seconds = time.perf_counter() - began
        print(f"rollups: {seconds:7.1f} s  {args.logs / seconds:>10,.0f} logs/s  ({method})")
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE analytics_requestlog")
    print(f"total:   {time.perf_counter() - began + load_seconds:7.1f} s" if method != "none" else "")


if __name__ == "__main__":
    main()
