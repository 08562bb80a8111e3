"""Dashboard memory: resident set size of one process serving 10,000 page views across windows.

The dashboard keeps the merged closed part of each window in a per-process memo (bounded by
cells held). A memo that leaks, or anything that keeps per-view garbage alive (for instance a
``gc.freeze()`` at request time, which makes whatever is alive at that moment immortal), shows
up as RSS that keeps growing with the number of distinct windows viewed.

Seeds ``--logs`` logs with ``seed_demo`` when the workspace has fewer, logs in, then requests
the analytics pages (Overview, Summary by several groupings, Users, Errors, Metadata keys) over
presets and over custom windows that move by the hour and differ in length, so the memo sees
new keys all the time. RSS (VmRSS) is sampled after 1,000 views (the baseline, same process,
same run) and every ``--every`` views after that.

Pass: RSS after ``--views`` views within 10% of RSS after 1,000.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portico_bench .venv/bin/python bench/bench_dashboard_memory.py
        [--logs 50000] [--views 10000] [--every 1000] [--out bench/out]

Writes OUT/dashboard_memory.json and .md.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from config.startup import freeze_startup_heap  # noqa: E402

freeze_startup_heap()  # as the server processes do at start (config/asgi.py)

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.bench_dashboard import prepare  # noqa: E402

LIMIT = 1.10
PAGES = [
    "/w/{ws}/?{window}",
    "/w/{ws}/summary/?{window}&group=metadata.feature",
    "/w/{ws}/summary/?{window}&group=model",
    "/w/{ws}/summary/?{window}&group=user",
    "/w/{ws}/users/?{window}",
    "/w/{ws}/errors/?{window}",
    "/w/{ws}/metadata-keys/?{window}",
]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit("no VmRSS in /proc/self/status (Linux only)")


def windows() -> itertools.cycle:
    """Presets, then custom windows ending 0..47 hours ago and 1..40 days long: ~2,000 distinct
    windows, so the memo keeps meeting new keys and evicting old ones."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    spans = ["range=1h", "range=24h", "range=7d", "range=30d"]
    for hours_ago in range(48):
        for days in range(1, 41):
            end = now - timedelta(hours=hours_ago)
            start = end - timedelta(days=days)
            spans.append(f"start={start:%Y-%m-%dT%H:%M:%SZ}&end={end:%Y-%m-%dT%H:%M:%SZ}")
    return itertools.cycle(spans)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=50_000)
    parser.add_argument("--workspace", default="bench-memory")
    parser.add_argument("--views", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    workspace, _empty, user = prepare(args.workspace, args.logs)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    views = ((page, span) for span in windows() for page in PAGES)
    samples: list[dict] = []
    started = time.perf_counter()
    for view in range(1, args.views + 1):
        page, span = next(views)
        url = page.format(ws=workspace.slug, window=span)
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        if view % args.every == 0:
            samples.append(
                {
                    "views": view,
                    "rss_kib": rss_kib(),
                    "gc_frozen": gc.get_freeze_count(),
                    "gc_tracked": len(gc.get_objects()),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(
                f"{view:>7,} views  RSS {samples[-1]['rss_kib'] / 1024:7.1f} MiB  "
                f"frozen {samples[-1]['gc_frozen']:>9,}  tracked {samples[-1]['gc_tracked']:>9,}",
                flush=True,
            )

    baseline = next(s for s in samples if s["views"] >= 1_000)
    final = samples[-1]
    ratio = final["rss_kib"] / baseline["rss_kib"]
    result = {
        "database": connection.vendor,
        "logs": args.logs,
        "views": args.views,
        "baseline": baseline,
        "final": final,
        "ratio": round(ratio, 3),
        "limit": LIMIT,
        "samples": samples,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard_memory.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Dashboard memory, {args.logs:,} logs ({connection.vendor}), {args.views:,} page views across windows",
        "",
        "| views | RSS MiB | gc frozen | gc tracked |",
        "| ---: | ---: | ---: | ---: |",
        *(
            f"| {s['views']:,} | {s['rss_kib'] / 1024:.1f} | {s['gc_frozen']:,} | {s['gc_tracked']:,} |"
            for s in samples
        ),
        "",
        f"RSS after {final['views']:,} / after {baseline['views']:,} views: {ratio:.3f} (limit {LIMIT})",
    ]
    (out / "dashboard_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
