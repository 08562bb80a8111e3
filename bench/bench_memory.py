"""Gateway memory: RSS of one Portico worker over 100,000 requests (leak check).

Starts the same production setup as bench/gateway_overhead.py (mock upstream; a fresh
PostgreSQL database; uvicorn + uvloop + httptools with ONE worker, so the server process is the
worker; Redis log stream; Celery worker + beat), then sends --requests requests at
--concurrency through the gateway and samples the worker's resident set size (VmRSS) after
1,000 requests and every --every requests after that.

The traffic is varied the way real traffic is, so per-request state that is kept by mistake
shows up: 3 in 4 requests are non-streaming chat and 1 in 4 streaming chat, ``_user`` metadata
cycles through 1,000 values, every request gets a fresh trace id, log id and log record, and 1
in 100 requests carries invalid metadata (a logged 400).

Pass: RSS after all requests within 20% of RSS after 1,000 requests, and under 200 MB; every
request logged. Writes OUT/bench_memory.md and .json.

    .venv/bin/python bench/bench_memory.py [--requests 100000] [--concurrency 32] [--every 10000]
        [--postgres URL | --database-url URL] [--redis-url URL] [--out bench/out]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import orjson

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench import gateway_overhead as go  # noqa: E402

BASELINE_AT = 1_000
GROWTH_LIMIT = 0.20
RSS_LIMIT = 200 * 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--every", type=int, default=10_000, help="RSS sample interval in requests")
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--postgres", default=go.DEFAULT_POSTGRES, help="server for a fresh, dropped-after database")
    db.add_argument("--database-url", help="use this database (the bench workspace is removed after)")
    parser.add_argument("--redis-url", default=go.DEFAULT_REDIS)
    parser.add_argument("--out", type=Path, default=BASE_DIR / "bench" / "out")
    args = parser.parse_args(argv)
    if args.requests < BASELINE_AT * 2:
        parser.error(f"--requests must be at least {BASELINE_AT * 2}")
    return args


async def drive(args: argparse.Namespace, url: str, key: str, pid: int) -> tuple[list[dict], dict[str, int]]:
    """Send the requests; sample RSS at the checkpoints. Returns (samples, outcome counts)."""
    chat = {**go.CHAT_BODY}
    bodies = [orjson.dumps(chat), orjson.dumps({**chat, "stream": True})]
    checkpoints = sorted({BASELINE_AT, *range(args.every, args.requests + 1, args.every), args.requests})
    samples: list[dict] = []
    outcome: dict[str, int] = {}
    next_index = 0
    done = 0
    started = time.perf_counter()

    def sample_now() -> None:
        samples.append({"requests": done, "rss": go.rss_bytes(pid), "elapsed_s": time.perf_counter() - started})
        rss_mb = samples[-1]["rss"] / 2**20
        print(f"  {done:>7,} requests: worker RSS {rss_mb:6.1f} MB", flush=True)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index, done
        while next_index < args.requests:
            i = next_index
            next_index += 1
            stream = i % 4 == 3
            metadata = {"_user": f"user-{i % 1000}", "feature": "memory"}
            if i % 100 == 99:
                metadata["bad"] = "x" * 200  # over the 128-character limit: a logged 400
            headers = {
                "content-type": "application/json",
                "x-portkey-api-key": key,
                "x-portkey-provider": "@mock",
                "x-portkey-metadata": orjson.dumps(metadata).decode(),
            }
            try:
                async with session.post(url, data=bodies[stream], headers=headers) as resp:
                    await resp.read()
                    kind = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                kind = type(exc).__name__
            outcome[kind] = outcome.get(kind, 0) + 1
            done += 1
            if checkpoints and done >= checkpoints[0]:
                checkpoints.pop(0)
                sample_now()

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=go.REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    return samples, outcome


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = go.redact_url(shlex.join([go.venv_python(), "bench/bench_memory.py", *(argv or sys.argv[1:])]))
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, go._raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="portico-membench-"))
    procs = go.Processes(tmp)
    run_id = uuid.uuid4().hex[:10]
    stream_key = f"portico:membench:{run_id}:logs"
    created_db = None
    if args.database_url:
        database_url = args.database_url
    else:
        created_db = f"portico_membench_{run_id}"
        database_url = go.create_database(args.postgres, created_db)
    workspace_id = None
    try:
        mock_port = go.free_port()
        mock_cmd = [sys.executable, "bench/mock_upstream.py", "--host", go.HOST, "--port", str(mock_port)]
        mock_cmd += ["--chunks", str(go.STREAM_CHUNKS)]
        mock = procs.start("mock", mock_cmd, {**os.environ, "PYTHONUNBUFFERED": "1"})
        mock_url = f"http://{go.HOST}:{mock_port}"
        go.wait_until(lambda: go.http_ok(mock_url + "/_mock/stats"), "mock upstream", mock, procs.log_of("mock"))
        env = go.child_env(tmp, database_url, args.redis_url, stream_key)
        print(f"preparing database {go.redact_url(database_url)}", flush=True)
        workspace_id, key = go.prepare_database(env, mock_url + "/v1", f"membench-{run_id}")
        go.start_celery(procs, env, tmp, run_id)
        port = go.free_port()
        gateway = procs.start("portico", go.portico_command(port, 1), env)
        url = f"http://{go.HOST}:{port}"
        go.wait_until(lambda: go.http_ok(url + "/healthz"), "portico", gateway, procs.log_of("portico"))
        rss_start = go.rss_bytes(gateway.pid)
        print(f"portico on {url} (one worker, pid {gateway.pid}, RSS at start {rss_start / 2**20:.1f} MB)")
        busy = go.cpu_busy(1.0)
        print(f"sending {args.requests:,} requests at concurrency {args.concurrency}", flush=True)
        loop_factory = None
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
        started = time.monotonic()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            samples, outcome = runner.run(drive(args, url + "/v1/chat/completions", key, gateway.pid))
        seconds = time.monotonic() - started
        time.sleep(2)
        idle = {"requests": samples[-1]["requests"], "rss": go.rss_bytes(gateway.pid), "elapsed_s": None}
        expected = sum(n for kind, n in outcome.items() if kind.startswith("HTTP "))
        print(f"waiting for {expected:,} log rows", flush=True)
        landed, waited = go.wait_for_logs(workspace_id, expected, drain_here=False, stream_key=stream_key)

        base = next(s for s in samples if s["requests"] >= BASELINE_AT)
        final = samples[-1]
        growth = final["rss"] / base["rss"] - 1
        peak = max(s["rss"] for s in samples)
        ok_growth = growth <= GROWTH_LIMIT
        ok_limit = peak < RSS_LIMIT and idle["rss"] < RSS_LIMIT
        ok_logs = landed == expected
        errors = {k: v for k, v in outcome.items() if k not in ("HTTP 200", "HTTP 400")}
        mb = 2**20
        lines = [
            f"## Gateway memory ({time.strftime('%Y-%m-%d %H:%M')})",
            "",
            f"- machine: {os.cpu_count()} CPU(s), {platform.platform(terse=True)}, Python {platform.python_version()};"
            f" busy before the run: {'unknown' if busy is None else f'{busy:.0%}'}",
            "- Portico: `uvicorn config.asgi:application --workers 1 --loop uvloop --http httptools --no-access-log"
            " --lifespan on` (DEBUG=false), logs via Redis stream -> Celery -> fresh PostgreSQL",
            f"- load: {args.requests:,} requests at concurrency {args.concurrency} in {seconds:.0f} s"
            f" ({args.requests / seconds:,.0f} req/s); 3/4 chat, 1/4 streaming chat, 1,000 distinct `_user`"
            " values, 1 in 100 with invalid metadata (400)",
            f"- outcomes: {', '.join(f'{k} x{v:,}' for k, v in sorted(outcome.items()))}",
            "",
            "| requests | worker RSS (MB) | vs after 1,000 |",
            "| ---: | ---: | ---: |",
            f"| 0 (started) | {rss_start / mb:.1f} | - |",
        ]
        for s in samples:
            lines.append(f"| {s['requests']:,} | {s['rss'] / mb:.1f} | {s['rss'] / base['rss'] - 1:+.2%} |")
        lines.append(
            f"| {idle['requests']:,} + 2 s idle | {idle['rss'] / mb:.1f} | {idle['rss'] / base['rss'] - 1:+.2%} |"
        )
        lines += [
            "",
            f"- growth from {base['requests']:,} to {final['requests']:,} requests: {growth:+.2%}"
            f" (limit +{GROWTH_LIMIT:.0%}) - {'OK' if ok_growth else 'MISSED'}",
            f"- peak RSS {peak / mb:.1f} MB (limit {RSS_LIMIT / mb:.0f} MB) - {'OK' if ok_limit else 'MISSED'}",
            f"- logs: {expected:,} requests answered, {landed:,} log rows landed"
            f" ({waited:.1f} s after the load) - {'OK' if ok_logs else 'MISMATCH'}",
            f"- request errors (other than the intended 400s): {sum(errors.values())}",
            "",
            "Command:",
            "",
            "```",
            command,
            "```",
            "",
        ]
        report = "\n".join(lines)
        print()
        print(report)
        (args.out / "bench_memory.md").write_text(report)
        raw = {
            "samples": samples,
            "idle": idle,
            "rss_start": rss_start,
            "outcome": outcome,
            "logs": {"expected": expected, "landed": landed},
            "growth": growth,
            "peak": peak,
        }
        (args.out / "bench_memory.json").write_text(json.dumps(raw, indent=2))
        return 0 if ok_growth and ok_limit and ok_logs and not errors else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        names = [name for name, _, _ in procs.procs]
        procs.stop_all()
        for name in names:
            with contextlib.suppress(OSError):
                shutil.copyfile(tmp / f"{name}.log", args.out / f"memory-{name}.log")
        with contextlib.suppress(Exception):
            from django.db import connections

            if workspace_id is not None and args.database_url:
                go.cleanup_database(workspace_id, args.redis_url, stream_key)
            connections.close_all()
        with contextlib.suppress(Exception):
            go.cleanup_redis(args.redis_url, stream_key)
        if created_db:
            try:
                go.drop_database(args.postgres, created_db)
            except Exception as exc:
                print(f"could not drop database {created_db}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
