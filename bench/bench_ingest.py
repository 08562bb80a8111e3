"""Log ingestion throughput: write_log_batch (COPY + INSERT ... ON CONFLICT on Postgres) versus
plain Django bulk_create of the same records, in the same run and database.

    createdb -h 127.0.0.1 -U postgres portico_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portico_bench .venv/bin/python bench/bench_ingest.py

Records are gateway-shaped (5-key metadata, no bodies), 500 per batch. The bench workspace's
rows are deleted before and after. Prints logs/s per method, best of --rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from analytics.ingest import write_log_batch  # noqa: E402
from analytics.models import RequestLog  # noqa: E402
from workspaces.models import ApiKey, Workspace  # noqa: E402

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b"]


def make_records(workspace: Workspace, api_key: ApiKey | None, count: int) -> list[dict]:
    now = timezone.now()
    records = []
    for i in range(count):
        prompt, completion = 100 + i % 900, 20 + i % 300
        records.append(
            {
                "id": str(uuid.uuid4()),
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
                "retry_count": 0,
                "trace_id": uuid.uuid4().hex,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="batches per measurement (default 40)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    workspace, _ = Workspace.objects.get_or_create(slug="bench-ingest", defaults={"name": "Bench ingest"})
    api_key = ApiKey.objects.filter(workspace=workspace).first()
    RequestLog.objects.filter(workspace=workspace).delete()
    print(
        f"{connection.vendor}, {args.batches} batches x {args.batch_size} records, best of {args.rounds} rounds",
        flush=True,
    )

    results: dict[str, list[float]] = {"write_log_batch": [], "write_log_batch (redelivered)": [], "bulk_create": []}
    total = args.batches * args.batch_size
    try:
        for _ in range(args.rounds):
            fresh = [make_records(workspace, api_key, args.batch_size) for _ in range(args.batches)]
            other = [make_records(workspace, api_key, args.batch_size) for _ in range(args.batches)]
            results["bulk_create"].append(total / timed(bulk_create_baseline, other))
            results["write_log_batch"].append(total / timed(write_log_batch, fresh))
            results["write_log_batch (redelivered)"].append(total / timed(write_log_batch, fresh))
    finally:
        RequestLog.objects.filter(workspace=workspace).delete()

    for name, rates in results.items():
        print(f"{name:32} {max(rates):>9,.0f} logs/s  (median {statistics.median(rates):,.0f})")
    ratio = max(results["write_log_batch"]) / max(results["bulk_create"])
    print(f"write_log_batch / bulk_create: {ratio:.2f}x")


if __name__ == "__main__":
    main()
