"""Analytics API benchmark: each endpoint side by side with a raw-SQL baseline in the same run.

    .venv/bin/python bench/bench_analytics.py --database-url postgres://... --workspace bench
        [--runs 20] [--baseline-runs 3] [--days 30] [--key customer] [--pairs environment=production,region=eu]
        [--export-rows 200000] [--out bench/out]

Needs a Postgres database already holding logs and rollups for the workspace (load one with
bench/analytics_data.py). Requests go through the real URL/DRF/view stack in-process (Django's
test client, a temporary logs.read key that is deleted afterwards); baselines run the SQL a
rollup-less implementation would run against the same database:

| case | Portico | baseline |
| --- | --- | --- |
| groups/metadata/<key>, 30 days | rollups | raw-log GROUP BY value with percentile_cont |
| graphs requests / latency, 30 days | rollups | raw-log GROUP BY day (latency with percentiles) |
| first page of logs, two metadata pairs | keyset + GIN containment | same SELECT ... LIMIT 50 in plain SQL |
| export (rows/s) | streamed CSV export | COPY (SELECT ...) TO STDOUT (FORMAT csv) |

Targets (10M logs): summary/graphs p95 < 100 ms, filtered first page p95 < 100 ms, export >
50,000 rows/s. Prints a Markdown table and writes OUT/analytics.md and OUT/analytics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
TARGET_MS = 100.0
TARGET_EXPORT = 50_000


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("SECRET_KEY", "bench-analytics-" + "k" * 40)
    os.environ.setdefault("PORTICO_ENCRYPTION_KEY", "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=")
    os.environ["ALLOWED_HOSTS"] = "testserver,localhost"
    os.environ["SECURE_SSL_REDIRECT"] = "false"  # in-process requests are plain http
    os.environ.setdefault("LOG_LEVEL", "warning")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from config.startup import freeze_startup_heap

    freeze_startup_heap()  # as the server processes do at start (config/asgi.py)


def timed(fn: Callable[[], object], runs: int) -> tuple[list[float], object, float]:
    """Samples (ms) of ``runs`` calls after a first, cold call (reported apart: it fills the
    histogram cache and warms connections)."""
    start = time.perf_counter()
    fn()
    cold = (time.perf_counter() - start) * 1000
    samples, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, result, cold


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def sql(query: str, params: list) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from django.test import Client
        from django.utils import timezone

        from workspaces import services
        from workspaces.models import Workspace

        self.args = args
        self.workspace = Workspace.objects.get(slug=args.workspace)
        self.api_key, full_key = services.api_key_create(workspace=self.workspace, name="bench_analytics (temporary)")
        self.client = Client(headers={"x-portkey-api-key": full_key})
        # Whole hours, as rollups answer: the baselines then read exactly the same logs.
        self.end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        self.start = self.end - timedelta(days=args.days)
        inclusive_end = self.end - timedelta(microseconds=1)
        self.window = {"start": self.start.isoformat(), "end": inclusive_end.isoformat()}
        self.rows: list[dict] = []

    def close(self) -> None:
        self.api_key.delete()

    def get(self, path: str, **params) -> dict:
        response = self.client.get(path, {**self.window, **params})
        assert response.status_code == 200, (path, response.content[:500])
        return response.json()

    def compare(self, name: str, api: Callable[[], object], baseline: Callable[[], object], check=None) -> None:
        api_ms, api_result, api_cold = timed(api, self.args.runs)
        base_ms, base_result, _ = timed(baseline, self.args.baseline_runs or self.args.runs)
        note = check(api_result, base_result) if check else ""
        self.rows.append(
            {
                "case": name,
                "api_cold": api_cold,
                "api_p50": pct(api_ms, 50),
                "api_p95": pct(api_ms, 95),
                "base_p50": pct(base_ms, 50),
                "base_p95": pct(base_ms, 95),
                "target": f"p95 < {TARGET_MS:.0f} ms",
                "ok": pct(api_ms, 95) < TARGET_MS,
                "note": note,
            }
        )
        print(f"{name}: api p95 {pct(api_ms, 95):.1f} ms, baseline p95 {pct(base_ms, 95):.1f} ms {note}", flush=True)

    # --- cases ---------------------------------------------------------------------------
    def groups(self, key: str) -> None:
        def baseline():
            return sql(
                "SELECT metadata->>%s AS v, count(*), sum(cost), sum(prompt_tokens + completion_tokens), "
                "avg(latency_ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), "
                "avg(success::int), max(created_at) FROM analytics_requestlog "
                "WHERE workspace_id = %s AND created_at >= %s AND created_at < %s AND metadata ? %s "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT 50",
                [key, self.workspace.id, self.start, self.end, key],
            )

        def check(api, base):
            total_api = sum(r["requests"] for r in api["data"])
            total_base = sum(r[1] for r in base)
            return f"(requests on page: api {total_api:,}, raw {total_base:,}; source {api['source']})"

        self.compare(
            f"groups/metadata/{key}, {self.args.days} d",
            lambda: self.get(f"/api/v1/analytics/groups/metadata/{key}"),
            baseline,
            check,
        )

    def graphs(self) -> None:
        day = "date_trunc('day', created_at AT TIME ZONE 'UTC')"
        where = "WHERE workspace_id = %s AND created_at >= %s AND created_at < %s"

        def requests_base():
            return sql(
                f"SELECT {day}, count(*) FROM analytics_requestlog {where} GROUP BY 1",
                [self.workspace.id, self.start, self.end],
            )

        def latency_base():
            return sql(
                f"SELECT {day}, avg(latency_ms), percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP "
                f"(ORDER BY latency_ms) FROM analytics_requestlog {where} GROUP BY 1",
                [self.workspace.id, self.start, self.end],
            )

        def check(api, base):
            total = sum(r[1] for r in base)
            return f"(total: api {api['summary']['total']:,}, raw {total:,}; source {api['source']})"

        self.compare(
            f"graphs/requests, {self.args.days} d",
            lambda: self.get("/api/v1/analytics/graphs/requests"),
            requests_base,
            check,
        )
        self.compare(
            f"graphs/latency, {self.args.days} d",
            lambda: self.get("/api/v1/analytics/graphs/latency"),
            latency_base,
            lambda api, base: f"(p99 api {api['summary']['p99']} ms; source {api['source']})",
        )

    def first_page(self, pairs: dict[str, str]) -> None:
        params = {f"metadata.{k}": v for k, v in pairs.items()}

        def baseline():
            return sql(
                "SELECT id, created_at, provider, model, status_code, latency_ms, cost, metadata "
                "FROM analytics_requestlog WHERE workspace_id = %s AND created_at >= %s AND created_at <= %s "
                "AND metadata @> %s::jsonb ORDER BY created_at DESC, id DESC LIMIT 50",
                [
                    self.workspace.id,
                    self.end - timedelta(days=7, microseconds=1),
                    self.end - timedelta(microseconds=1),
                    json.dumps(pairs),
                ],
            )

        def check(api, base):
            same = [r["id"] for r in api["data"]] == [str(r[0]) for r in base]
            return f"({len(api['data'])} rows, same rows as raw: {same})"

        label = " & ".join(f"{k}={v}" for k, v in pairs.items())
        self.compare(
            f"logs first page, {label}",
            lambda: self.client.get("/api/v1/logs", {**params, "end": self.window["end"]}).json(),
            baseline,
            check,
        )

    def export(self, export_format: str) -> None:
        from django.db import connection

        params = {**self.window, "format": export_format}
        limit_rows = self.args.export_rows

        def api():
            response = self.client.get("/api/v1/logs/export", params)
            rows = -1  # header line
            for chunk in response.streaming_content:
                rows += chunk.count(b"\n")
                if rows >= limit_rows:
                    break
            response.close()
            return rows

        def baseline():
            from analytics.selectors import EXPORT_COLUMNS

            columns = ", ".join('"user"' if c == "user" else c for c in EXPORT_COLUMNS if c != "workspace")
            query = (
                f"COPY (SELECT {columns} FROM analytics_requestlog WHERE workspace_id = {self.workspace.id} "
                f"AND created_at >= '{self.start.isoformat()}' AND created_at < '{self.end.isoformat()}' "
                f"ORDER BY created_at DESC, id DESC LIMIT {limit_rows}) TO STDOUT (FORMAT csv)"
            )
            rows = 0
            with connection.cursor() as wrapper, wrapper.cursor.copy(query) as copy:
                for block in copy:
                    rows += bytes(block).count(b"\n")
            return rows

        results = {}
        for name, fn in (("api", api), ("base", baseline)):
            fn()  # warm
            start = time.perf_counter()
            rows = fn()
            seconds = time.perf_counter() - start
            results[name] = (rows, rows / seconds)
        self.rows.append(
            {
                "case": f"export {export_format.upper()}, {results['api'][0]:,} rows",
                "api_rate": results["api"][1],
                "base_rate": results["base"][1],
                "target": f"> {TARGET_EXPORT:,} rows/s",
                "ok": results["api"][1] > TARGET_EXPORT,
                "note": f"(COPY wrote {results['base'][0]:,} rows)",
            }
        )
        print(f"export {export_format}: api {results['api'][1]:,.0f} rows/s, COPY {results['base'][1]:,.0f} rows/s")


def table(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| case | Portico first call | Portico p50 | Portico p95 | baseline p50 | baseline p95 "
        "| p95 ratio (baseline / Portico) | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "api_rate" in r:
            lines.append(
                f"| {r['case']} | | {r['api_rate']:,.0f} rows/s | | {r['base_rate']:,.0f} rows/s (COPY) | | "
                f"{r['api_rate'] / r['base_rate']:.2f} of COPY | {r['target']} | {'yes' if r['ok'] else 'NO'} |"
            )
        else:
            lines.append(
                f"| {r['case']} | {r['api_cold']:.1f} ms | {r['api_p50']:.1f} ms | {r['api_p95']:.1f} ms | {r['base_p50']:.1f} ms | "
                f"{r['base_p95']:.1f} ms | {r['base_p95'] / r['api_p95']:.1f}x | {r['target']} | "
                f"{'yes' if r['ok'] else 'NO'} |"
            )
    lines += ["", *(f"- {r['case']}: {r['note']}" for r in rows if r.get("note"))]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--workspace", required=True, help="slug of the loaded workspace")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--baseline-runs",
        type=int,
        help="runs of the raw-SQL baselines (default: --runs; they take seconds each at 10M)",
    )
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--key", help="metadata key to group by (default: the busiest non-_user key)")
    parser.add_argument("--pairs", help="two metadata pairs for the filtered page, k=v,k2=v2 (default: top values)")
    parser.add_argument("--export-rows", type=int, default=200_000, help="rows to export (0: the whole window)")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "bench" / "out")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        parser.error("--database-url must point at the Postgres database holding the loaded workspace")
    setup_django(args.database_url)
    if args.export_rows <= 0:
        args.export_rows = 10**12

    from analytics.models import MetadataKey, RequestLog

    bench = Bench(args)
    try:
        keys = list(MetadataKey.objects.filter(workspace=bench.workspace).exclude(key="_user").order_by("-requests"))
        key = args.key or (keys[0].key if keys else "_user")
        if args.pairs:
            pairs = dict(item.split("=", 1) for item in args.pairs.split(","))
        else:
            pairs = {k.key: max(k.top_values, key=k.top_values.get) for k in keys[:2] if k.top_values}
        logs = RequestLog.objects.filter(workspace=bench.workspace).count()
        print(f"workspace {args.workspace}: {logs:,} logs; group key {key}; pairs {pairs}", flush=True)
        bench.groups(key)
        bench.graphs()
        bench.first_page(pairs)
        bench.export("csv")
        bench.export("jsonl")
    finally:
        bench.close()
    header = f"## Analytics API, {logs:,} logs in workspace `{args.workspace}` ({args.runs} runs per case)"
    report = table(bench.rows, header)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "analytics.md").write_text(report)
    (args.out / "analytics.json").write_text(json.dumps({"logs": logs, "rows": bench.rows}, indent=2, default=str))
    return 0 if all(r["ok"] for r in bench.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
