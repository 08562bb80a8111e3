"""Gateway overhead: the same mock upstream called directly and through the gateway, side by side.

One run does everything: starts the mock upstream (bench/mock_upstream.py, latency 0), prepares a
database (a fresh SQLite file in a temp dir unless --database-url is given), creates a workspace,
an API key and an ``@mock`` provider, starts the gateway the production way (uvicorn + uvloop +
httptools, one worker, DEBUG=false) and then measures

- at concurrency 1: per-request latency, DIRECT (client -> mock) and GATEWAY (client -> gateway ->
  mock) interleaved request by request, for non-streaming chat and streaming chat (5 chunks),
  plus time to first chunk for streams; "added" is gateway minus direct per percentile;
- at every other --concurrency: requests per second both ways (closed loop, --duration seconds).

Afterwards it waits (up to 30 s) until every request sent through the gateway has its log row in
the database (with --redis-url the stream is drained into the database by this process, as the
Celery consumer would) and prints a Markdown table, also written to OUT/gateway_overhead.md
(raw numbers in OUT/gateway_overhead.json, server logs next to them).

The client (aiohttp, one pooled session, uvloop) runs in this process and shares the machine's
cores with the gateway and the mock: on a 2-core box the DIRECT throughput is largely the
client's and the mock's limit, so read req/s ratios as "how much the gateway costs here".

    .venv/bin/python bench/gateway_overhead.py [--requests N] [--concurrency 1,32] [--duration S]
        [--database-url URL] [--redis-url URL] [--out bench/out] [--profile]

--profile attaches py-spy (if installed) to the gateway during the concurrency-1 phase and writes
collapsed stacks to OUT/gateway_profile_<scenario>.txt (the latency numbers of such a run are perturbed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

BASE_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WARMUP = 200
STREAM_CHUNKS = 5
LOG_WAIT_S = 30.0
REQUEST_TIMEOUT_S = 30.0
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
METADATA = '{"_user": "bench", "feature": "gateway-overhead"}'


# ------------------------------------------------------------------------ processes


class Processes:
    """Child processes, each in its own session (Ctrl-C reaches only us); stopped in reverse."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                cwd=BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((name, proc, log_path))
        return proc

    def log_of(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def stop_all(self, timeout: float = 10.0) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc, _ in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {proc.pid}) did not stop in {timeout:.0f} s: killed", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(check, what: str, proc: subprocess.Popen, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not come up within {timeout:.0f} s:\n{tail(log_path)}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return resp.status == 200


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over ``seconds`` (Linux /proc/stat), None elsewhere."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return 1 - (idle1 - idle0) / total if total else None


def redact_url(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def venv_python() -> str:
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        return str(exe.relative_to(BASE_DIR))
    return str(exe)


# ------------------------------------------------------------------------ database


def child_env(args: argparse.Namespace, tmp: Path, database_url: str, stream_key: str) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYTEST_VERSION")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        PORTICO_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS=HOST,
        SECURE_SSL_REDIRECT="false",
        UPSTREAM_ALLOWED_NETWORKS="127.0.0.0/8",
        DATABASE_URL=database_url,
        PORTICO_VAR_DIR=str(tmp),
        LOG_STREAM_KEY=stream_key,
        LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
    )
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    return env


def prepare_database(env: dict[str, str], mock_base_url: str, slug: str) -> tuple[int, str]:
    """Migrate, then create the bench workspace, key and @mock provider; returns (workspace id, key)."""
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    if subprocess.run(migrate, cwd=BASE_DIR, env=env, check=False).returncode != 0:
        raise SystemExit("manage.py migrate failed (see above)")
    # This process uses the same settings as the children (same database, keys).
    os.environ.update(env)
    if "REDIS_URL" not in env:
        os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.db import connections

    from workspaces import services

    workspace = services.workspace_create(slug=slug, name="Gateway overhead benchmark")
    _, key = services.api_key_create(workspace=workspace, name="bench key")
    services.provider_create(workspace=workspace, slug="mock", base_url=mock_base_url, api_key="sk-mock-bench")
    connections.close_all()
    return workspace.pk, key


def count_logs(workspace_id: int) -> int:
    from analytics.models import RequestLog

    return RequestLog.objects.filter(workspace_id=workspace_id).count()


def wait_for_logs(workspace_id: int, expected: int, redis_url: str | None, stream_key: str) -> tuple[int, float]:
    started = time.monotonic()
    deadline = started + LOG_WAIT_S
    landed = count_logs(workspace_id)
    while landed < expected and time.monotonic() < deadline:
        if redis_url:
            from analytics import pipeline

            # What the Celery consumer does in production, run here so no worker is needed.
            pipeline.consume_log_stream(stream_key=stream_key, max_seconds=1.0, block_ms=200)
        else:
            time.sleep(0.2)
        landed = count_logs(workspace_id)
    return landed, time.monotonic() - started


def cleanup_database(workspace_id: int, external_db: bool, redis_url: str | None, stream_key: str) -> None:
    """Remove what the run added to a database or Redis we did not create."""
    from django.db import connections

    from analytics.models import RequestBody, RequestLog
    from workspaces.models import Workspace

    if external_db:
        RequestBody.objects.filter(log__workspace_id=workspace_id).delete()
        RequestLog.objects.filter(workspace_id=workspace_id).delete()
        Workspace.objects.filter(pk=workspace_id).delete()
    connections.close_all()
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        client.delete(stream_key)
        client.close()


# ------------------------------------------------------------------------ load


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    sent: int = 0


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds
    ttfc: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    elapsed: float = 0.0  # wall time of the phase (throughput runs)

    @property
    def count(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


async def call(session: aiohttp.ClientSession, target: Target, body: bytes, stream: bool) -> tuple[float, float, str]:
    """One request, body read to the end: (latency, time to first body chunk, error or "")."""
    target.sent += 1
    t0 = time.perf_counter()
    first = 0.0
    error = ""
    try:
        async with session.post(target.url, data=body, headers=target.headers) as resp:
            if stream:
                last = b""
                while chunk := await resp.content.readany():
                    if not first:
                        first = time.perf_counter()
                    last = (last + chunk)[-64:]
                if resp.status == 200 and b"[DONE]" not in last:
                    error = "stream without [DONE]"
            else:
                await resp.read()
            if resp.status != 200:
                error = f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = type(exc).__name__
    t1 = time.perf_counter()
    return t1 - t0, (first or t1) - t0, error


def record(sample: Sample, result: tuple[float, float, str]) -> None:
    latency, ttfc, error = result
    if error:
        sample.errors[error] += 1
    else:
        sample.latencies.append(latency)
        sample.ttfc.append(ttfc)


async def sequential_pair(
    session: aiohttp.ClientSession, direct: Target, gateway: Target, body: bytes, stream: bool, n: int
) -> tuple[Sample, Sample, list[float]]:
    """n requests each way at concurrency 1, interleaved (order flipped every request) so both
    see the same machine state; also returns the paired differences gateway - direct."""
    samples = {direct.name: Sample(), gateway.name: Sample()}
    paired: list[float] = []
    started = time.perf_counter()
    for i in range(n):
        order = (direct, gateway) if i % 2 == 0 else (gateway, direct)
        results = {}
        for target in order:
            results[target.name] = result = await call(session, target, body, stream)
            record(samples[target.name], result)
        d, g = results[direct.name], results[gateway.name]
        if not d[2] and not g[2]:
            paired.append(g[0] - d[0])
    wall = time.perf_counter() - started
    for target in (direct, gateway):
        sample = samples[target.name]
        # Each side's own busy time: the other side's requests ran in between.
        sample.elapsed = sum(sample.latencies) or wall
    return samples[direct.name], samples[gateway.name], paired


async def closed_loop(
    session: aiohttp.ClientSession,
    target: Target,
    body: bytes,
    stream: bool,
    concurrency: int,
    *,
    duration: float | None = None,
    requests: int | None = None,
) -> Sample:
    """`concurrency` workers back to back, for `duration` seconds or `requests` requests in all."""
    sample = Sample()
    budget = [requests if requests is not None else math.inf]
    started = time.perf_counter()
    deadline = started + duration if duration is not None else math.inf

    async def worker() -> None:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            record(sample, await call(session, target, body, stream))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.elapsed = time.perf_counter() - started
    return sample


async def preflight(session: aiohttp.ClientSession, targets: list[Target], bodies: dict[str, bytes]) -> None:
    for target in targets:
        for scenario, body in bodies.items():
            target.sent += 1
            async with session.post(target.url, data=body, headers=target.headers) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise SystemExit(f"preflight {target.name} {scenario}: HTTP {resp.status}\n{text[:2000]}")


class Profiler:
    """py-spy attached to the gateway for one phase (no-op when py-spy is missing)."""

    def __init__(self, pid: int, out: Path) -> None:
        """Writes py-spy's raw collapsed stacks to ``out``."""
        exe = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.exe = exe
        self.pid = pid
        self.out = out
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Profiler:
        if not self.exe:
            print("  --profile: py-spy not found (pip install py-spy), skipping", file=sys.stderr)
            return self
        cmd = [self.exe, "record", "--pid", str(self.pid), "--rate", "997", "--nonblocking", "--format", "raw"]
        cmd += ["--output", str(self.out)]
        self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # let py-spy attach
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def run_load(args: argparse.Namespace, mock_url: str, gateway_url: str, key: str, gateway_pid: int) -> dict:
    body = orjson.dumps(CHAT_BODY)
    bodies = {"chat": body, "chat-stream": orjson.dumps({**CHAT_BODY, "stream": True})}
    direct = Target(
        "direct",
        mock_url + "/v1/chat/completions",
        {"content-type": "application/json", "authorization": "Bearer sk-mock-bench"},
    )
    gateway = Target(
        "gateway",
        gateway_url + "/v1/chat/completions",
        {
            "content-type": "application/json",
            "x-portkey-api-key": key,
            "x-portkey-provider": "@mock",
            "x-portkey-metadata": METADATA,
        },
    )
    results: dict[str, Any] = {"c1": {}, "throughput": {}}
    max_c = max(args.concurrency)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        await preflight(session, [direct, gateway], bodies)
        for scenario, payload in bodies.items():
            stream = scenario.endswith("stream")
            print(f"  {scenario}: warm-up {WARMUP} requests each way", flush=True)
            for target in (direct, gateway):
                await closed_loop(session, target, payload, stream, min(max_c, 32), requests=WARMUP)
            if 1 in args.concurrency:
                print(f"  {scenario}: concurrency 1, {args.requests} requests each way (interleaved)", flush=True)
                profile = (
                    Profiler(gateway_pid, args.out / f"gateway_profile_{scenario}.txt")
                    if args.profile
                    else contextlib.nullcontext()
                )
                with profile:
                    d, g, paired = await sequential_pair(session, direct, gateway, payload, stream, args.requests)
                results["c1"][scenario] = {"direct": d, "gateway": g, "paired": paired}
            for c in args.concurrency:
                if c == 1:
                    continue
                print(f"  {scenario}: concurrency {c}, {args.duration:g} s each way", flush=True)
                row = {}
                for target in (direct, gateway):
                    await closed_loop(session, target, payload, stream, c, requests=WARMUP)  # fill the pools
                    row[target.name] = await closed_loop(session, target, payload, stream, c, duration=args.duration)
                results["throughput"][(scenario, c)] = row
    results["gateway_sent"] = gateway.sent
    results["direct_sent"] = direct.sent
    return results


# ------------------------------------------------------------------------ report


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.3f}"


def rate(sample: Sample) -> float:
    return len(sample.latencies) / sample.elapsed if sample.elapsed else math.nan


def row_for(label: str, c: int, d: Sample, g: Sample, *, ttfc: bool = False, with_rate: bool = True) -> dict:
    dl, gl = (d.ttfc, g.ttfc) if ttfc else (d.latencies, g.latencies)
    dp50, dp99, gp50, gp99 = percentile(dl, 50), percentile(dl, 99), percentile(gl, 50), percentile(gl, 99)
    drate, grate = (rate(d), rate(g)) if with_rate else (math.nan, math.nan)
    return {
        "scenario": label,
        "concurrency": c,
        "requests_direct": d.count,
        "requests_gateway": g.count,
        "direct_p50_ms": dp50 * 1000,
        "direct_p99_ms": dp99 * 1000,
        "gateway_p50_ms": gp50 * 1000,
        "gateway_p99_ms": gp99 * 1000,
        "added_p50_ms": (gp50 - dp50) * 1000,
        "added_p99_ms": (gp99 - dp99) * 1000,
        "rps_direct": drate,
        "rps_gateway": grate,
        "ratio": grate / drate if drate else math.nan,
        "errors_direct": dict(d.errors),
        "errors_gateway": dict(g.errors),
    }


def fmt_rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def fmt_errors(row: dict) -> str:
    d, g = sum(row["errors_direct"].values()), sum(row["errors_gateway"].values())
    if not d and not g:
        return "0"
    detail = ", ".join(f"{k} x{v}" for k, v in {**row["errors_direct"], **row["errors_gateway"]}.items())
    return f"{d} / {g} ({detail})"


def build_report(args: argparse.Namespace, results: dict, meta: dict) -> tuple[str, list[dict]]:
    rows: list[dict] = []
    for scenario, r in results["c1"].items():
        rows.append(row_for(scenario, 1, r["direct"], r["gateway"]))
        if scenario.endswith("stream"):
            rows.append(row_for(f"{scenario} (first chunk)", 1, r["direct"], r["gateway"], ttfc=True, with_rate=False))
    for (scenario, c), r in results["throughput"].items():
        rows.append(row_for(scenario, c, r["direct"], r["gateway"]))

    def cell(v: float) -> str:
        return "n/a" if math.isnan(v) else f"{v:.3f}"

    lines = [
        f"## Gateway overhead ({meta['date']})",
        "",
        f"- machine: {meta['cpus']} CPU(s), {meta['platform']}, Python {meta['python']};"
        f" busy before the run (other processes): {meta['busy_before']}",
        f"- gateway: `{meta['gateway_cmd']}` (DEBUG=false)",
        f"- database: {meta['database']}; logs: {meta['log_sink']}",
        f"- upstream: bench/mock_upstream.py, latency 0, {STREAM_CHUNKS} chunks per stream, 1 process",
        "- client: aiohttp (one pooled session, uvloop) in the bench process, sharing the CPUs;"
        f" warm-up {WARMUP} requests per scenario and direction; concurrency 1 interleaves"
        " direct and gateway requests; other concurrencies run a closed loop"
        f" for {args.duration:g} s per direction",
        "",
        "| scenario | c | requests d / g | direct p50 | direct p99 | gateway p50 | gateway p99 "
        "| added p50 | added p99 | req/s direct | req/s gateway | gateway/direct | errors d / g |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        ratio = "-" if math.isnan(row["ratio"]) else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['scenario']} | {row['concurrency']} | {row['requests_direct']} / {row['requests_gateway']} "
            f"| {cell(row['direct_p50_ms'])} | {cell(row['direct_p99_ms'])} "
            f"| {cell(row['gateway_p50_ms'])} | {cell(row['gateway_p99_ms'])} "
            f"| **{cell(row['added_p50_ms'])}** | {cell(row['added_p99_ms'])} "
            f"| {fmt_rate(row['rps_direct'])} | {fmt_rate(row['rps_gateway'])} | {ratio} | {fmt_errors(row)} |"
        )
    lines += [
        "",
        "Latencies in ms; added = gateway percentile minus direct percentile. At c=1 req/s is"
        " 1 / mean latency of each side (the two sides are interleaved).",
    ]
    for scenario, r in results["c1"].items():
        paired = r["paired"]
        if paired:
            lines.append(
                f"Paired per-request difference (gateway_i - direct_i), {scenario}, c=1:"
                f" p50 {ms(percentile(paired, 50))} ms, p99 {ms(percentile(paired, 99))} ms."
            )
    if args.profile:
        lines.append("py-spy was attached to the gateway during the c=1 phase: those latencies are perturbed.")
    lines += ["", meta["logs_line"], "", "Command:", "", "```", meta["command"], "```", ""]
    return "\n".join(lines), rows


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests each way at concurrency 1 (2000)")
    parser.add_argument(
        "--concurrency", default="1,32", help="comma-separated levels; 1 = latency run, others = req/s (1,32)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per direction at concurrency > 1 (5)")
    parser.add_argument("--database-url", help="use this database instead of a fresh SQLite file (migrated)")
    parser.add_argument("--redis-url", help="production log path: gateway -> Redis stream -> database")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "bench" / "out", help="output directory (bench/out)")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway during the c=1 phase")
    args = parser.parse_args(argv)
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        parser.error("--concurrency: comma-separated integers, e.g. 1,32")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency: levels must be >= 1")
    if args.requests < 1:
        parser.error("--requests must be >= 1")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([venv_python(), "bench/gateway_overhead.py", *(sys.argv[1:] if argv is None else argv)])
    command = redact_url(command)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    tmp = Path(tempfile.mkdtemp(prefix="portico-bench-"))
    procs = Processes(tmp)
    run_id = uuid.uuid4().hex[:10]
    stream_key = f"portico:bench:{run_id}:logs"
    database_url = args.database_url or f"sqlite:///{tmp / 'bench.sqlite3'}"
    external_db = bool(args.database_url)
    workspace_id: int | None = None
    django_ready = False
    try:
        # 1. mock upstream
        mock_port = free_port()
        mock_cmd = [sys.executable, "bench/mock_upstream.py", "--host", HOST, "--port", str(mock_port)]
        mock_cmd += ["--latency-ms", "0", "--chunks", str(STREAM_CHUNKS)]
        mock = procs.start("mock", mock_cmd, {**os.environ, "PYTHONUNBUFFERED": "1"})
        mock_url = f"http://{HOST}:{mock_port}"
        wait_until(
            lambda: "listening on" in procs.log_of("mock").read_text(), "mock upstream", mock, procs.log_of("mock")
        )
        wait_until(lambda: http_ok(mock_url + "/_mock/stats"), "mock upstream", mock, procs.log_of("mock"))
        print(f"mock upstream on {mock_url}", flush=True)

        # 2. database + demo data
        env = child_env(args, tmp, database_url, stream_key)
        print(f"preparing database {redact_url(database_url)}", flush=True)
        workspace_id, key = prepare_database(env, mock_url + "/v1", f"bench-{run_id}")
        django_ready = True

        # 3. gateway, production style
        gw_port = free_port()
        gateway_args = ["config.asgi:application", "--host", HOST, "--port", str(gw_port), "--loop", "uvloop"]
        gateway_args += ["--http", "httptools", "--no-access-log", "--lifespan", "on", "--workers", "1"]
        gateway = procs.start("gateway", [sys.executable, "-m", "uvicorn", *gateway_args], env)
        gateway_url = f"http://{HOST}:{gw_port}"
        wait_until(lambda: http_ok(gateway_url + "/healthz"), "gateway", gateway, procs.log_of("gateway"))
        print(f"gateway on {gateway_url} (pid {gateway.pid})", flush=True)

        # 4. load
        busy = cpu_busy()
        busy_before = "unknown" if busy is None else f"{busy:.0%} of all CPUs"
        if busy is not None and busy > 0.15:
            busy_before += " - NOISY, the benchmark competes with them"
            print(f"!!! the machine is already {busy:.0%} busy: expect noisy numbers", flush=True)
        loop_factory = None
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            results = runner.run(run_load(args, mock_url, gateway_url, key, gateway.pid))

        # 5. logs
        sent = results["gateway_sent"]
        print(f"waiting for {sent} log rows (up to {LOG_WAIT_S:.0f} s)", flush=True)
        landed, waited = wait_for_logs(workspace_id, sent, args.redis_url, stream_key)
        logs_ok = landed == sent
        logs_line = (
            f"Logs: {sent} requests sent through the gateway, {landed} log rows landed in the database"
            f" ({waited:.1f} s after the load) - {'OK' if logs_ok else 'MISMATCH'}."
        )

        # 6. report
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version(),
            "gateway_cmd": shlex.join(["uvicorn", *gateway_args[:1], *gateway_args[5:]]),
            "database": ("given " if external_db else "fresh ")
            + ("PostgreSQL" if database_url.startswith(("postgres", "postgresql")) else "SQLite file"),
            "log_sink": "Redis stream, drained into the database by the bench (as the Celery consumer would)"
            if args.redis_url
            else "embedded (the gateway's log buffer writes batches to the database)",
            "busy_before": busy_before,
            "logs_line": logs_line,
            "command": command,
        }
        report, rows = build_report(args, results, meta)
        print()
        print(report)
        (args.out / "gateway_overhead.md").write_text(report)
        raw = {"meta": meta, "rows": rows, "logs": {"sent": sent, "landed": landed}}
        (args.out / "gateway_overhead.json").write_text(json.dumps(raw, indent=2, default=str))
        gateway_log = tail(procs.log_of("gateway"), 40)
        if re.search(r"Traceback|ERROR|CRITICAL", gateway_log):
            print(f"!!! the gateway logged errors (full log in {args.out}/gateway.log):\n{gateway_log}")
        errors = sum(sum(r["errors_gateway"].values()) + sum(r["errors_direct"].values()) for r in rows)
        if not logs_ok:
            print(f"\n!!! LOG MISMATCH: {sent} requests sent through the gateway, {landed} logs landed !!!\n")
        print(f"written to {args.out / 'gateway_overhead.md'}")
        return 0 if logs_ok and not errors else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        for name in ("gateway", "mock"):
            with contextlib.suppress(OSError):
                shutil.copyfile(tmp / f"{name}.log", args.out / f"{name}.log")
        if django_ready and workspace_id is not None and (external_db or args.redis_url):
            try:
                cleanup_database(workspace_id, external_db, args.redis_url, stream_key)
            except Exception as exc:
                print(f"cleanup of bench data failed: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
