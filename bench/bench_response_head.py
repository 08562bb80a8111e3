"""One write per answer (config.response_head) against uvicorn's own two, in the same run.

Two uvicorn servers with the production flags (uvloop, httptools, no access log) serve the same
small ASGI app, an answer the size of a chat completion: one as uvicorn ships it, one with
config.response_head installed. A client (aiohttp, uvloop, one pooled session, as in
bench/gateway_overhead.py) sends requests at concurrency 1, alternating between the two
request by request (the order flips every request), so both see the same machine. The report
gives each server's p50/p90 latency, the difference at p50 and the ratio.

    .venv/bin/python bench/bench_response_head.py [--requests 6000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 300
BODY = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1760000000,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":6,"total_tokens":18}}'
)

if os.environ.get("PORTICO_BENCH_ONE_WRITE") == "1":  # the server side: uvicorn imports this module
    sys.path.insert(0, str(ROOT))
    from config import response_head

    response_head.install()


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(one_write: bool) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PORTICO_BENCH_ONE_WRITE": "1" if one_write else "0"}
    cmd = [sys.executable, "-m", "uvicorn", "bench.bench_response_head:app", "--port", str(port)]
    cmd += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server on port {port} did not start")


async def _measure(urls: dict[str, str], requests: int) -> dict[str, list[float]]:
    import aiohttp

    times: dict[str, list[float]] = {name: [] for name in urls}
    order = list(urls.items())
    async with aiohttp.ClientSession() as session:
        for i in range(WARMUP + requests):
            for name, url in order if i % 2 else reversed(order):
                started = time.perf_counter()
                async with session.post(url, data=b'{"model": "gpt-4o-mini"}') as resp:
                    body = await resp.read()
                elapsed = time.perf_counter() - started
                if resp.status != 200 or body != BODY:
                    raise SystemExit(f"{name}: unexpected answer {resp.status}")
                if i >= WARMUP:
                    times[name].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import uvloop

    servers = {"uvicorn (two writes)": _start(False), "one write": _start(True)}
    try:
        print(f"concurrency 1, {args.requests:,} requests per server per round, alternating request by request")
        print("| round | two writes p50 (us) | one write p50 (us) | difference p50 (us) | ratio | p90 two / one (us) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        diffs = []
        for round_no in range(1, args.rounds + 1):
            times = uvloop.run(_measure({name: url for name, (_, url) in servers.items()}, args.requests))
            two, one = (sorted(times[name]) for name in servers)
            p50_two, p50_one = statistics.median(two) * 1e6, statistics.median(one) * 1e6
            p90_two, p90_one = two[int(0.9 * len(two))] * 1e6, one[int(0.9 * len(one))] * 1e6
            diffs.append(p50_two - p50_one)
            print(
                f"| {round_no} | {p50_two:.1f} | {p50_one:.1f} | {p50_two - p50_one:+.1f} | "
                f"{p50_one / p50_two:.3f} | {p90_two:.0f} / {p90_one:.0f} |"
            )
        print(f"\nmedian difference at p50: {statistics.median(diffs):+.1f} us (positive: one write is faster)")
        print(f"load average: {os.getloadavg()[0]:.2f}")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
