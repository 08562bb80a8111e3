"""What a Portkey config costs on the hot path: the plain request (x-portkey-provider) against
the same request routed by a fallback config whose first target answers, in the same run.

The gateway's ASGI app is called in-process (no HTTP server, no client in between, so the
gateway's own work is what differs) against the real mock upstream on loopback, with a fresh
SQLite database (embedded mode: no Redis). Requests alternate plain / config one by one, so
both see the same machine load; the report gives per-request medians, their difference in
microseconds (the config's added cost) and the ratio.

    .venv/bin/python bench/bench_configs.py [--requests 3000] [--warmup 300] [--json OUT]

The check: a config with fallback adds at most 50 us when the first target answers
(exit status 1 otherwise).
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
_db = Path(tempfile.mkdtemp(prefix="portico-bench-configs-")) / "db.sqlite3"
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_db}")
os.environ.setdefault("DEBUG", "true")
os.environ.pop("REDIS_URL", None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench.mock_upstream import MockUpstream  # noqa: E402

BUDGET_US = 50.0
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]})
FALLBACK = orjson.dumps({"strategy": {"mode": "fallback"}, "targets": [{"provider": "@mock"}, {"provider": "@backup"}]})


def _prepare(upstream: MockUpstream) -> str:
    from workspaces import services

    call_command("migrate", verbosity=0)
    ws = services.workspace_create(slug="bench", name="Bench", store_bodies=False)
    _, key = services.api_key_create(workspace=ws, name="bench")
    services.provider_create(workspace=ws, slug="mock", base_url=upstream.base_url, api_key="sk-mock")
    services.provider_create(workspace=ws, slug="backup", base_url=upstream.base_url, api_key="sk-backup")
    return key


def _scope(headers: dict[str, str]) -> dict:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-type", b"application/json"))
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"",
        "headers": raw,
    }


async def _call(app, scope: dict) -> float:
    """One request through the ASGI app; seconds until the body's last byte was sent."""
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


async def _run(key: str, requests: int, warmup: int) -> dict:
    from gateway.app import GatewayApp

    app = GatewayApp()
    await app.startup()
    plain = _scope({"x-portkey-api-key": key, "x-portkey-provider": "@mock"})
    config = _scope({"x-portkey-api-key": key, "x-portkey-config": FALLBACK.decode()})
    try:
        for _ in range(warmup):  # caches filled, connections pooled, prices loaded
            await _call(app, plain)
            await _call(app, config)
        times: dict[str, list[float]] = {"plain": [], "config": []}
        for i in range(requests):
            # Alternate which goes first, so neither always follows the other.
            order = (("plain", plain), ("config", config)) if i % 2 else (("config", config), ("plain", plain))
            for name, scope in order:
                times[name].append(await _call(app, scope))
    finally:
        await app.shutdown()
    return times


def _report(times: dict[str, list[float]]) -> dict:
    def us(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    plain_p50, config_p50 = statistics.median(times["plain"]) * 1e6, statistics.median(times["config"]) * 1e6
    return {
        "requests_each": len(times["plain"]),
        "plain_p50_us": round(plain_p50, 1),
        "config_p50_us": round(config_p50, 1),
        "plain_p90_us": round(us(times["plain"], 0.9), 1),
        "config_p90_us": round(us(times["config"], 0.9), 1),
        "added_p50_us": round(config_p50 - plain_p50, 1),
        "ratio_p50": round(config_p50 / plain_p50, 3),
        "budget_us": BUDGET_US,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    with MockUpstream() as upstream:
        key = _prepare(upstream)
        times = asyncio.run(_run(key, args.requests, args.warmup))
    result = _report(times)
    print("| request | p50 (us) | p90 (us) |\n| --- | --- | --- |")
    print(f"| plain (x-portkey-provider) | {result['plain_p50_us']} | {result['plain_p90_us']} |")
    print(f"| config: fallback, first target answers | {result['config_p50_us']} | {result['config_p90_us']} |")
    print(
        f"\nadded by the config: {result['added_p50_us']} us at p50 (ratio {result['ratio_p50']}); "
        f"budget {BUDGET_US:.0f} us"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["added_p50_us"] <= BUDGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
