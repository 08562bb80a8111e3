"""The upstream client decision, re-runnable: Portico's native HTTP/1.1 client against the
aiohttp adapter (``UPSTREAM_CLIENT=native|aiohttp``, workspaces/upstream/), same run, same mock.

The mock upstream (bench/mock_upstream.py, latency 0, 5 chunks per stream) runs in its own
process; the client runs in this one on uvloop, as in the gateway. Each measurement is a
closed loop of ``c`` concurrent requests for ``--duration`` seconds after a warm-up, for
non-streaming and streaming chat, at every ``--concurrency``; the two clients take turns
(order alternating per round) for ``--rounds`` rounds and the median round is reported:

- ``req/s``: throughput (the mock shares the machine: read it as a comparison);
- ``p50 ms``: median latency of a request (whole body read);
- ``CPU us/req``: this process's CPU time per request, i.e. what the client costs the gateway's
  worker, the number least disturbed by other load on the machine.

    .venv/bin/python bench/bench_upstream_clients.py [--concurrency 1,32] [--duration 5]
        [--rounds 3] [--scenarios chat,chat-stream]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "true")  # loopback allowed by the SSRF guard, as in development
os.environ.setdefault("UPSTREAM_ALLOWED_NETWORKS", "127.0.0.0/8")

import aiohttp  # noqa: E402
import django  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402
from yarl import URL  # noqa: E402

CLIENTS = ("native", "aiohttp")
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mock(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "bench/mock_upstream.py", "--host", "127.0.0.1", "--port", str(port), "--chunks", "5"],
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_mock/stats", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the mock upstream did not start")


async def one(client, url: URL, body: bytes, stream: bool) -> float:
    started = time.perf_counter()
    resp = await client.request(
        "POST",
        url,
        {"content-type": "application/json", "authorization": "Bearer sk-bench"},
        body,
        aiohttp.ClientTimeout(sock_connect=10, sock_read=30),
        base_path="/v1",
    )
    if stream:
        async for _ in resp.content.iter_any():
            pass
    else:
        await resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}")
    resp.release()
    return time.perf_counter() - started


async def measure(kind: str, url: URL, stream: bool, concurrency: int, duration: float) -> dict:
    from workspaces.upstream.client import make_client

    client = make_client(kind=kind)
    body = orjson.dumps({**BODY, "stream": True} if stream else BODY)
    try:
        for _ in range(100):  # warm-up: connections, DNS, caches
            await one(client, url, body, stream)
        latencies: list[float] = []
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                latencies.append(await one(client, url, body, stream))

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await client.close()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "cpu_us": cpu / len(latencies) * 1e6,
    }


def run(args: argparse.Namespace) -> list[dict]:
    port = free_port()
    mock = start_mock(port)
    url = URL(f"http://127.0.0.1:{port}/v1/chat/completions")
    rows = []
    try:
        for scenario in args.scenarios:
            for concurrency in args.concurrency:
                results: dict[str, list[dict]] = {kind: [] for kind in CLIENTS}
                for round_no in range(args.rounds):
                    order = CLIENTS if round_no % 2 == 0 else CLIENTS[::-1]
                    for kind in order:
                        result = uvloop.run(measure(kind, url, scenario == "chat-stream", concurrency, args.duration))
                        results[kind].append(result)
                rows.append({"scenario": scenario, "c": concurrency, **{k: _median(v) for k, v in results.items()}})
                print(_row(rows[-1]), flush=True)
    finally:
        mock.terminate()
        mock.wait(timeout=10)
    return rows


def _median(results: list[dict]) -> dict:
    """The round with the median throughput (its latency and CPU belong to the same round)."""
    return sorted(results, key=lambda r: r["rps"])[len(results) // 2]


HEADER = (
    "| scenario | c | native req/s | aiohttp req/s | native/aiohttp | native p50 ms | aiohttp p50 ms "
    "| native CPU us/req | aiohttp CPU us/req | aiohttp/native CPU |\n" + "| --- " * 10 + "|"
)


def _row(row: dict) -> str:
    n, a = row["native"], row["aiohttp"]
    return (
        f"| {row['scenario']} | {row['c']} | {n['rps']:,.0f} | {a['rps']:,.0f} | {n['rps'] / a['rps']:.2f}x "
        f"| {n['p50_ms']:.3f} | {a['p50_ms']:.3f} | {n['cpu_us']:.0f} | {a['cpu_us']:.0f} "
        f"| {a['cpu_us'] / n['cpu_us']:.2f}x |"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,32", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", default="chat,chat-stream", type=lambda s: s.split(","))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    django.setup()
    print(HEADER, flush=True)
    run(args)
    load = os.getloadavg()
    print(f"\nload average during the run: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
