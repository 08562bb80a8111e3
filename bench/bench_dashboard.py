"""Dashboard server time at scale: every page of a workspace with N logs (default 1,000,000,
seeded with ``seed_demo`` when missing) side by side with the same page of an empty workspace.

Server time is measured in-process with Django's test client (middleware, session, view,
queries, template rendering; no network). Each page is requested once first (with an empty
per-process cache that is the cold case, reported as "first") and then ``--iterations`` times
for p50/p95. The ratio column is p95(N logs) / p95(empty workspace).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portico_bench python bench/bench_dashboard.py

Writes bench/out/dashboard.json and bench/out/dashboard.md. Exits 1 if a page's p95 is over
the budget (150 ms).
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

from config.startup import freeze_startup_heap  # noqa: E402

freeze_startup_heap()  # as the server processes do at start (config/asgi.py)

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.test import Client  # noqa: E402

from analytics.models import DimensionRollup, RequestLog  # noqa: E402
from workspaces import services  # noqa: E402
from workspaces.models import Workspace  # noqa: E402

BUDGET_MS = 150.0
PAGES = [
    ("overview 24h", "/w/{ws}/?range=24h"),
    ("overview 7d", "/w/{ws}/?range=7d"),
    ("overview 30d", "/w/{ws}/?range=30d"),
    ("logs 24h", "/w/{ws}/logs/?range=24h"),
    ("logs 24h, 2 metadata pairs", "/w/{ws}/logs/?range=24h&metadata.environment=production&metadata.feature=search"),
    ("logs 7d, 2 metadata pairs", "/w/{ws}/logs/?range=7d&metadata.team=discovery&metadata.country=DE"),
    ("logs load more", "/w/{ws}/logs/rows/?range=24h&cursor={cursor}"),
    ("log detail (htmx)", "/w/{ws}/logs/{log_id}/"),
    ("summary 30d by metadata.feature", "/w/{ws}/summary/?range=30d&group=metadata.feature"),
    ("summary 30d by user", "/w/{ws}/summary/?range=30d&group=user"),
    ("summary 7d by model", "/w/{ws}/summary/?range=7d&group=model"),
    ("users 30d", "/w/{ws}/users/?range=30d"),
    ("errors 30d", "/w/{ws}/errors/?range=30d"),
    ("metadata keys 30d", "/w/{ws}/metadata-keys/?range=30d"),
    ("audit", "/w/{ws}/audit/"),
    ("settings", "/w/{ws}/settings/"),
    ("settings: API keys", "/w/{ws}/settings/keys/"),
    ("settings: providers", "/w/{ws}/settings/providers/"),
]


def _logs_in(workspace: Workspace) -> int:
    return DimensionRollup.objects.filter(workspace=workspace).aggregate(n=Sum("requests"))["n"] or 0


def prepare(slug: str, logs: int) -> tuple[Workspace, Workspace, object]:
    user, _ = get_user_model().objects.get_or_create(username="bench-dashboard")
    workspace = Workspace.objects.filter(slug=slug).first()
    have = _logs_in(workspace) if workspace else 0
    if have < logs:
        print(f"Seeding {logs - have:,} logs into '{slug}' (has {have:,}) ...", file=sys.stderr)
        call_command("seed_demo", logs=logs - have, workspace=slug, seed=have + 1)
        workspace = Workspace.objects.get(slug=slug)
    empty = Workspace.objects.filter(slug=f"{slug}-empty").first() or services.workspace_create(
        slug=f"{slug}-empty", name="Empty"
    )
    for ws in (workspace, empty):
        services.membership_add(workspace=ws, user=user, role="owner")
    return workspace, empty, user


def _urls(workspace: Workspace, client: Client) -> dict[str, str]:
    latest = RequestLog.objects.filter(workspace=workspace).order_by("-created_at").values_list("id", flat=True)
    log_id = latest.first()
    first = client.get(f"/w/{workspace.slug}/logs/?range=24h")
    cursor = (first.context or {}).get("next_cursor") or ""
    urls = {}
    for name, pattern in PAGES:
        if "{log_id}" in pattern and log_id is None:
            continue
        urls[name] = pattern.format(ws=workspace.slug, cursor=cursor, log_id=log_id)
    return urls


def measure(client: Client, url: str, iterations: int, headers: dict) -> dict:
    started = time.perf_counter()
    response = client.get(url, headers=headers)
    first = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}")
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        client.get(url, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * len(samples)) - 1)]
    return {"first_ms": round(first, 1), "p50_ms": round(statistics.median(samples), 1), "p95_ms": round(p95, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=1_000_000)
    parser.add_argument("--workspace", default="bench")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()

    workspace, empty, user = prepare(args.workspace, args.logs)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    rows = []
    big_urls, empty_urls = _urls(workspace, client), _urls(empty, client)
    for name, url in big_urls.items():
        headers = {"HX-Request": "true"} if "detail" in name or "load more" in name else {}
        big = measure(client, url, args.iterations, headers)
        base_url = empty_urls.get(name)
        base = measure(client, base_url, args.iterations, headers) if base_url else None
        ratio = round(big["p95_ms"] / base["p95_ms"], 2) if base and base["p95_ms"] else None
        rows.append({"page": name, "url": url, "logs": big, "empty": base, "p95_ratio": ratio})
        print(
            f"{name:34} p50 {big['p50_ms']:7.1f}  p95 {big['p95_ms']:7.1f}  first {big['first_ms']:7.1f}  ratio {ratio}"
        )

    result = {
        "database": connection.vendor,
        "logs": _logs_in(workspace),
        "iterations": args.iterations,
        "budget_ms": BUDGET_MS,
        "pages": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Dashboard server time, {result['logs']:,} logs ({connection.vendor}), {args.iterations} requests per page",
        "",
        "| page | p50 ms | p95 ms | first ms | empty p95 ms | p95 ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        base = row["empty"]["p95_ms"] if row["empty"] else "n/a"
        lines.append(
            f"| {row['page']} | {row['logs']['p50_ms']} | {row['logs']['p95_ms']} | {row['logs']['first_ms']} "
            f"| {base} | {row['p95_ratio']} |"
        )
    (out / "dashboard.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    over = [row["page"] for row in rows if row["logs"]["p95_ms"] > BUDGET_MS]
    if over:
        print(f"Over the {BUDGET_MS:.0f} ms p95 budget: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
