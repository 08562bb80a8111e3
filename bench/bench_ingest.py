"""Log ingestion throughput, in the same run and database:

- ``bulk_create``: plain Django ``bulk_create`` of the records (the baseline);
- ``write_log_batch``: ``analytics.ingest.write_log_batch`` (COPY + INSERT ... ON CONFLICT and
  the rollups, one transaction per batch), and ``redelivered``: the same batches written again
  (all duplicates);
- ``stream``: the real log pipeline's writer end to end. A fresh Redis stream
  (``portico:bench:ingest:<uuid>``) is pre-filled the way the gateway fills it (one entry per
  flush, field ``batch`` = ``analytics.pipeline.encode_batch(records)``, ``--entry-size``
  records each), then ``analytics.pipeline.consume_log_stream`` (the Celery task's defaults:
  transactions of up to LOG_WRITER_BATCH_RECORDS records; ``--writers`` processes in one consumer
  group, default one, in this process) is called until every record is written. The clock
  stops at the last acknowledgement (the last batch committed), so the idle wait until
  ``--max-seconds`` is not counted. Each round checks the
  records returned, the workspace's new rows and that nothing is left pending, then deletes
  the stream.
- ``celery``: the production writer itself. The same pre-filled stream, drained by a real
  ``celery -A config worker -B --concurrency N`` (``--celery-concurrency``, default 2 as in
  docker-compose.yml; DEBUG off, production settings, beat embedded so consume_log_stream runs
  on its schedule from config/celery.py). The clock runs from the worker's first read of the
  stream (XINFO GROUPS entries-read, polled every 5 ms, so the worker's start-up is not
  counted) to the moment the stream is empty with nothing pending (every entry is deleted
  when its batch is acknowledged). Checks as for ``stream``. Needs DATABASE_URL and Redis.

    createdb -h 127.0.0.1 -U postgres portico_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portico_bench .venv/bin/python bench/bench_ingest.py
    DATABASE_URL=... .venv/bin/python bench/bench_ingest.py --methods stream,bulk_create \
        [--stream-records 20000] [--entry-size 50] [--redis-url redis://127.0.0.1:6379/15]

Options: --batches (40) x --batch-size (500) records per measurement for the batch methods,
--stream-records (default: the same total) for ``stream`` and ``celery``, --rounds (3), --methods
(comma list of bulk_create, write_log_batch, redelivered, stream, celery; default all),
--writers (1), --celery-concurrency (2), --random-ids (UUIDv4 log and trace ids instead of the
gateway's time-ordered UUIDv7), --redis-url (default
REDIS_URL, else redis://127.0.0.1:6379/15). Records are gateway-shaped (5-key metadata, no
bodies). The bench workspace's logs, rollups and metadata key registry rows are deleted before
and after. Prints logs/s per method (best and median of the rounds), the ratio to bulk_create in
the same run, and a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from analytics import models as analytics_models  # noqa: E402
from analytics import pipeline  # noqa: E402
from analytics.ids import new_uuid7  # noqa: E402
from analytics.ingest import write_log_batch  # noqa: E402
from analytics.models import RequestLog  # noqa: E402
from bench import stack  # noqa: E402
from workspaces.models import ApiKey, Workspace  # noqa: E402

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b"]


def make_records(workspace: Workspace, api_key: ApiKey | None, count: int, *, random_ids: bool = False) -> list[dict]:
    """Gateway-shaped records. Log and trace ids are UUIDv7 as the gateway makes them
    (analytics.ids); ``random_ids`` uses UUIDv4 instead (ids made elsewhere, e.g. by clients
    sending their own trace ids)."""
    now = timezone.now()
    records = []
    for i in range(count):
        prompt, completion = 100 + i % 900, 20 + i % 300
        log_id, trace_id = (str(uuid.uuid4()), uuid.uuid4().hex) if random_ids else (new_uuid7(), new_uuid7())
        records.append(
            {
                "id": log_id,
                "created_at": now.isoformat(),
                "workspace_id": workspace.id,
                "api_key_id": api_key.id if api_key else None,
                "provider": "openai",
                "model": MODELS[i % len(MODELS)],
                "endpoint": "/v1/chat/completions",
                "method": "POST",
                "status_code": 200 if i % 50 else 429,
                "success": bool(i % 50),
                "is_stream": i % 3 == 0,
                "latency_ms": 250.0 + i % 700,
                "ttft_ms": 80.5 if i % 3 == 0 else None,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "cost": f"{(prompt * 0.15 + completion * 0.6) / 1_000_000:.8f}",
                "currency": "USD",
                "cache_status": "DISABLED",
                "finish_reasons": ["stop"] if i % 50 else None,
                "retry_count": 0,
                "trace_id": trace_id,
                "span_id": "",
                "parent_span_id": "",
                "span_name": "",
                "user": f"user-{i % 97}",
                "metadata": {
                    "_user": f"user-{i % 97}",
                    "environment": "production",
                    "feature": ["chat", "search", "summarise"][i % 3],
                    "team": f"team-{i % 7}",
                    "request_source": "web",
                },
                "metadata_changes": [],
                "error_message": "" if i % 50 else "Rate limited by the provider.",
                "client_runtime": "python",
                "sdk_version": "openai 1.52.0",
            }
        )
    return records


def bulk_create_baseline(records: list[dict]) -> None:
    # What a plain Django writer would do: model instances from the dicts, one bulk_create.
    with transaction.atomic():
        RequestLog.objects.bulk_create([RequestLog(**record) for record in records])


def timed(write, batches: list[list[dict]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        write(batch)
    return time.perf_counter() - started


# --- stream: gateway -> Redis stream -> consume_log_stream -> database ----------------------


def prefill_stream(client: redis.Redis, key: str, records: list[dict], entry_size: int) -> int:
    """XADD ``records`` as the gateway does (one entry per flush); return the entries added."""
    pipe = client.pipeline(transaction=False)
    entries = 0
    for start in range(0, len(records), entry_size):
        pipe.xadd(key, {"batch": pipeline.encode_batch(records[start : start + entry_size])})
        entries += 1
        if len(pipe) >= 200:
            pipe.execute()
    pipe.execute()
    return entries


def _drain(args: tuple) -> tuple[int, float | None]:
    """One writer: consume_log_stream until the stream is drained. Returns (records written,
    time.monotonic() of its last acknowledgement, when its last batch was committed)."""
    redis_url, key, consumer, max_seconds = args
    from django.db import connections

    connections.close_all()  # a forked writer opens its own database connection
    client = pipeline.redis_client(redis_url)
    last_ack: list[float] = []
    acknowledge = pipeline._acknowledge

    def timed_acknowledge(*a, **kw):
        acknowledge(*a, **kw)
        last_ack.append(time.monotonic())

    pipeline._acknowledge = timed_acknowledge
    written, idle_since = 0, None
    try:
        while True:
            got = pipeline.consume_log_stream(client=client, stream_key=key, consumer=consumer, max_seconds=max_seconds)
            written += got
            if got:
                idle_since = None
                continue
            if client.xlen(key) == 0 and client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 0:
                break
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 60:
                break  # stuck (database down?): reported by the caller
    finally:
        pipeline._acknowledge = acknowledge
        client.close()
    return written, (last_ack[-1] if last_ack else None)


def stream_round(client: redis.Redis, workspace: Workspace, api_key: ApiKey | None, args) -> float:
    """One round of the stream method; returns its logs/s. Raises if a record went missing."""
    key = f"portico:bench:ingest:{uuid.uuid4()}"
    total = args.stream_records
    records = make_records(workspace, api_key, total, random_ids=args.random_ids)
    try:
        prefill_stream(client, key, records, args.entry_size)
        pipeline.ensure_group(client, key)
        rows_before = RequestLog.objects.filter(workspace=workspace).count()
        jobs = [(args.redis_url, key, f"bench-writer-{n}", args.max_seconds) for n in range(args.writers)]
        started = time.monotonic()
        if args.writers == 1:
            results = [_drain(jobs[0])]
        else:
            connection.close()
            with multiprocessing.get_context("fork").Pool(args.writers) as pool:
                results = pool.map(_drain, jobs)
        written = sum(count for count, _ in results)
        finished = max((at for _, at in results if at is not None), default=time.monotonic())
        elapsed = finished - started
        rows = _check_drained(client, key, workspace, rows_before, total, written)
        print(
            f"  stream: {total} records in {-(-total // args.entry_size)} entries, {args.writers} writer(s), "
            f"last batch committed after {elapsed:.2f} s; {rows} rows, 0 pending",
            flush=True,
        )
        return total / elapsed
    finally:
        client.delete(key, f"{key}:dead")


def _check_drained(
    client: redis.Redis, key: str, workspace: Workspace, rows_before: int, total: int, written: int | None
) -> int:
    """The workspace's new rows; raises unless every queued record landed once and the stream
    is empty with nothing pending or dead-lettered."""
    rows = RequestLog.objects.filter(workspace=workspace).count() - rows_before
    pending = client.xpending(key, pipeline.CONSUMER_GROUP)["pending"]
    left, dead = client.xlen(key), client.xlen(f"{key}:dead")
    if written is None:
        written = rows  # the Celery tasks' return values are not kept
    if not (written == rows == total and pending == 0 and left == 0 and dead == 0):
        raise SystemExit(
            f"{total} records queued, {written} reported written, {rows} new rows, "
            f"{pending} pending, {left} left in the stream, {dead} dead-lettered"
        )
    return rows


def celery_round(client: redis.Redis, workspace: Workspace, api_key: ApiKey | None, args) -> float:
    """One round of the celery method: a real Celery worker drains a pre-filled stream; returns
    its logs/s. Raises if a record went missing or the worker stalls."""
    key = f"portico:bench:ingest:{uuid.uuid4()}"
    total = args.stream_records
    records = make_records(workspace, api_key, total, random_ids=args.random_ids)
    log_dir = Path(tempfile.mkdtemp(prefix="portico-bench-ingest-"))
    env = stack.portico_env(
        database_url=os.environ["DATABASE_URL"],
        redis_url=args.redis_url,
        var_dir=log_dir,
        keys=stack.new_secrets(),
        stream_key=key,
    )
    worker = stack.CeleryWorker(env, log_dir, name="bench-ingest-celery", concurrency=args.celery_concurrency)
    try:
        prefill_stream(client, key, records, args.entry_size)
        pipeline.ensure_group(client, key)
        rows_before = RequestLog.objects.filter(workspace=workspace).count()
        worker.start()
        started = finished = None
        give_up = time.monotonic() + 60 + total / 1000
        while finished is None:
            worker.process.check_alive(" while draining the stream")
            if time.monotonic() > give_up:
                raise SystemExit(f"celery: stream not drained in time; worker log {worker.process.log_path}")
            if started is None:
                group = client.xinfo_groups(key)[0]
                if group.get("entries-read") or group.get("pending"):
                    started = time.monotonic()
            elif client.xlen(key) == 0 and client.xpending(key, pipeline.CONSUMER_GROUP)["pending"] == 0:
                finished = time.monotonic()
            time.sleep(0.005)
        rows = _check_drained(client, key, workspace, rows_before, total, None)
        print(
            f"  celery: {total} records in {-(-total // args.entry_size)} entries, worker concurrency "
            f"{args.celery_concurrency}, drained {finished - started:.2f} s after its first read; {rows} rows, 0 pending",
            flush=True,
        )
        return total / (finished - started)
    finally:
        worker.stop()
        client.delete(key, f"{key}:dead")


# --- main -----------------------------------------------------------------------------------

METHODS = {
    "bulk_create": "plain `bulk_create`",
    "write_log_batch": "`write_log_batch`",
    "redelivered": "`write_log_batch`, batch redelivered (all duplicates)",
    "stream": "stream -> `consume_log_stream` ({entry_size} records/entry)",
    "celery": "stream -> Celery worker, concurrency {celery_concurrency} ({entry_size} records/entry)",
}


def clean_workspace(workspace: Workspace) -> None:
    """Delete the bench workspace's logs, rollups and metadata key registry rows."""
    # Raw deletes: the ORM's delete() would first load every log (and its body) into memory.
    logs = RequestLog.objects.filter(workspace=workspace)
    analytics_models.RequestBody.objects.filter(log_id__in=logs.values("id"))._raw_delete(connection.alias)
    logs._raw_delete(connection.alias)
    tables = set(connection.introspection.table_names())
    for name in ("MetadataRollup", "DimensionRollup", "PairRollup", "MetadataKey", "MetadataKeySender"):
        model = getattr(analytics_models, name, None)
        if model is not None and model._meta.db_table in tables:  # a model may be newer than its migration
            model.objects.filter(workspace=workspace).delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="batches per measurement (default 40)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)} (all)")
    parser.add_argument(
        "--stream-records", type=int, help="records through the stream per round (default: batches x batch size)"
    )
    parser.add_argument("--entry-size", type=int, default=50, help="records per stream entry, i.e. per gateway flush")
    parser.add_argument("--max-seconds", type=float, default=5.0, help="consume_log_stream max_seconds (task: 5)")
    parser.add_argument("--redis-url", default=settings.REDIS_URL or "redis://127.0.0.1:6379/15")
    parser.add_argument("--writers", type=int, default=1, help="writer processes for the stream method (default 1)")
    parser.add_argument(
        "--random-ids", action="store_true", help="UUIDv4 log and trace ids instead of the gateway's UUIDv7"
    )
    parser.add_argument(
        "--celery-concurrency", type=int, default=2, help="worker processes for the celery method (default 2)"
    )
    args = parser.parse_args()
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    if unknown := [name for name in methods if name not in METHODS]:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.stream_records is None:
        args.stream_records = args.batches * args.batch_size
    if min(args.batches, args.batch_size, args.rounds, args.stream_records, args.entry_size) < 1:
        parser.error("counts must be positive")

    if "celery" in methods and not os.environ.get("DATABASE_URL"):
        parser.error("the celery method needs DATABASE_URL (the worker is a separate process)")
    client = None
    if "stream" in methods or "celery" in methods:
        # The socket timeout must outlast XREADGROUP's block, as in pipeline.redis_client.
        client = pipeline.redis_client(args.redis_url)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise SystemExit(f"Redis at {args.redis_url} unreachable ({exc}); the stream method needs it") from exc

    call_command("migrate", verbosity=0)
    workspace, _ = Workspace.objects.get_or_create(slug="bench-ingest", defaults={"name": "Bench ingest"})
    api_key = ApiKey.objects.filter(workspace=workspace).first()
    clean_workspace(workspace)
    total = args.batches * args.batch_size
    print(
        f"{connection.vendor}, methods {', '.join(methods)}; batches: {args.batches} x {args.batch_size} records; "
        f"stream: {args.stream_records} records, {args.entry_size} per entry; {args.rounds} round(s)",
        flush=True,
    )

    results: dict[str, list[float]] = {name: [] for name in METHODS if name in methods}
    try:
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            if "bulk_create" in methods:
                other = [
                    make_records(workspace, api_key, args.batch_size, random_ids=args.random_ids)
                    for _ in range(args.batches)
                ]
                results["bulk_create"].append(total / timed(bulk_create_baseline, other))
            if "write_log_batch" in methods or "redelivered" in methods:
                fresh = [
                    make_records(workspace, api_key, args.batch_size, random_ids=args.random_ids)
                    for _ in range(args.batches)
                ]
                if "write_log_batch" in methods:
                    results["write_log_batch"].append(total / timed(write_log_batch, fresh))
                else:
                    timed(write_log_batch, fresh)  # first delivery, not measured
                if "redelivered" in methods:
                    results["redelivered"].append(total / timed(write_log_batch, fresh))
            if "stream" in methods:
                results["stream"].append(stream_round(client, workspace, api_key, args))
            if "celery" in methods:
                results["celery"].append(celery_round(client, workspace, api_key, args))
            for name, rates in results.items():
                print(f"  {name:16} {rates[-1]:>9,.0f} logs/s", flush=True)
    finally:
        clean_workspace(workspace)
        if client is not None:
            client.close()

    baseline = max(results["bulk_create"]) if results.get("bulk_create") else None
    print()
    for name, rates in results.items():
        ratio = f"  {max(rates) / baseline:.2f}x bulk_create" if baseline else ""
        print(f"{name:16} {max(rates):>9,.0f} logs/s  (median {statistics.median(rates):,.0f}){ratio}")
    if baseline is None:
        print("(no bulk_create in --methods: no ratios)")

    print()
    print(f"{args.rounds} round(s), {connection.vendor}; batch methods {args.batches} x {args.batch_size} records;")
    print(f"stream {args.stream_records} records, {args.entry_size} per entry, {args.writers} writer process(es)")
    print(f"log and trace ids: {'UUIDv4 (random)' if args.random_ids else 'UUIDv7 (as the gateway makes them)'}")
    print()
    print("| method | logs/s (best) | median | vs bulk_create |")
    print("| --- | ---: | ---: | ---: |")
    for name, rates in results.items():
        label = METHODS[name].format(entry_size=args.entry_size, celery_concurrency=args.celery_concurrency)
        ratio = f"{max(rates) / baseline:.2f}x" if baseline else "-"
        print(f"| {label} | {max(rates):,.0f} | {statistics.median(rates):,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
