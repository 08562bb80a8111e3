"""Filtered analytics at scale: Summary (and Overview, Users, Errors) with one filter from the
Logs vocabulary, side by side with the same page unfiltered, in the same run.

Data comes from bench/analytics_data.py (workspace ``bench-data-a``; load with ``--workspaces 1``
so it holds every log):

    .venv/bin/python bench/analytics_data.py --logs 1000000 --days 30 --workspaces 1 \\
        --database-url postgres://postgres@127.0.0.1:5432/portico_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portico_bench .venv/bin/python bench/bench_filtered.py

Server time in-process with Django's test client (as bench/bench_dashboard.py): one request
first (cold), then ``--iterations`` for p50/p95 (warm: the closed-period cache answers). With
``--cold N``, N more requests per page each after flushing the read cache (Django's cache, i.e.
the Redis db of REDIS_URL, and the per-process memo), so every one is a miss: cold p50/p95
beside the warm ones. Each filtered page names the source the engine chose (rollups, pairs
(PairRollup, two-key rollups) or logs). Budgets: filtered Summary over 7 days p95 < 300 ms, warm
and (with --cold) cold, unfiltered pages p95 < 150 ms warm. Writes OUT/filtered.json and .md;
exits 1 over a budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.http import QueryDict  # noqa: E402
from django.test import Client  # noqa: E402

from analytics.filters import LogFilter  # noqa: E402
from analytics.forms import log_filter_data, parse_window  # noqa: E402
from analytics.models import DimensionRollup, PairRollup, RequestLog  # noqa: E402
from analytics.reads import engine  # noqa: E402
from analytics.reads.cache import clear_memo  # noqa: E402
from analytics.reads.engine import Grouping, choose_source  # noqa: E402
from bench.bench_dashboard import measure  # noqa: E402  (sets Django up, freezes the start-up heap)
from workspaces import services  # noqa: E402
from workspaces.models import Workspace  # noqa: E402

FILTERED_BUDGET_MS = 300.0
UNFILTERED_BUDGET_MS = 150.0
# (name, page path and query without a filter, the one filter added)
PAGES = [
    ("summary 7d by feature, environment=production", "summary/?range=7d&group=metadata.feature", "metadata.environment=production"),
    ("summary 7d by model, team=team3", "summary/?range=7d&group=model", "metadata.team=team3"),
    ("summary 7d by feature, model=gpt-4o", "summary/?range=7d&group=metadata.feature", "model=gpt-4o"),
    ("summary 7d by model, provider=openai", "summary/?range=7d&group=model", "provider=openai"),
    ("summary 7d by feature, tier__ne=free", "summary/?range=7d&group=metadata.feature", "metadata.customer_tier__ne=free"),
    ("overview 7d, environment=production", "?range=7d", "metadata.environment=production"),
    ("users 7d, environment=production", "users/?range=7d", "metadata.environment=production"),
    ("errors 7d, environment=production", "errors/?range=7d", "metadata.environment=production"),
]  # fmt: skip


def _source(workspace: Workspace, query: str, extra: str) -> str:
    params = QueryDict(f"{query.split('?', 1)[1]}&{extra}")
    window, _ = parse_window(params)
    log_filter = LogFilter(log_filter_data(params, window), queryset=RequestLog.objects.all())
    assert log_filter.is_valid(), log_filter.errors
    # What each page groups by: Summary its group, Users by user, Errors by its dimensions.
    group = params.get("group") or ("user" if query.startswith("users/") else "")
    grouping = Grouping.parse(group) if group else Grouping("model") if query.startswith("errors/") else None
    source = choose_source(
        workspace=workspace, log_filter=log_filter, window=(window.start, window.end), grouping=grouping
    )
    return "pairs" if source.queryset.model is PairRollup else source.name


def measure_cold(client: Client, url: str, count: int) -> dict:
    """``count`` views of ``url``, each after the read cache was flushed: every one a miss."""
    samples = []
    for _ in range(count):
        cache.clear()
        clear_memo()
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * len(samples)) - 1)]
    return {"p50_ms": round(statistics.median(samples), 1), "p95_ms": round(p95, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default="bench-data-a")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument(
        "--cold", type=int, default=0, metavar="N", help="N cache-miss views per page (flushes the cache)"
    )
    parser.add_argument("--pages", default="", help="only pages whose name holds one of these (separated by |)")
    parser.add_argument(
        "--no-pairs",
        action="store_true",
        help="read as if there were no pair rollups (the raw-log path): a before/after",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    if args.no_pairs:
        engine.complete_pairs = lambda *args, **kwargs: None
    wanted = [part.strip() for part in args.pages.split("|") if part.strip()]
    pages = [page for page in PAGES if not wanted or any(part in page[0] for part in wanted)]

    workspace = Workspace.objects.get(slug=args.workspace)
    user, _ = get_user_model().objects.get_or_create(username="bench-filtered")
    services.membership_add(workspace=workspace, user=user, role="owner")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    logs = DimensionRollup.objects.filter(workspace=workspace).aggregate(n=Sum("requests"))["n"] or 0
    rows = []
    for name, query, extra in pages:
        url = f"/w/{workspace.slug}/{query}"
        plain = measure(client, url, args.iterations, {})
        narrowed = measure(client, f"{url}&{extra}", args.iterations, {})
        cold = measure_cold(client, f"{url}&{extra}", args.cold) if args.cold else None
        plain_cold = measure_cold(client, url, args.cold) if args.cold else None
        ratio = round(narrowed["p95_ms"] / plain["p95_ms"], 2) if plain["p95_ms"] else None
        source = _source(workspace, query, extra)
        rows.append(
            {
                "page": name,
                "source": source,
                "unfiltered": plain,
                "filtered": narrowed,
                "p95_ratio": ratio,
                "filtered_cold": cold,
                "unfiltered_cold": plain_cold,
            }
        )
        cold_text = f"  cold: unfiltered {plain_cold['p95_ms']:7.1f} filtered {cold['p95_ms']:7.1f}" if cold else ""
        print(
            f"{name:48} {source:8} unfiltered p95 {plain['p95_ms']:7.1f}  filtered p95 {narrowed['p95_ms']:7.1f}"
            + cold_text,
            flush=True,
        )

    result = {
        "database": connection.vendor,
        "logs": logs,
        "iterations": args.iterations,
        "cold_iterations": args.cold,
        "no_pairs": args.no_pairs,
        "pages": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "filtered.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Filtered vs unfiltered pages, {logs:,} logs in one workspace ({connection.vendor}), "
        f"{args.iterations} requests per page",
        "",
        "| page (one filter) | filtered source | unfiltered p50 / p95 ms | filtered p50 / p95 ms | filtered first ms | p95 ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['page']} | {r['source']} | {r['unfiltered']['p50_ms']} / {r['unfiltered']['p95_ms']} "
            f"| {r['filtered']['p50_ms']} / {r['filtered']['p95_ms']} | {r['filtered']['first_ms']} | {r['p95_ratio']} |"
            for r in rows
        ),
    ]
    if args.cold:
        lines += [
            "",
            f"Cold: {args.cold} views per page, each after flushing the read cache (every view a miss)",
            "",
            "| page (one filter) | filtered source | unfiltered cold p50 / p95 ms | filtered cold p50 / p95 ms |",
            "| --- | --- | ---: | ---: |",
            *(
                f"| {r['page']} | {r['source']} | {r['unfiltered_cold']['p50_ms']} / {r['unfiltered_cold']['p95_ms']} "
                f"| {r['filtered_cold']['p50_ms']} / {r['filtered_cold']['p95_ms']} |"
                for r in rows
            ),
        ]
    (out / "filtered.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    over = [r["page"] for r in rows if r["unfiltered"]["p95_ms"] > UNFILTERED_BUDGET_MS]
    over += [
        r["page"] + " (filtered)"
        for r in rows
        if r["page"].startswith("summary") and r["filtered"]["p95_ms"] > FILTERED_BUDGET_MS
    ]
    over += [
        r["page"] + " (filtered, cold)"
        for r in rows
        if r["page"].startswith("summary") and r["filtered_cold"] and r["filtered_cold"]["p95_ms"] > FILTERED_BUDGET_MS
    ]
    if over:
        print(f"Over budget: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
