"""What policies cost on the hot path: the same request in a workspace without policies and in
one with 10 policies that all match it (5 rate limits, 5 token/cost budgets; per _user,
per metadata.feature, per metadata.team and workspace-wide; minute, hour, day, month and rolling
windows), side by side in the same run.

The gateway's ASGI app is called in-process (no HTTP server, no client in between) against the
real mock upstream on loopback, with a fresh SQLite database and a private redis-server
(bench/stack.py) holding the counters and the log stream, as in production. The policies'
limits are high enough never to refuse: this measures the counting, not refusals.

- concurrency 1: requests alternate without / with policies one by one (same machine load);
  the report gives per-request medians and their difference in microseconds;
- concurrency 32: closed-loop throughput, --duration seconds per block, blocks alternating
  without / with policies, --blocks times each; req/s ratio.

    .venv/bin/python bench/bench_policies.py [--requests 3000] [--warmup 300] [--duration 3]
        [--blocks 3] [--json OUT]

Targets (issue #15): added p50 <= 50 us at concurrency 1; throughput at 32 within 10%.
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_tmp = Path(tempfile.mkdtemp(prefix="portico-bench-policies-"))
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_tmp / 'db.sqlite3'}")
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.stack import RedisServer  # noqa: E402

_redis = RedisServer(_tmp / "redis").start()
os.environ["REDIS_URL"] = _redis.url

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench.bench_configs import _scope  # noqa: E402
from bench.mock_upstream import MockUpstream  # noqa: E402

BUDGET_US = 50.0
THROUGHPUT_RATIO = 0.9
BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50}
)
METADATA = orjson.dumps({"_user": "user-7", "feature": "chat", "team": "red", "environment": "prod"}).decode()
POLICIES = [
    {"kind": "requests", "window": "minute", "per": "_user"},
    {"kind": "requests", "window": "minute", "per": "metadata.feature"},
    {"kind": "requests", "window": "hour", "scope": "metadata.environment__in=prod,staging"},
    {"kind": "requests", "window": "day", "per": "metadata.team"},
    {"kind": "requests", "window": "1h", "scope": "model=gpt-4o-mini"},
    {"kind": "cost", "window": "month", "per": "_user"},
    {"kind": "cost", "window": "day", "per": "metadata.team"},
    {"kind": "tokens", "window": "hour", "per": "metadata.feature"},
    {"kind": "tokens", "window": "24h", "scope": "metadata.feature=chat"},
    {"kind": "cost", "window": "month"},
]


def _prepare(upstream: MockUpstream) -> tuple[str, str]:
    from analytics.policies import services as policy_services
    from workspaces import services

    call_command("migrate", verbosity=0)
    keys = []
    for slug in ("plain", "policies"):
        ws = services.workspace_create(slug=slug, name=slug, store_bodies=False)
        _, key = services.api_key_create(workspace=ws, name="bench")
        services.provider_create(workspace=ws, slug="mock", base_url=upstream.base_url, api_key="sk-mock")
        keys.append(key)
        if slug == "policies":
            for index, fields in enumerate(POLICIES):
                policy_services.policy_create(workspace=ws, name=f"p{index}", limit=10**9, **fields)
    return keys[0], keys[1]


async def _call(app, scope: dict) -> float:
    status = []

    async def receive() -> dict:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    started = time.perf_counter()
    await app(scope, receive, send)
    elapsed = time.perf_counter() - started
    if status != [200]:
        raise RuntimeError(f"request failed: {status}")
    return elapsed


async def _closed_loop(app, scope: dict, concurrency: int, duration: float) -> float:
    done = 0
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await _call(app, scope)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def _run(keys: tuple[str, str], args: argparse.Namespace) -> dict:
    from gateway.app import GatewayApp
    from gateway.policies import policy_cache

    app = GatewayApp()
    await app.startup()
    scopes = {
        name: _scope({"x-portkey-api-key": key, "x-portkey-provider": "@mock", "x-portkey-metadata": METADATA})
        for name, key in zip(("none", "ten"), keys, strict=True)
    }
    try:
        for _ in range(args.warmup):  # caches filled, counters rebuilt, connections pooled
            for scope in scopes.values():
                await _call(app, scope)
        assert len(policy_cache.peek(2, ())) == len(POLICIES), "the policies are not active"
        times: dict[str, list[float]] = {"none": [], "ten": []}
        for i in range(args.requests):
            order = ("none", "ten") if i % 2 else ("ten", "none")
            for name in order:
                times[name].append(await _call(app, scopes[name]))
        rates: dict[str, list[float]] = {"none": [], "ten": []}
        for block in range(args.blocks):
            order = ("none", "ten") if block % 2 else ("ten", "none")
            for name in order:
                rates[name].append(await _closed_loop(app, scopes[name], 32, args.duration))
    finally:
        await app.shutdown()
    return {"times": times, "rates": rates}


def _report(raw: dict) -> dict:
    times, rates = raw["times"], raw["rates"]
    none_p50, ten_p50 = statistics.median(times["none"]) * 1e6, statistics.median(times["ten"]) * 1e6
    none_rate, ten_rate = statistics.median(rates["none"]), statistics.median(rates["ten"])
    return {
        "requests_each": len(times["none"]),
        "none_p50_us": round(none_p50, 1),
        "ten_p50_us": round(ten_p50, 1),
        "added_p50_us": round(ten_p50 - none_p50, 1),
        "none_rps_c32": round(none_rate),
        "ten_rps_c32": round(ten_rate),
        "rps_ratio_c32": round(ten_rate / none_rate, 3),
        # Each block against the one run right next to it (same machine load): steadier on a
        # busy machine than the ratio of the medians.
        "rps_ratio_c32_paired": round(
            statistics.median(ten / none for ten, none in zip(rates["ten"], rates["none"], strict=True)), 3
        ),
        "blocks": rates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    try:
        with MockUpstream() as upstream:
            keys = _prepare(upstream)
            result = _report(asyncio.run(_run(keys, args)))
    finally:
        _redis.stop()
    print("| policies matching | c=1 p50 (us) | c=32 req/s |\n| --- | --- | --- |")
    print(f"| none | {result['none_p50_us']} | {result['none_rps_c32']} |")
    print(f"| 10 | {result['ten_p50_us']} | {result['ten_rps_c32']} |")
    print(
        f"\nadded at c=1: {result['added_p50_us']} us at p50 (target <= {BUDGET_US:.0f}); "
        f"c=32 throughput ratio {result['rps_ratio_c32']} (target >= {THROUGHPUT_RATIO}; "
        f"median of adjacent block pairs {result['rps_ratio_c32_paired']})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = result["added_p50_us"] <= BUDGET_US and result["rps_ratio_c32"] >= THROUGHPUT_RATIO
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
