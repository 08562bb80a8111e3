"""Alert rule evaluation: what one rule costs to measure, from the rollups (the whole hours of its
window) plus raw logs at the edges, side by side with a baseline that reads the same window from
raw logs alone, in the same run.

    .venv/bin/python bench/analytics_data.py --logs 1000000 --database-url postgres://...   # once
    .venv/bin/python bench/bench_alerts.py --database-url postgres://... [--workspace bench-data-a]
        [--runs 10] [--baseline-runs 3] [--only "per _user"]

Each case is an unsaved rule of the workspace measured with ``analytics.alerts.evaluation.measure``
(what the minute's evaluation runs per rule); the baseline aggregates the same totals (and latency
histograms for p95) over exactly the same window with ``analytics.reads.engine.log_source`` only.
Both must give the same values (checked: requests, spend to 1e-6, p95 exactly). Prints a Markdown
table with p50/p95 ms and the baseline/rollup ratio; exit status 1 if a value differs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

CASES = [
    # name, fields of the rule
    ("spend, 5m", {"metric": "spend", "window": "5m"}),
    ("p95 latency, 1h", {"metric": "p95_latency", "window": "1h"}),
    ("error rate, 24h, feature=chat", {"metric": "error_rate", "window": "24h", "scope": "metadata.feature=chat"}),
    ("spend, 24h, per _user", {"metric": "spend", "window": "24h", "per": "_user"}),
    ("tokens, 7d, per metadata.team", {"metric": "tokens", "window": "7d", "per": "metadata.team"}),
    ("spend, 30d", {"metric": "spend", "window": "30d"}),
    ("p95 latency, 7d", {"metric": "p95_latency", "window": "7d"}),
]


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("SECRET_KEY", "bench-alerts-" + "k" * 40)
    os.environ.setdefault("PORTICO_ENCRYPTION_KEY", "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=")
    os.environ.setdefault("LOG_LEVEL", "warning")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def timed(fn, runs: int) -> tuple[list[float], object]:
    fn()  # warm: connections, the histogram cache of closed days
    samples, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, result


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def baseline(rule, now):
    """The rule's values from raw logs alone over the same window."""
    from analytics.alerts import metrics, rules
    from analytics.reads.engine import aggregate, log_source

    kind = metrics.REGISTRY[rule.metric]
    grouping = rules.parse_per(rule.per) if rule.per else None
    window = rule.window_spec.bounds(now)
    source = log_source(rule.workspace, window, rules.scope_filter(rule.scope), grouping)
    keys = {"g": source.group_expr(grouping)} if grouping else {}
    values = {}
    for group, totals in aggregate(source, keys, with_histograms=kind.histograms).items():
        value = metrics.scope_value_of(group, grouping)
        if value is not None:
            values[value] = kind.read(totals, rule)
    return values


def same(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    return all(
        (x is None and y is None) or (x is not None and y is not None and abs(x - y) <= 1e-6 * max(1, abs(y)))
        for x, y in ((a[k], b[k]) for k in a)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--workspace", default="bench-data-a")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--only", default="", help="run the cases whose name contains this text")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        parser.error("--database-url postgres://... (a database loaded by bench/analytics_data.py)")
    setup_django(args.database_url)
    from django.utils import timezone

    from analytics.alerts import evaluation
    from analytics.alerts.models import AlertRule
    from analytics.models import RequestLog
    from workspaces.models import Workspace

    workspace = Workspace.objects.get(slug=args.workspace)
    logs = RequestLog.objects.filter(workspace=workspace).count()
    now = timezone.now()
    print(f"workspace {workspace.slug}: {logs:,} logs; now {now:%Y-%m-%d %H:%M} UTC\n")
    print("| rule | values | rollups+edges p50 / p95 ms | raw logs p50 / p95 ms | raw / rollups (p50) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    failed = False
    for name, fields in [case for case in CASES if args.only in case[0]]:
        rule = AlertRule(workspace=workspace, name=name, threshold=1, **fields)
        ours, values = timed(lambda rule=rule: evaluation.measure(rule, now=now)[0], args.runs)
        base, expected = timed(lambda rule=rule: baseline(rule, now), args.baseline_runs)
        agree = same(values, expected)
        failed |= not agree
        print(
            f"| {name} | {len(values):,} | {pct(ours, 50):.1f} / {pct(ours, 95):.1f} | "
            f"{pct(base, 50):.1f} / {pct(base, 95):.1f} | {pct(base, 50) / pct(ours, 50):.1f}x |"
            + ("" if agree else " VALUES DIFFER"),
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
