"""What Prometheus metrics cost the gateway: Portico with metrics off and on, side by side in one
run, against the same mock upstream (README "Monitoring"; the budget is +20 us p50 at
concurrency 1 and -5% req/s at concurrency 32).

One command:

1. starts the mock upstream, a private redis-server (the log stream) and a fresh PostgreSQL
   database (created on --postgres, migrated, dropped afterwards);
2. starts two gateways in the production setup (uvicorn + uvloop + httptools, one worker each,
   DEBUG off): "metrics-off" (no METRICS_TOKEN) and "metrics-on" (METRICS_TOKEN set,
   METRICS_METADATA_LABELS=environment,feature); every request carries that metadata;
3. concurrency 1: --requests per gateway, each request interleaved with a direct call to the
   mock (bench/gateway_overhead.py's ``interleaved``); "added" = median of gateway - direct;
4. concurrency --concurrency: --rounds rounds of --duration seconds per gateway, order
   alternating, req/s and gateway CPU per request summed over the rounds;
5. scrapes /metrics of "metrics-on" and checks it counted every request it answered;
6. prints a Markdown table (also OUT/bench_metrics.md, raw numbers in bench_metrics.json).

    .venv/bin/python bench/bench_metrics.py [--requests 2000] [--concurrency 32] [--duration 5]
        [--rounds 3] [--postgres URL] [--out bench/out]

No Celery worker: the stream is emptied between phases instead, so both gateways see the same
Redis and the machine's two cores are left to the gateways, the mock and the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import orjson

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench import stack  # noqa: E402
from bench.gateway_overhead import (  # noqa: E402
    CHAT_BODY,
    REQUEST_TIMEOUT_S,
    Target,
    closed_loop,
    cpu_busy,
    interleaved,
    measured_loop,
    prepare_database,
)

TOKEN = "bench-metrics-token"
METADATA = '{"environment": "production", "feature": "bench-metrics", "_user": "bench"}'
STREAM_KEY = "portico:bench-metrics:logs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="concurrency-1 requests per gateway")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per gateway per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "bench" / "out")
    return parser.parse_args(argv)


def empty_stream(redis: stack.RedisServer) -> None:
    with redis.client() as client:
        client.delete(STREAM_KEY)


def scrape_requests(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "portico_requests_total" and sample.labels.get("feature") == "bench-metrics"
    )


async def measure(args: argparse.Namespace, targets: list[Target], redis: stack.RedisServer) -> dict:
    body = orjson.dumps(CHAT_BODY)
    _direct, off, on = targets
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    results: dict = {"load": {off.name: [], on.name: []}}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        print("  warm-up", flush=True)
        for target in targets:
            await closed_loop(session, target, body, False, 8, requests=500)
        empty_stream(redis)
        print(f"  concurrency 1: {args.requests} requests per gateway, interleaved with direct calls", flush=True)
        samples, _alongside, paired = await interleaved(session, targets, body, False, args.requests)
        results["c1"] = {name: sample.to_json() for name, sample in samples.items()}
        results["paired_median_ms"] = {name: statistics.median(diffs) * 1000 for name, diffs in paired.items()}
        results["errors"] = {name: dict(sample.errors) for name, sample in samples.items()}
        for r in range(args.rounds):
            order = [off, on] if r % 2 == 0 else [on, off]
            print(f"  concurrency {args.concurrency}: round {r + 1}/{args.rounds}", flush=True)
            for target in order:
                empty_stream(redis)
                await closed_loop(session, target, body, False, args.concurrency, requests=2 * args.concurrency)
                sample = await measured_loop(session, target, body, False, args.concurrency, args.duration)
                results["load"][target.name].append(sample.to_json())
                for error, count in sample.errors.items():
                    errors = results["errors"].setdefault(target.name, {})
                    errors[error] = errors.get(error, 0) + count
    results["sent"] = {t.name: t.sent for t in targets}
    return results


def load_totals(rounds: list[dict]) -> dict:
    ok = sum(r["ok"] for r in rounds)
    elapsed = sum(r["elapsed_s"] for r in rounds)
    cpu = sum(r["cpu_s"] for r in rounds)
    return {"rps": ok / elapsed if elapsed else math.nan, "cpu_us_per_request": cpu / ok * 1e6 if ok else math.nan}


def report(args: argparse.Namespace, results: dict, busy_before: float | None) -> str:
    off, on = "metrics-off", "metrics-on"
    added_off, added_on = results["paired_median_ms"][off], results["paired_median_ms"][on]
    load_off, load_on = load_totals(results["load"][off]), load_totals(results["load"][on])
    ratio = load_on["rps"] / load_off["rps"]
    lines = [
        "# Metrics on vs off (bench/bench_metrics.py)",
        "",
        f"Machine busy before the run: {busy_before:.0%}" if busy_before is not None else "",
        "",
        f"| gateway | added p50 at c=1 (ms) | req/s at c={args.concurrency} | gateway CPU per request (us) |",
        "| --- | --- | --- | --- |",
        f"| {off} | {added_off:.3f} | {load_off['rps']:.0f} | {load_off['cpu_us_per_request']:.0f} |",
        f"| {on} | {added_on:.3f} | {load_on['rps']:.0f} | {load_on['cpu_us_per_request']:.0f} |",
        "",
        f"- added p50, on - off: {(added_on - added_off) * 1000:+.1f} us (budget +20 us)",
        f"- req/s at c={args.concurrency}, on / off: {ratio:.3f} (budget >= 0.95)",
        f"- CPU per request, on / off: {load_on['cpu_us_per_request'] / load_off['cpu_us_per_request']:.3f}",
        f"- /metrics of {on} counted {results['scraped']:.0f} of the {results['answered_on']} requests it answered",
        f"- errors: {results['errors']}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="portico-bench-metrics-"))
    started: list = []
    database_url = None
    try:
        mock = stack.MockUpstreamServer(tmp).start()
        started.append(mock)
        redis = stack.RedisServer(tmp / "redis").start()
        started.append(redis)
        database_url = stack.create_database(args.postgres, f"portico_bench_metrics_{uuid.uuid4().hex[:8]}")
        keys = stack.new_secrets()
        common = {"database_url": database_url, "redis_url": redis.url, "keys": keys, "stream_key": STREAM_KEY}
        env_off = stack.portico_env(var_dir=tmp / "off", **common)
        env_on = stack.portico_env(
            var_dir=tmp / "on", METRICS_TOKEN=TOKEN, METRICS_METADATA_LABELS="environment,feature", **common
        )
        _, key = prepare_database(env_off, mock.base_url, "bench-metrics")
        gateways = {}
        for name, env in (("metrics-off", env_off), ("metrics-on", env_on)):
            gateways[name] = stack.Gateway(env, tmp, name=name).start()
            started.append(gateways[name])
        headers = {
            "content-type": "application/json",
            "x-portkey-api-key": key,
            "x-portkey-provider": "@mock",
            "x-portkey-metadata": METADATA,
            "x-portkey-debug": "false",
        }
        targets = [
            Target("direct", "direct", mock.base_url + "/chat/completions", {"content-type": "application/json"})
        ]
        for name, gateway in gateways.items():
            targets.append(
                Target(name, "portico", gateway.url + "/v1/chat/completions", headers, pids=[gateway.process.pid])
            )
        busy_before = cpu_busy(2.0)
        print(f"Machine {busy_before:.0%} busy before the run" if busy_before is not None else "", flush=True)
        results = asyncio.run(measure(args, targets, redis))
        time.sleep(0.5)  # the last flush (50 ms) reaches the metrics files
        results["scraped"] = scrape_requests(gateways["metrics-on"].url)
        on_errors = sum(results["errors"].get("metrics-on", {}).values())
        results["answered_on"] = results["sent"]["metrics-on"] - on_errors
        text = report(args, results, busy_before)
        (args.out / "bench_metrics.md").write_text(text)
        (args.out / "bench_metrics.json").write_text(json.dumps(results, indent=2, default=str))
        print(text)
        return 0 if not any(results["errors"].values()) else 1
    finally:
        for process in reversed(started):
            process.stop()
        if database_url:
            from django.db import connections

            connections.close_all()
            stack.drop_database(database_url)


if __name__ == "__main__":
    raise SystemExit(main())
