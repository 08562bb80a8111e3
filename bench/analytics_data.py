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
into analytics_requestlog by ``--jobs`` processes, each loading a time slice (the daily
partitions are created first). SQLite (no ``--database-url`` and no DATABASE_URL, for trying it
out): rows go through the ORM in bulk. Rollups are then built by ``analytics.recompute.rebuild_rollups``,
the code ``manage.py rebuild_rollups`` runs, one process per workspace (``--no-rollups`` skips),
pair rollups included: the registry rows of PAIR_KEYS are created first, flagged ``paired`` (as an
admin would), so the pairs are the ones bench/bench_filtered.py filters and groups by (every log
carries 9 of the 10 keys, so "the most used keys" would be a tie broken by name).

Prints the load and rollup times and rates.
"""

from __future__ import annotations

import argparse
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
# The bench workspaces' pair keys (analytics.pair_rollups), flagged before the rollups are built.
PAIR_KEYS = ("environment", "feature", "team")
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
    """Yields COPY text lines (tab-separated, \\N for NULL) of synthetic logs in time order.

    Generated a chunk at a time, column by column (``random.choices`` draws a whole column in C),
    which is what makes the generator fast enough to keep COPY busy.
    """

    def __init__(self, *, workspaces: list[tuple[int, list[int]]], start: datetime, end: datetime, seed: int):
        self.rng = random.Random(seed)
        self.workspaces = workspaces
        self.start, self.end = start, end
        self.pools = {key: _value_pool(key) for key in METADATA_CARDINALITY}
        # Skewed (Zipf-like): a few users, features, teams... make most of the traffic; request ids uniform.
        self.weights = {
            key: None if key == "request_id" else _cumulative([1 / (rank + 1) ** 0.8 for rank in range(len(pool))])
            for key, pool in self.pools.items()
        }
        self.workspace_weights = _cumulative([1 / (rank + 1) for rank in range(len(workspaces))])
        self.model_weights = _cumulative([share for _provider, _model, share in MODELS])
        prices = _prices()
        # Float prices per token: the bench's costs need not be exact to the last digit.
        self.models = [
            (provider, model, _per_token(prices.get(model)), model.startswith("text-")) for provider, model, _ in MODELS
        ]
        # Pools of log-normal draws: picking from them is far cheaper than drawing each value.
        self.latency = self._lognormal(6.4, 0.7)
        self.embedding_latency = self._lognormal(4.5, 0.7)
        self.prompt_tokens = [int(v) for v in self._lognormal(6.0, 1.0)]
        self.completion_tokens = [int(v) for v in self._lognormal(5.0, 0.8)]

    def _lognormal(self, mu: float, sigma: float, size: int = 4096) -> list[float]:
        return [self.rng.lognormvariate(mu, sigma) for _ in range(size)]

    def lines(self, count: int, chunk: int = 5000) -> Iterator[str]:
        span_us = int((self.end - self.start) / timedelta(microseconds=1))
        # Sorted uniform offsets: a Poisson-like arrival over the window, in time order.
        done = 0
        while done < count:
            size = min(chunk, count - done)
            low, high = span_us * done // count, span_us * (done + size) // count
            width, random_ = max(high - low, 1), self.rng.random
            offsets = sorted([low + int(random_() * width) for _ in range(size)])
            yield from self._chunk(offsets)
            done += size

    def _chunk(self, offsets: list[int]) -> Iterator[str]:
        rng, size = self.rng, len(offsets)
        columns = {
            key: rng.choices(self.pools[key], cum_weights=self.weights[key], k=size) for key in METADATA_CARDINALITY
        }
        workspaces = rng.choices(self.workspaces, cum_weights=self.workspace_weights, k=size)
        models = rng.choices(self.models, cum_weights=self.model_weights, k=size)
        latencies = rng.choices(self.latency, k=size)
        prompts = rng.choices(self.prompt_tokens, k=size)
        completions = rng.choices(self.completion_tokens, k=size)
        minute_key, minute_prefix = None, ""
        for i, offset in enumerate(offsets):
            seconds, micros = divmod(offset, 1_000_000)
            if seconds // 60 != minute_key:
                minute_key = seconds // 60
                minute_prefix = (self.start + timedelta(minutes=minute_key)).strftime("%Y-%m-%d %H:%M:")
            workspace_id, keys = workspaces[i]
            provider, model, price, embedding = models[i]
            draw = rng.random()
            success = draw >= ERROR_RATE
            status = 200 if success else ERROR_STATUSES[int(draw * 1000) % len(ERROR_STATUSES)]
            stream = not embedding and draw > 0.7
            latency = self.embedding_latency[i % 4096] if embedding else latencies[i]
            prompt = prompts[i]
            completion = 0 if embedding or not success else completions[i]
            cost = r"\N" if price is None else f"{price[0] * prompt + price[1] * completion:.8f}"
            user = columns["_user"][i]
            experiment = f',"experiment":"{columns["experiment"][i]}"' if draw < 0.5 else ""
            metadata = (
                f'{{"_user":"{user}","environment":"{columns["environment"][i]}",'
                f'"feature":"{columns["feature"][i]}","team":"{columns["team"][i]}",'
                f'"region":"{columns["region"][i]}","request_id":"{columns["request_id"][i]}",'
                f'"prompt_version":"{columns["prompt_version"][i]}","customer_tier":"{columns["customer_tier"][i]}",'
                f'"app_version":"{columns["app_version"][i]}"{experiment}}}'
            )
            bits = rng.getrandbits(256)
            # A version-4 UUID (32 hex digits, which Postgres accepts without dashes) and a trace id.
            uuid_int = ((bits >> 128) & _UUID_CLEAR) | _UUID_SET
            api_key = r"\N" if draw > 0.95 else str(keys[i & 1])
            yield (
                f"{uuid_int:032x}\t{minute_prefix}{seconds % 60:02d}.{micros:06d}+00\t{workspace_id}\t{api_key}\t"
                f"{provider}\t{model}\t{'/v1/embeddings' if embedding else '/v1/chat/completions'}\tPOST\t"
                f"{status}\t{'t' if success else 'f'}\t{'t' if stream else 'f'}\t{latency:.3f}\t"
                f"{f'{latency * 0.3:.3f}' if stream else chr(92) + 'N'}\t{prompt}\t{completion}\t"
                f"{prompt + completion}\t{cost}\tUSD\tDISABLED\t0\t{bits & _TRACE_MASK:032x}\t\t\t\t{user}\t"
                f"{metadata}\t[]\t{'' if success else f'upstream returned {status}'}\tpython\t1.52.0"
            )


_UUID_CLEAR = ~((0xF000 << 64) | (0xC << 60)) & ((1 << 128) - 1)
_UUID_SET = (0x4000 << 64) | (0x8 << 60)
_TRACE_MASK = (1 << 128) - 1


def _per_token(price: tuple[Decimal, Decimal] | None) -> tuple[float, float] | None:
    return None if price is None else (float(price[0]) / 1e6, float(price[1]) / 1e6)


def _cumulative(weights: list[float]) -> list[float]:
    total, result = 0.0, []
    for weight in weights:
        total += weight
        result.append(total)
    return result


def _prices() -> dict[str, tuple[Decimal, Decimal]]:
    from analytics.pricing import catalogue_rates

    prices = {}
    for provider, model, _share in MODELS:
        rates = catalogue_rates(model, provider)
        if rates is not None:
            prices[model] = (rates.input or Decimal(0), rates.output or Decimal(0))
    return prices


# --- Setup -------------------------------------------------------------------------------------


def bench_workspaces(count: int, days: int, *, keep_logs: bool = False) -> list[tuple[int, list[int]]]:
    """(workspace id, [api key ids]) of the bench workspaces, emptied of earlier bench data
    (``keep_logs``: their rollups and registry only)."""
    from django.utils import timezone

    from analytics.models import (
        DimensionRollup,
        MetadataKey,
        MetadataKeySender,
        MetadataRollup,
        PairRollup,
        RequestBody,
        RequestLog,
    )
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
        for model in (MetadataRollup, DimensionRollup, PairRollup, MetadataKey, MetadataKeySender):
            model.objects.filter(workspace=workspace).delete()
        # The rebuild keeps these rows' flag and recomputes the rest from the rollups.
        now = timezone.now()
        MetadataKey.objects.bulk_create(
            MetadataKey(workspace=workspace, key=key, first_seen=now, last_seen=now, paired=True) for key in PAIR_KEYS
        )
        if not keep_logs:
            logs = RequestLog.objects.filter(workspace=workspace)
            RequestBody.objects.filter(log_id__in=logs.values("id")).delete()
            logs._raw_delete(logs.db)
        keys = list(ApiKey.objects.filter(workspace=workspace).order_by("id").values_list("id", flat=True))
        while len(keys) < 2:
            key, _secret = services.api_key_create(workspace=workspace, name=f"bench-{len(keys) + 1}")
            keys.append(key.id)
        result.append((workspace.id, keys[:2]))
    return result


def load_postgres(generator: LogGenerator, count: int, chunk_lines: int = 5000) -> None:
    """COPY ``count`` generated logs into analytics_requestlog in one transaction."""
    from django.db import connection, transaction
    from psycopg.copy import QueuedLibpqWriter

    from analytics.models import RequestLog

    columns = ", ".join(f'"{c}"' for c in COPY_COLUMNS)
    sql = f"COPY {RequestLog._meta.db_table} ({columns}) FROM STDIN"
    with transaction.atomic(), connection.cursor() as wrapper:
        cursor = wrapper.cursor
        # The queued writer sends from a thread: generating the next rows overlaps the network.
        with cursor.copy(sql, writer=QueuedLibpqWriter(cursor)) as copy:
            buffer: list[str] = []
            for line in generator.lines(count):
                buffer.append(line)
                if len(buffer) >= chunk_lines:
                    copy.write("\n".join(buffer) + "\n")
                    buffer.clear()
            if buffer:
                copy.write("\n".join(buffer) + "\n")


def _load_slice(args: tuple) -> None:
    """One loader process: its own connection, its own time slice and random stream."""
    from django.db import connections

    connections.close_all()  # never share the parent's socket
    workspaces, start, end, seed, count = args
    load_postgres(LogGenerator(workspaces=workspaces, start=start, end=end, seed=seed), count)
    connections.close_all()


def load_postgres_parallel(
    *, workspaces: list[tuple[int, list[int]]], start: datetime, end: datetime, seed: int, count: int, jobs: int
) -> None:
    """Split the window into ``jobs`` time slices loaded by as many processes (one COPY each):
    Postgres then parses and indexes on several cores."""
    import multiprocessing

    from django.db import connections

    if jobs <= 1:
        load_postgres(LogGenerator(workspaces=workspaces, start=start, end=end, seed=seed), count)
        return
    span = (end - start) / jobs
    slices = [
        (
            workspaces,
            start + span * n,
            start + span * (n + 1),
            seed * 1000 + n,
            count * (n + 1) // jobs - count * n // jobs,
        )
        for n in range(jobs)
    ]
    connections.close_all()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        pool.map(_load_slice, slices)
    # Fresh statistics, as autovacuum would gather them on a live system: without them the
    # planner takes the just-loaded partitions for empty and sorts instead of using the indexes.
    with connections["default"].cursor() as cursor:
        cursor.execute("ANALYZE analytics_requestlog")


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


# --- Rollups ----------------------------------------------------------------------------------


def _rebuild_workspace(workspace_id: int) -> int:
    from django.db import connections

    from analytics import recompute

    connections.close_all()  # never share the parent's socket
    logs = recompute.rebuild_rollups(workspace_id=workspace_id).logs
    connections.close_all()
    return logs


def build_rollups(workspace_ids: list[int], jobs: int) -> int:
    """``analytics.recompute.rebuild_rollups`` (what ``manage.py rebuild_rollups`` runs) per workspace, in
    ``jobs`` processes: rebuilds of different workspaces do not wait for each other."""
    import multiprocessing

    from django.db import connections

    if jobs <= 1 or len(workspace_ids) == 1:
        from analytics import recompute

        return sum(recompute.rebuild_rollups(workspace_id=w).logs for w in workspace_ids)
    connections.close_all()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        # Largest first (the first bench workspace has the most logs), for a balanced finish.
        return sum(pool.map(_rebuild_workspace, workspace_ids, chunksize=1))


# --- Main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=100_000, help="logs to load (default 100000)")
    parser.add_argument("--database-url", help="postgres://... (default: the DATABASE_URL setting)")
    parser.add_argument("--days", type=int, default=30, help="spread over the last N days (default 30)")
    parser.add_argument("--workspaces", type=int, default=3, help="bench workspaces (default 3)")
    parser.add_argument("--no-rollups", action="store_true", help="load logs only")
    parser.add_argument(
        "--rollups-only", action="store_true", help="skip the load: (re)build the bench workspaces' rollups only"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes on Postgres (default 2)")
    args = parser.parse_args()
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from analytics import retention

    call_command("migrate", verbosity=0)
    postgres = connection.vendor == "postgresql"
    workspaces = bench_workspaces(args.workspaces, args.days, keep_logs=args.rollups_only)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=args.days)
    if postgres:
        retention.ensure_partitions(start.date(), end.date() + timedelta(days=retention.AHEAD_DAYS))
    print(f"{connection.vendor}: {args.logs:,} logs over {args.days} days in {len(workspaces)} workspaces")

    began = time.perf_counter()
    if args.rollups_only:
        pass
    elif postgres:
        load_postgres_parallel(
            workspaces=workspaces, start=start, end=end, seed=args.seed, count=args.logs, jobs=args.jobs
        )
    else:
        load_orm(LogGenerator(workspaces=workspaces, start=start, end=end, seed=args.seed), args.logs)
    load_seconds = time.perf_counter() - began
    if not args.rollups_only:
        print(f"load:    {load_seconds:7.1f} s  {args.logs / load_seconds:>10,.0f} logs/s")

    total = load_seconds
    if not args.no_rollups:
        began = time.perf_counter()
        logs = build_rollups([w for w, _keys in workspaces], args.jobs if postgres else 1)
        seconds = time.perf_counter() - began
        total += seconds
        print(f"rollups: {seconds:7.1f} s  {logs / seconds:>10,.0f} logs/s  (rebuild_rollups)")
        if postgres:
            # What autovacuum does on a live system: statistics for the planner and a visibility
            # map for index-only scans of the freshly written rollups.
            with connection.cursor() as cursor:
                for table in (
                    "analytics_metadatarollup",
                    "analytics_dimensionrollup",
                    "analytics_pairrollup",
                    "analytics_metadatakey",
                ):
                    cursor.execute(f"VACUUM ANALYZE {table}")
    print(f"total:   {total:7.1f} s")


if __name__ == "__main__":
    main()
