"""Gateway overhead: the same mock upstream called directly, through Portico and (with --peers)
through LiteLLM's proxy and Portkey's gateway, side by side in one run.

One command does everything:

1. starts the mock upstream (bench/mock_upstream.py, latency 0, 5 chunks per stream);
2. prepares the database: by default a fresh PostgreSQL database (created on --postgres and
   dropped afterwards), migrated, with a workspace, an API key and an ``@mock`` provider;
3. starts Portico in its production configuration: uvicorn + uvloop + httptools with
   --workers N (DEBUG=false), logs handed to a Redis stream (--redis-url), a Celery worker and
   Celery beat writing them into Postgres;
4. with --peers, installs (first time only) and starts LiteLLM's proxy and Portkey's gateway
   (bench/peers.py) against the same mock;
5. measures every target against the same mock, in the same run:
   - concurrency 1: per-request latency of non-streaming and streaming chat, each gateway's
     requests alternating with direct calls request by request (gateways take turns in
     blocks), plus time to first chunk for streams; "added" = gateway percentile minus the
     percentile of the direct calls made alongside it;
   - every other --concurrency level: closed-loop throughput (req/s), latency under load and
     time to first chunk, --duration seconds per target, target order alternating per level;
   - errors, CPU time each target's processes used per request (robust to other load), and
     how busy the machine was;
6. waits until every request sent through Portico has its log row in the database (written by
   the Celery worker, not by this script) and reports sent vs landed;
7. prints a Markdown report (also OUT/gateway_overhead.md), raw numbers (gateway_overhead.json),
   a plot (gateway_overhead.png; matplotlib is installed into the venv if missing, --no-plot
   skips it) and the servers' logs; exit status 1 on request errors, lost logs or failed targets.

    .venv/bin/python bench/gateway_overhead.py [--peers [litellm,portkey]] [--workers 1] [--litellm-workers N]
        [--concurrency 1,8,32,128] [--requests 2000] [--duration 5] [--scenarios chat,chat-stream]
        [--postgres URL | --database-url URL | --embedded] [--redis-url URL]
        [--wait-quiet SECONDS] [--out bench/out] [--profile] [--no-plot] [--floor] [--baseline REF]

--baseline REF adds Portico as of a git commit (``git archive REF``: its own code, fresh database,
Celery worker and beat, same venv) as a target in the same run: whether a change made the
gateway slower, measured side by side instead of against numbers from another day.
--floor adds bench/floor_app.py as a target (same server command line and upstream client, no
gateway work): the part of the added latency that is not the gateway's.
--workers takes a list (``1,2``) to run several Portico configurations side by side; LiteLLM
runs with --litellm-workers (default: one per CPU, its own advice), Portkey's gateway as the
single Node process it ships as.
--embedded is the small setup: fresh SQLite file, no Redis, no Celery (the gateway writes its
logs itself). --profile attaches py-spy (if installed) to Portico's first worker during the
concurrency-1 phase and writes collapsed stacks to OUT/portico_profile_<scenario>.txt.

The client (aiohttp, one pooled session, uvloop) runs in this process and shares the machine's
cores with everything else: on a 2-core box the DIRECT throughput is largely the client's and
the mock's limit, so read req/s as a comparison between targets measured the same way.
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
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench import peers as peer_setup  # noqa: E402

HOST = "127.0.0.1"
WARMUP = 200
STREAM_CHUNKS = 5
LOG_WAIT_S = 120.0
REQUEST_TIMEOUT_S = 30.0
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
METADATA = '{"_user": "bench", "feature": "gateway-overhead"}'
SCENARIOS = {"chat": False, "chat-stream": True}
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
# Measured on the 2-core dev machine before this benchmark ran the peers itself (DESIGN.md);
# used, clearly labelled, only when a peer cannot be run here.
REFERENCE = {
    "portkey": {"added_p50_ms": 0.6, "rps_c32": 1900.0},
    "litellm": {"added_p50_ms": 6.5, "rps_c32": 160.0},
}
BASELINE_TOLERANCE_MS = 0.02  # --baseline: what counts as slower than the baseline at c=1 p50
TARGETS = {  # the targets
    "added_p50_c1_ms": 0.5,
    "ttfc_added_p50_ms": 1.0,
    "vs_portkey_c32": 1.5,
    "vs_litellm_c32": 15.0,
}


# ------------------------------------------------------------------------ processes


class Processes:
    """Child processes, each in its own session (Ctrl-C reaches only us); stopped in reverse."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path = BASE_DIR) -> subprocess.Popen:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
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

    def stop(self, name: str, timeout: float = 10.0) -> None:
        for entry in list(self.procs):
            if entry[0] == name:
                self._stop([entry], timeout)
                self.procs.remove(entry)

    def stop_all(self, timeout: float = 10.0) -> None:
        self._stop(list(reversed(self.procs)), timeout)
        self.procs.clear()

    @staticmethod
    def _stop(entries: list[tuple[str, subprocess.Popen, Path]], timeout: float) -> None:
        for _, proc, _ in entries:
            if proc.poll() is None:
                # The whole session: uvicorn/celery/litellm workers are the leader's children.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc, _ in entries:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {proc.pid}) did not stop in {timeout:.0f} s: killed", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            # Stragglers of the session (workers that outlived their supervisor).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(check, what: str, proc: subprocess.Popen, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not come up within {timeout:.0f} s:\n{tail(log_path)}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def http_ok_post(url: str) -> bool:
    request = urllib.request.Request(url, data=orjson.dumps(CHAT_BODY), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=2) as resp:
        return resp.status == 200


def redact_url(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def venv_python() -> str:
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        return str(exe.relative_to(BASE_DIR))
    return str(exe)


# ------------------------------------------------------------------------ CPU accounting


def _machine_jiffies() -> tuple[int, int]:
    """(total, idle) jiffies of all CPUs since boot (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            rest = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(rest[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` and their reaped children (pass whole
    process trees: a worker that exited and was reaped still counts, in its parent)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return total / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(roots: list[int]) -> float:
    return cpu_seconds([p for root in roots for p in process_tree(root)])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class MachineMeter:
    """How busy all CPUs were between start() and stop(), as a fraction of all CPUs."""

    def __init__(self) -> None:
        self.start_at: tuple[int, int] | None = None

    def start(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.start_at = _machine_jiffies()

    def stop(self) -> float | None:
        if self.start_at is None:
            return None
        try:
            total, idle = _machine_jiffies()
        except (OSError, ValueError, IndexError):
            return None
        dt = total - self.start_at[0]
        return 1 - (idle - self.start_at[1]) / dt if dt else None


def cpu_busy(seconds: float = 1.0) -> float | None:
    meter = MachineMeter()
    meter.start()
    time.sleep(seconds)
    return meter.stop()


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float | None:
    """Sample until the machine is below ``threshold`` busy or ``max_wait`` passed; last sample."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy(2.0)
    while busy is not None and busy > threshold and time.monotonic() < deadline:
        print(f"  machine {busy:.0%} busy (other processes); waiting for it to quieten", flush=True)
        time.sleep(5)
        busy = cpu_busy(2.0)
    return busy


# ------------------------------------------------------------------------ database


def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE ``name`` on the server of ``server_url``; returns the new database's URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", server_url.rstrip("/"), count=1)


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def child_env(tmp: Path, database_url: str, redis_url: str | None, stream_key: str) -> dict[str, str]:
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
    if redis_url:
        env["REDIS_URL"] = redis_url
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
    from django.db import close_old_connections

    from analytics.models import RequestLog

    close_old_connections()
    return RequestLog.objects.filter(workspace_id=workspace_id).count()


def wait_for_logs(workspace_id: int, expected: int, drain_here: bool, stream_key: str) -> tuple[int, float]:
    """Wait (up to LOG_WAIT_S) until ``expected`` rows landed; (rows, seconds waited).
    ``drain_here``: no Celery worker runs, so this process consumes the stream itself."""
    started = time.monotonic()
    deadline = started + LOG_WAIT_S
    landed = count_logs(workspace_id)
    last_change, last = started, landed
    while landed < expected and time.monotonic() < deadline:
        if drain_here:
            from analytics import pipeline

            pipeline.consume_log_stream(stream_key=stream_key, max_seconds=1.0, block_ms=200)
        else:
            time.sleep(0.25)
        landed = count_logs(workspace_id)
        if landed != last:
            last_change, last = time.monotonic(), landed
        elif time.monotonic() - last_change > 30:
            break  # nothing moves any more
    return landed, time.monotonic() - started


def cleanup_database(workspace_id: int, redis_url: str | None, stream_key: str) -> None:
    """Remove what the run added to a database or Redis we did not create."""
    from django.db import connections

    from analytics.models import RequestBody, RequestLog
    from workspaces.models import Workspace

    RequestBody.objects.filter(log__workspace_id=workspace_id).delete()
    RequestLog.objects.filter(workspace_id=workspace_id).delete()
    Workspace.objects.filter(pk=workspace_id).delete()
    connections.close_all()


def cleanup_redis(redis_url: str, stream_key: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.delete(stream_key, f"{stream_key}:dead")
    client.close()


# ------------------------------------------------------------------------ targets and load


@dataclass
class Target:
    name: str
    kind: str  # direct | portico | peer | floor | baseline
    url: str
    headers: dict[str, str]
    pids: list[int] = field(default_factory=list)  # process tree roots, for CPU accounting
    workers: int = 1
    version: str = ""
    sent: int = 0


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds
    ttfc: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    elapsed: float = 0.0  # wall time of the phase (throughput runs)
    cpu_s: float = math.nan  # CPU seconds the target's processes used during the phase
    machine_busy: float | None = None

    @property
    def count(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def to_json(self) -> dict:
        return {
            "ok": len(self.latencies),
            "errors": dict(self.errors),
            "elapsed_s": self.elapsed,
            "cpu_s": self.cpu_s,
            "machine_busy": self.machine_busy,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "ttfc_p50_ms": percentile(self.ttfc, 50) * 1000,
            "ttfc_p99_ms": percentile(self.ttfc, 99) * 1000,
            "rps": rate(self),
        }


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


C1_ROUNDS = 4


async def interleaved(
    session: aiohttp.ClientSession, targets: list[Target], body: bytes, stream: bool, n: int
) -> tuple[dict[str, Sample], dict[str, Sample], dict[str, list[float]]]:
    """n requests per gateway at concurrency 1, each interleaved request by request with a
    direct call (the order flips every request), so a gateway and its direct reference see the
    same machine state. Gateways take turns in blocks (C1_ROUNDS rounds, order rotating), not
    request by request: a heavy peer's request in between would otherwise leave the next
    gateway with cold CPU caches. Returns (samples per target, the direct samples taken
    alongside each gateway, paired differences gateway_i - direct_i)."""
    direct = next(t for t in targets if t.kind == "direct")
    gateways = [t for t in targets if t.kind != "direct"]
    samples = {t.name: Sample() for t in targets}
    alongside = {t.name: Sample() for t in gateways}
    paired: dict[str, list[float]] = {t.name: [] for t in gateways}
    per_round = [n // C1_ROUNDS + (1 if r < n % C1_ROUNDS else 0) for r in range(C1_ROUNDS)]
    for r, count in enumerate(per_round):
        k = r % max(1, len(gateways))
        for gateway in gateways[k:] + gateways[:k]:
            for i in range(count):
                d = g = None
                for target in (direct, gateway) if i % 2 == 0 else (gateway, direct):
                    result = await call(session, target, body, stream)
                    if target is direct:
                        d = result
                        record(samples[direct.name], result)
                        record(alongside[gateway.name], result)
                    else:
                        g = result
                        record(samples[gateway.name], result)
                if not d[2] and not g[2]:
                    paired[gateway.name].append(g[0] - d[0])
    for sample in (*samples.values(), *alongside.values()):
        sample.elapsed = sum(sample.latencies)  # each side's own busy time
    return samples, alongside, paired


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


async def measured_loop(
    session: aiohttp.ClientSession, target: Target, body: bytes, stream: bool, concurrency: int, duration: float
) -> Sample:
    meter = MachineMeter()
    cpu0 = tree_cpu_seconds(target.pids)
    meter.start()
    sample = await closed_loop(session, target, body, stream, concurrency, duration=duration)
    sample.machine_busy = meter.stop()
    if target.pids:
        sample.cpu_s = tree_cpu_seconds(target.pids) - cpu0
    return sample


async def preflight(session: aiohttp.ClientSession, targets: list[Target], bodies: dict[str, bytes]) -> None:
    for target in targets:
        for scenario, body in bodies.items():
            target.sent += 1
            async with session.post(target.url, data=body, headers=target.headers) as resp:
                text = await resp.text()
                if resp.status != 200 or (SCENARIOS[scenario] and "[DONE]" not in text):
                    raise SystemExit(f"preflight {target.name} {scenario}: HTTP {resp.status}\n{text[:2000]}")


class Profiler:
    """py-spy attached to a process for one phase (no-op when py-spy is missing)."""

    def __init__(self, pid: int, out: Path) -> None:
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


async def run_load(args: argparse.Namespace, targets: list[Target]) -> dict:
    bodies = {s: orjson.dumps({**CHAT_BODY, "stream": True} if SCENARIOS[s] else CHAT_BODY) for s in args.scenarios}
    results: dict[str, Any] = {"c1": {}, "c1_direct": {}, "paired": {}, "load": {}}
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    portico = [t for t in targets if t.kind == "portico"]
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        await preflight(session, targets, bodies)
        for scenario, body in bodies.items():
            stream = SCENARIOS[scenario]
            print(f"  {scenario}: warm-up {WARMUP} requests per target", flush=True)
            for target in targets:
                await closed_loop(session, target, body, stream, 8, requests=WARMUP)
            if 1 in args.concurrency:
                print(f"  {scenario}: concurrency 1, {args.requests} requests per target (interleaved)", flush=True)
                profile = (
                    Profiler(process_tree(portico[0].pids[0])[-1], args.out / f"portico_profile_{scenario}.txt")
                    if args.profile and portico
                    else contextlib.nullcontext()
                )
                with profile:
                    samples, alongside, paired = await interleaved(session, targets, body, stream, args.requests)
                results["c1"][scenario] = samples
                results["c1_direct"][scenario] = alongside
                results["paired"][scenario] = paired
            for i, c in enumerate(c for c in args.concurrency if c != 1):
                print(f"  {scenario}: concurrency {c}, {args.duration:g} s per target", flush=True)
                row = {}
                for target in targets if i % 2 == 0 else list(reversed(targets)):
                    await closed_loop(session, target, body, stream, c, requests=max(WARMUP, 2 * c))  # fill pools
                    row[target.name] = await measured_loop(session, target, body, stream, c, args.duration)
                results["load"][(scenario, c)] = row
    results["sent"] = {t.name: t.sent for t in targets}
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


def rate(sample: Sample) -> float:
    return len(sample.latencies) / sample.elapsed if sample.elapsed else math.nan


def f3(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def f2(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def fnum(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def ferrors(sample: Sample) -> str:
    total = sum(sample.errors.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{k} x{v}" for k, v in sample.errors.items()) + ")"


def summarise(args: argparse.Namespace, targets: list[Target], results: dict) -> dict:
    """The numbers the report and the target checks use, as plain data (also the JSON)."""
    names = [t.name for t in targets]
    direct = next(t.name for t in targets if t.kind == "direct")
    c1 = {}
    for scenario, samples in results["c1"].items():
        rows = {}
        for name in names:
            s = samples[name]
            # Each gateway against the direct calls made alongside it (the direct row: all of them).
            d = results["c1_direct"][scenario].get(name, samples[direct])
            paired = results["paired"][scenario].get(name, [])
            rows[name] = {
                **s.to_json(),
                "direct_p50_ms": percentile(d.latencies, 50) * 1000,
                "added_p50_ms": (percentile(s.latencies, 50) - percentile(d.latencies, 50)) * 1000,
                "added_p99_ms": (percentile(s.latencies, 99) - percentile(d.latencies, 99)) * 1000,
                "ttfc_added_p50_ms": (percentile(s.ttfc, 50) - percentile(d.ttfc, 50)) * 1000,
                "ttfc_added_p99_ms": (percentile(s.ttfc, 99) - percentile(d.ttfc, 99)) * 1000,
                "paired_p50_ms": percentile(paired, 50) * 1000 if paired else math.nan,
            }
        c1[scenario] = rows
    load = {}
    for (scenario, c), samples in results["load"].items():
        d = samples[direct]
        rows = {}
        for name in names:
            s = samples[name]
            ok = len(s.latencies)
            rows[name] = {
                **s.to_json(),
                "ratio_direct": rate(s) / rate(d) if rate(d) else math.nan,
                "added_p50_ms": (percentile(s.latencies, 50) - percentile(d.latencies, 50)) * 1000,
                "ttfc_added_p50_ms": (percentile(s.ttfc, 50) - percentile(d.ttfc, 50)) * 1000,
                "cpu_us_per_req": s.cpu_s / ok * 1e6 if ok and not math.isnan(s.cpu_s) else math.nan,
            }
        load[f"{scenario}@{c}"] = rows
    return {"c1": c1, "load": load}


def check_targets(targets: list[Target], summary: dict, logs: dict, failed_peers: dict[str, str]) -> list[dict]:
    """The issue's targets, per Portico configuration: [{what, value, goal, ok, basis}]."""
    checks = []
    present = {t.kind if t.kind != "peer" else t.name for t in targets}
    c1 = summary["c1"].get("chat", {})
    c1s = summary["c1"].get("chat-stream", {})
    c32 = summary["load"].get("chat@32", {})
    for t in (t for t in targets if t.kind == "portico"):
        label = t.name
        if t.name in c1:
            added = c1[t.name]["added_p50_ms"]
            checks.append(
                {
                    "what": f"{label}: added latency, c=1, p50 (ms)",
                    "value": added,
                    "goal": f"<= {TARGETS['added_p50_c1_ms']}",
                    "ok": added <= TARGETS["added_p50_c1_ms"],
                    "basis": "same run",
                }
            )
            if "baseline" in c1:
                # A regression check independent of the machine's speed: both in this run.
                base = c1["baseline"]["added_p50_ms"]
                checks.append(
                    {
                        "what": f"{label}: added p50 at c=1 minus the baseline's ({base:.3f} ms) (ms)",
                        "value": round(added - base, 3),
                        "goal": f"<= +{BASELINE_TOLERANCE_MS}",
                        "ok": added - base <= BASELINE_TOLERANCE_MS,
                        "basis": "same run",
                    }
                )
            if "portkey" in present and "portkey" in c1:
                pk = c1["portkey"]["added_p50_ms"]
                checks.append(
                    {
                        "what": f"{label}: added p50 at c=1 below Portkey's ({pk:.3f} ms)",
                        "value": added,
                        "goal": f"< {pk:.3f}",
                        "ok": added < pk,
                        "basis": "same run",
                    }
                )
            else:
                pk = REFERENCE["portkey"]["added_p50_ms"]
                checks.append(
                    {
                        "what": f"{label}: added p50 at c=1 below Portkey's (REFERENCE {pk} ms, not same run)",
                        "value": added,
                        "goal": f"< {pk}",
                        "ok": added < pk,
                        "basis": "reference",
                    }
                )
        if t.name in c1s:
            ttfc = c1s[t.name]["ttfc_added_p50_ms"]
            checks.append(
                {
                    "what": f"{label}: streaming first-chunk overhead, c=1, p50 (ms)",
                    "value": ttfc,
                    "goal": f"<= {TARGETS['ttfc_added_p50_ms']}",
                    "ok": ttfc <= TARGETS["ttfc_added_p50_ms"],
                    "basis": "same run",
                }
            )
        if t.name in c32:
            ours = c32[t.name]["rps"]
            for peer, key in (("portkey", "vs_portkey_c32"), ("litellm", "vs_litellm_c32")):
                goal = TARGETS[key]
                if peer in c32:
                    theirs, basis = c32[peer]["rps"], "same run"
                else:
                    theirs, basis = REFERENCE[peer]["rps_c32"], "REFERENCE, not same run"
                ratio = ours / theirs if theirs else math.nan
                checks.append(
                    {
                        "what": f"{label}: req/s at c=32 vs {peer} ({fnum(ours)} / {fnum(theirs)}, {basis})",
                        "value": ratio,
                        "goal": f">= {goal}x",
                        "ok": ratio >= goal,
                        "basis": basis,
                    }
                )
    if logs.get("expected") is not None:
        checks.append(
            {
                "what": f"Portico logs: {logs['landed']} landed of {logs['expected']} sent (lost)",
                "value": logs["expected"] - logs["landed"],
                "goal": "== 0",
                "ok": logs["landed"] == logs["expected"],
                "basis": "same run",
            }
        )
    return checks


def build_report(args: argparse.Namespace, targets: list[Target], summary: dict, meta: dict, checks: list) -> str:
    names = [t.name for t in targets]
    direct = next(t.name for t in targets if t.kind == "direct")
    lines = [
        f"## Gateway overhead, side by side ({meta['date']})",
        "",
        f"- machine: {meta['cpus']} CPU(s), {meta['platform']}, Python {meta['python']};"
        f" busy before the run (other processes): {meta['busy_before']}; load average {meta['loadavg']}",
        f"- upstream: bench/mock_upstream.py (aiohttp, 1 process), latency 0, {STREAM_CHUNKS} chunks per stream",
        f"- client: aiohttp in the bench process (one pooled session, uvloop), sharing the CPUs; warm-up"
        f" {WARMUP} requests per scenario and target; c=1 alternates each gateway with direct calls;"
        f" other levels: closed loop, {args.duration:g} s per target",
        f"- Portico: `{meta['portico_cmd']}` (DEBUG=false); {meta['database']}; logs: {meta['log_sink']}",
    ]
    for t in targets:
        if t.kind == "peer":
            lines.append(f"- {t.name}: {t.version}")
    for name, reason in meta["failed_peers"].items():
        first = reason.strip().splitlines()[0] if reason.strip() else reason
        lines.append(f"- {name}: NOT RUN here ({first}); checks use the reference numbers, labelled as such")
    lines += [
        "",
        "### Concurrency 1 (latency, ms)",
        "",
        "Each gateway's requests alternate with direct calls to the mock, request by request;"
        " added = gateway percentile - percentile of the direct calls made alongside it"
        f" (gateways take turns in {C1_ROUNDS} rounds of blocks); the direct row pools all direct calls.",
        "",
        "| scenario | target | p50 | p99 | direct p50 alongside | added p50 | added p99 | first chunk p50"
        " | added first chunk p50 | added first chunk p99 | paired diff p50 | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for scenario, rows in summary["c1"].items():
        stream = SCENARIOS[scenario]
        for name in names:
            r = rows[name]
            is_direct = name == direct
            lines.append(
                f"| {scenario} | {name} | {f3(r['p50_ms'])} | {f3(r['p99_ms'])} "
                f"| {'-' if is_direct else f3(r['direct_p50_ms'])} "
                f"| {'-' if is_direct else '**' + f3(r['added_p50_ms']) + '**'} "
                f"| {'-' if is_direct else f3(r['added_p99_ms'])} "
                f"| {f3(r['ttfc_p50_ms']) if stream else '-'} "
                f"| {('**' + f3(r['ttfc_added_p50_ms']) + '**') if stream and not is_direct else '-'} "
                f"| {f3(r['ttfc_added_p99_ms']) if stream and not is_direct else '-'} "
                f"| {'-' if is_direct else f3(r['paired_p50_ms'])} "
                f"| {ferrors_json(r)} |"
            )
    lines += [
        "",
        "### Throughput (closed loop)",
        "",
        "| scenario | c | target | req/s | vs direct | p50 ms | p99 ms | added p50 ms | first chunk p50 ms"
        " | CPU us/req | machine busy | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for key, rows in summary["load"].items():
        scenario, c = key.split("@")
        stream = SCENARIOS[scenario]
        for name in names:
            r = rows[name]
            busy = r["machine_busy"]
            lines.append(
                f"| {scenario} | {c} | {name} | **{fnum(r['rps'])}** | {f2(r['ratio_direct'])} "
                f"| {f3(r['p50_ms'])} | {f3(r['p99_ms'])} | {'-' if name == direct else f3(r['added_p50_ms'])} "
                f"| {f3(r['ttfc_p50_ms']) if stream else '-'} | {fnum(r['cpu_us_per_req'])} "
                f"| {'-' if busy is None else f'{busy:.0%}'} | {ferrors_json(r)} |"
            )
    peer_names = [t.name for t in targets if t.kind == "peer"]
    portico_names = [t.name for t in targets if t.kind == "portico"]
    if peer_names and summary["load"]:
        lines += ["", "Portico's req/s relative to each peer (same run, same level):", ""]
        header = "| scenario | c | " + " | ".join(f"{p} / {q}" for p in portico_names for q in peer_names) + " |"
        lines += [header, "|" + " --- |" * (2 + len(portico_names) * len(peer_names))]
        for key, rows in summary["load"].items():
            scenario, c = key.split("@")
            cells = [
                f2(rows[p]["rps"] / rows[q]["rps"]) if rows[q]["rps"] else "n/a"
                for p in portico_names
                for q in peer_names
            ]
            lines.append(f"| {scenario} | {c} | " + " | ".join(f"{x}x" for x in cells) + " |")
    lines += [
        "",
        "CPU us/req: CPU time used by the target's own processes (all workers) per completed request"
        " during its phase; for Portico it excludes the Celery log writer, which is accounted below.",
        "Machine busy: all CPUs during the phase, including the client, the mock, Celery, Postgres"
        " and anything else running on the machine.",
        "",
        "### Logs and log pipeline",
        "",
        meta["logs_line"],
        "",
        "### Targets",
        "",
        "| check | value | goal | basis | result |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for c in checks:
        lines.append(
            f"| {c['what']} | {f3(c['value']) if isinstance(c['value'], float) else c['value']} | {c['goal']} "
            f"| {c['basis']} | {'OK' if c['ok'] else '**MISSED**'} |"
        )
    lines += ["", "Command:", "", "```", meta["command"], "```", ""]
    if args.profile:
        lines.insert(-4, "py-spy was attached to Portico during the c=1 phase: those latencies are perturbed.")
    return "\n".join(lines)


def ferrors_json(r: dict) -> str:
    errors = r["errors"]
    total = sum(errors.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{k} x{v}" for k, v in errors.items()) + ")"


def ensure_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        pass
    print("  installing matplotlib into the venv for the plot (bench-only dependency)", flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"]
    if subprocess.run(cmd, check=False).returncode != 0:
        print("  matplotlib could not be installed: no plot", file=sys.stderr)
        return False
    import importlib

    importlib.invalidate_caches()
    return True


def plot(targets: list[Target], summary: dict, path: Path, title: str) -> bool:
    if not ensure_matplotlib():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t.name for t in targets]
    scenarios = [s for s in SCENARIOS if any(k.startswith(s + "@") for k in summary["load"]) or s in summary["c1"]]
    fig, axes = plt.subplots(1, len(scenarios) + 1, figsize=(6 * (len(scenarios) + 1), 4.8))
    for ax, scenario in zip(axes, scenarios, strict=False):
        levels = sorted(int(k.split("@")[1]) for k in summary["load"] if k.startswith(scenario + "@"))
        c1 = summary["c1"].get(scenario, {})
        for name in names:
            xs, ys = [], []
            if name in c1:
                xs.append(1)
                ys.append(c1[name]["rps"])
            for c in levels:
                xs.append(c)
                ys.append(summary["load"][f"{scenario}@{c}"][name]["rps"])
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrency")
        ax.set_ylabel("requests/s")
        ax.set_title(f"{scenario}: throughput")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[-1]
    others = [n for n in names if n != next(t.name for t in targets if t.kind == "direct")]
    width = 0.8 / max(1, len(scenarios) + ("chat-stream" in summary["c1"]))
    series = [(s, "added_p50_ms", s) for s in scenarios if s in summary["c1"]]
    if "chat-stream" in summary["c1"]:
        series.append(("chat-stream", "ttfc_added_p50_ms", "chat-stream first chunk"))
    for i, (scenario, key, label) in enumerate(series):
        values = [max(summary["c1"][scenario][n][key], 1e-3) for n in others]
        ax.bar([x + i * width for x in range(len(others))], values, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(others))], others, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms added vs direct (p50, c=1)")
    ax.set_title("added latency at concurrency 1")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", nargs="?", const="litellm,portkey", default="", help="run peers (litellm,portkey)")
    parser.add_argument("--peers-dir", type=Path, default=peer_setup.DEFAULT_DIR, help="where peers are installed")
    parser.add_argument(
        "--workers", default="1", help="Portico uvicorn workers (1: best on a 2-core box); a list runs several"
    )
    parser.add_argument(
        "--litellm-workers", type=int, default=os.cpu_count() or 1, help="LiteLLM workers (its advice: one per CPU)"
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per target at concurrency 1 (2000)")
    parser.add_argument("--concurrency", default="1,8,32,128", help="levels; 1 = latency run (1,8,32,128)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per target at concurrency > 1 (5)")
    parser.add_argument("--scenarios", default="chat,chat-stream", help="chat, chat-stream (both)")
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server for a fresh, dropped-after database")
    db.add_argument("--database-url", help="use this database (migrated; the bench workspace is removed after)")
    db.add_argument("--embedded", action="store_true", help="fresh SQLite file, no Redis, no Celery")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help=f"log stream and Celery broker ({DEFAULT_REDIS})")
    parser.add_argument("--wait-quiet", type=float, default=0, help="wait up to S seconds for an idle machine")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "bench" / "out", help="output directory (bench/out)")
    parser.add_argument("--profile", action="store_true", help="py-spy Portico during the c=1 phase")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run bench/floor_app.py (the same server and upstream client, no gateway work) as a target",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run Portico as of this git commit (same run, own database and Celery) as a target",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot (no matplotlib needed)")
    args = parser.parse_args(argv)
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--concurrency and --workers take comma-separated integers, e.g. 1,32")
    if not args.concurrency or min(args.concurrency) < 1 or not args.workers or min(args.workers) < 1:
        parser.error("--concurrency / --workers: values must be >= 1")
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not args.scenarios or any(s not in SCENARIOS for s in args.scenarios):
        parser.error(f"--scenarios: choose from {', '.join(SCENARIOS)}")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if args.requests < 1:
        parser.error("--requests must be >= 1")
    if args.embedded:
        args.redis_url = None
        if args.baseline:
            parser.error("--baseline runs against Postgres (the default), not --embedded")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def portico_command(port: int, workers: int) -> list[str]:
    """The production command line (docker-compose.yml / README), on a loopback port."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "config.asgi:application",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--lifespan",
        "on",
    ]


def start_celery(
    procs: Processes, env: dict[str, str], tmp: Path, run_id: str, cwd: Path = BASE_DIR, prefix: str = ""
) -> list[subprocess.Popen]:
    """Celery worker + beat as in production (docker-compose.yml), one worker process."""
    celery = [sys.executable, "-m", "celery", "-A", "config"]
    worker = procs.start(
        f"{prefix}celery-worker",
        [*celery, "worker", "--loglevel", "warning", "--concurrency", "1", "-n", f"bench-{prefix}{run_id}@%h"],
        env,
        cwd=cwd,
    )
    schedule = str(tmp / f"{prefix}beat-schedule")
    beat = procs.start(f"{prefix}celery-beat", [*celery, "beat", "--loglevel", "warning", "-s", schedule], env, cwd=cwd)
    return [worker, beat]


_BASELINE_SETUP = """
from workspaces import services
workspace = services.workspace_create(slug="bench-baseline", name="Gateway overhead baseline")
_, key = services.api_key_create(workspace=workspace, name="bench key")
services.provider_create(workspace=workspace, slug="mock", base_url={base_url!r}, api_key="sk-mock-bench")
print("BASELINE-KEY", key)
"""


def prepare_baseline(ref: str, tmp: Path, env: dict[str, str], mock_base_url: str) -> tuple[Path, str]:
    """Portico's code as of ``ref`` in tmp/baseline, migrated into env's database, with the
    bench workspace, key and @mock provider made by its own services; (its directory, key)."""
    code = tmp / "baseline"
    code.mkdir()
    archive = subprocess.run(["git", "-C", str(BASE_DIR), "archive", ref], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {ref}: git archive failed: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    if subprocess.run(migrate, cwd=code, env=env, check=False).returncode != 0:
        raise SystemExit(f"--baseline {ref}: manage.py migrate failed (see above)")
    setup = [sys.executable, "manage.py", "shell", "-c", _BASELINE_SETUP.format(base_url=mock_base_url)]
    done = subprocess.run(setup, cwd=code, env=env, capture_output=True, text=True, check=False)
    keys = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("BASELINE-KEY ")]
    if done.returncode != 0 or not keys:
        raise SystemExit(f"--baseline {ref}: setting up its workspace failed:\n{done.stderr[-2000:]}")
    return code, keys[0]


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
    created_db: str | None = None
    baseline_db: str | None = None
    if args.embedded:
        database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    elif args.database_url:
        database_url = args.database_url
    else:
        created_db = f"portico_gwbench_{run_id}"
        database_url = create_database(args.postgres, created_db)
    workspace_id: int | None = None
    django_ready = False
    try:
        if args.wait_quiet:
            wait_for_quiet(args.wait_quiet)
        # 1. mock upstream
        mock_port = free_port()
        mock_cmd = [sys.executable, "bench/mock_upstream.py", "--host", HOST, "--port", str(mock_port)]
        mock_cmd += ["--latency-ms", "0", "--chunks", str(STREAM_CHUNKS)]
        mock = procs.start("mock", mock_cmd, {**os.environ, "PYTHONUNBUFFERED": "1"})
        mock_url = f"http://{HOST}:{mock_port}"
        wait_until(lambda: http_ok(mock_url + "/_mock/stats"), "mock upstream", mock, procs.log_of("mock"))
        print(f"mock upstream on {mock_url}", flush=True)
        targets = [
            Target(
                "direct",
                "direct",
                mock_url + "/v1/chat/completions",
                {"content-type": "application/json", "authorization": "Bearer sk-mock-bench"},
                pids=[mock.pid],
            )
        ]

        # 2. database + bench workspace
        env = child_env(tmp, database_url, args.redis_url, stream_key)
        print(f"preparing database {redact_url(database_url)}", flush=True)
        workspace_id, key = prepare_database(env, mock_url + "/v1", f"bench-{run_id}")
        django_ready = True

        # 3. Portico, production style, one instance per --workers value
        celery = [] if args.embedded else start_celery(procs, env, tmp, run_id)
        for workers in args.workers:
            port = free_port()
            cmd = portico_command(port, workers)
            name = "portico" if len(args.workers) == 1 else f"portico-{workers}w"
            proc = procs.start(name, cmd, env)
            url = f"http://{HOST}:{port}"
            wait_until(lambda url=url: http_ok(url + "/healthz"), name, proc, procs.log_of(name))
            print(f"{name} on {url} ({workers} worker(s), pid {proc.pid})", flush=True)
            targets.append(
                Target(
                    name,
                    "portico",
                    url + "/v1/chat/completions",
                    {
                        "content-type": "application/json",
                        "x-portkey-api-key": key,
                        "x-portkey-provider": "@mock",
                        "x-portkey-metadata": METADATA,
                    },
                    pids=[proc.pid],
                    workers=workers,
                )
            )
        if args.floor:
            port = free_port()
            cmd = portico_command(port, 1)
            cmd[cmd.index("config.asgi:application")] = "bench.floor_app:app"
            proc = procs.start("floor", cmd, {**env, "FLOOR_UPSTREAM": mock_url + "/v1"})
            url = f"http://{HOST}:{port}"
            wait_until(lambda url=url: http_ok_post(url + "/v1/chat/completions"), "floor", proc, procs.log_of("floor"))
            print(f"floor on {url} (pid {proc.pid})", flush=True)
            targets.append(
                Target("floor", "floor", url + "/v1/chat/completions", {"content-type": "application/json"}, [proc.pid])
            )
        if args.baseline:
            baseline_db = f"portico_gwbase_{run_id}"
            baseline_env = child_env(
                tmp / "baseline-var", create_database(args.postgres, baseline_db), args.redis_url, stream_key + ":base"
            )
            (tmp / "baseline-var").mkdir()
            print(f"preparing the baseline ({args.baseline}) in its own database", flush=True)
            code, baseline_key = prepare_baseline(args.baseline, tmp, baseline_env, mock_url + "/v1")
            if args.redis_url:
                start_celery(procs, baseline_env, tmp, run_id, cwd=code, prefix="baseline-")
            port = free_port()
            proc = procs.start("baseline", portico_command(port, 1), baseline_env, cwd=code)
            url = f"http://{HOST}:{port}"
            wait_until(lambda url=url: http_ok(url + "/healthz"), "baseline", proc, procs.log_of("baseline"))
            print(f"baseline ({args.baseline}) on {url} (pid {proc.pid})", flush=True)
            baseline_headers = {
                "content-type": "application/json",
                "x-portkey-api-key": baseline_key,
                "x-portkey-provider": "@mock",
                "x-portkey-metadata": METADATA,
            }
            targets.append(
                Target(
                    "baseline",
                    "baseline",
                    url + "/v1/chat/completions",
                    baseline_headers,
                    [proc.pid],
                    version=args.baseline,
                )
            )
        portico_cmd = "uvicorn config.asgi:application --workers " + "/".join(map(str, args.workers))
        portico_cmd += " --loop uvloop --http httptools --no-access-log --lifespan on"

        # 4. peers
        failed_peers: dict[str, str] = {}
        if args.peers:
            ports = {name: free_port() for name in args.peers}
            install_log = args.out / "peers-install.log"
            peers, failed_peers = peer_setup.make_peers(
                args.peers, args.peers_dir, install_log, ports, mock_url + "/v1", args.litellm_workers, tmp
            )
            for peer in peers:
                proc = procs.start(peer.name, peer.cmd, peer.env, cwd=peer.cwd)
                url = f"http://{HOST}:{ports[peer.name]}"
                try:
                    wait_until(
                        lambda url=url, peer=peer: http_ok(url + peer.health_path),
                        peer.name,
                        proc,
                        procs.log_of(peer.name),
                        timeout=120,
                    )
                except SystemExit as exc:
                    failed_peers[peer.name] = f"did not start: {exc}"
                    procs.stop(peer.name)
                    continue
                print(f"{peer.name} on {url} ({peer.version})", flush=True)
                headers = {"content-type": "application/json", "x-portkey-metadata": METADATA, **peer.headers}
                targets.append(
                    Target(
                        peer.name,
                        "peer",
                        url + "/v1/chat/completions",
                        headers,
                        pids=[proc.pid],
                        workers=peer.workers,
                        version=peer.notes,
                    )
                )

        # 5. load
        time.sleep(2)  # let start-up work (peers' background tasks, Celery) settle
        busy = cpu_busy(2.0)
        busy_before = "unknown" if busy is None else f"{busy:.0%} of all CPUs"
        if busy is not None and busy > 0.15:
            busy_before += " - NOISY, the benchmark competes with them"
            print(f"!!! the machine is already {busy:.0%} busy: expect noisy numbers", flush=True)
        loadavg = "/".join(f"{x:.2f}" for x in os.getloadavg())
        loop_factory = None
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
        celery_roots = [c.pid for c in celery]
        celery_cpu0 = tree_cpu_seconds(celery_roots) if celery_roots else math.nan
        run_meter = MachineMeter()
        run_meter.start()
        run_started = time.monotonic()
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            results = runner.run(run_load(args, targets))
        run_busy = run_meter.stop()
        run_seconds = time.monotonic() - run_started

        # 6. logs
        expected = sum(n for name, n in results["sent"].items() if name.startswith("portico"))
        print(f"waiting for {expected} Portico log rows (up to {LOG_WAIT_S:.0f} s)", flush=True)
        landed, waited = wait_for_logs(workspace_id, expected, drain_here=False, stream_key=stream_key)
        celery_cpu = tree_cpu_seconds(celery_roots) - celery_cpu0 if celery_roots else math.nan
        logs = {"expected": expected, "landed": landed, "waited_s": waited, "celery_cpu_s": celery_cpu}
        logs_line = (
            f"Portico: {expected} requests sent (every scenario, level and warm-up), {landed} log rows landed"
            f" in the database, {expected - landed} lost; the last landed {waited:.1f} s after the load ended."
            f" {'OK' if landed == expected else 'MISMATCH'}."
        )
        if args.embedded:
            logs_line += " Embedded mode: the gateway wrote its logs to SQLite itself."
        else:
            logs_line += (
                f" Pipeline: gateway -> Redis stream -> Celery worker (1 process) -> Postgres;"
                f" from the start of the load until the last row landed the worker used {celery_cpu:.1f} CPU s,"
                f" {celery_cpu / max(landed, 1) * 1e6:.0f} us per log (excluding Postgres' own CPU)."
            )

        # 7. report
        summary = summarise(args, targets, results)
        checks = check_targets(targets, summary, logs, failed_peers)
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version(),
            "portico_cmd": portico_cmd,
            "database": ("fresh " if created_db or args.embedded else "given ")
            + ("PostgreSQL" if database_url.startswith(("postgres", "postgresql")) else "SQLite file"),
            "log_sink": "embedded (the gateway's log buffer writes batches to the database)"
            if args.embedded
            else "Redis stream -> Celery worker + beat -> Postgres",
            "busy_before": busy_before,
            "loadavg": loadavg,
            "run_busy": run_busy,
            "run_seconds": run_seconds,
            "logs_line": logs_line,
            "command": command,
            "failed_peers": failed_peers,
            "targets": {t.name: {"kind": t.kind, "workers": t.workers, "version": t.version} for t in targets},
        }
        report = build_report(args, targets, summary, meta, checks)
        if run_busy is not None:
            report = report.replace(
                "\n### Concurrency 1",
                f"- the whole measurement took {run_seconds:.0f} s with all CPUs {run_busy:.0%} busy on average\n"
                "\n### Concurrency 1",
                1,
            )
        print()
        print(report)
        (args.out / "gateway_overhead.md").write_text(report)
        raw = {"meta": meta, "summary": summary, "logs": logs, "checks": checks, "sent": results["sent"]}
        (args.out / "gateway_overhead.json").write_text(json.dumps(raw, indent=2, default=str))
        if not args.no_plot:
            title = f"Portico vs peers, same mock, same run ({meta['date']}, {meta['cpus']} CPUs)"
            if plot(targets, summary, args.out / "gateway_overhead.png", title):
                print(f"plot: {args.out / 'gateway_overhead.png'}")
        for name, _, log_path in procs.procs:
            text = tail(log_path, 60)
            if name.startswith("portico") and re.search(r"Traceback|ERROR|CRITICAL", text):
                print(f"!!! {name} logged errors (full log in {args.out}/{name}.log):\n{text}")

        # Portico's and the direct calls' errors fail the run; a peer's are reported in the tables
        # (a flaky peer says nothing about Portico).
        def ours(name: str) -> bool:
            return name == "direct" or name.startswith("portico")

        errors = peer_errors = 0
        for phase in ("c1", "load"):
            for rows in summary[phase].values():
                for name, r in rows.items():
                    count = sum(r["errors"].values())
                    errors += count if ours(name) else 0
                    peer_errors += 0 if ours(name) else count
        if peer_errors:
            print(f"note: {peer_errors} request error(s) of peers (see the tables); not counted against Portico")
        if landed != expected:
            print(f"\n!!! LOG MISMATCH: {expected} requests sent through Portico, {landed} logs landed !!!\n")
        print(f"written to {args.out / 'gateway_overhead.md'}")
        return 0 if landed == expected and not errors and all(c["ok"] for c in checks) else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        names = [name for name, _, _ in procs.procs]
        procs.stop_all()
        for name in names:
            with contextlib.suppress(OSError):
                shutil.copyfile(tmp / f"{name}.log", args.out / f"{name}.log")
        if django_ready and workspace_id is not None and args.database_url:
            try:
                cleanup_database(workspace_id, args.redis_url, stream_key)
            except Exception as exc:
                print(f"cleanup of bench data failed: {exc}", file=sys.stderr)
        if django_ready:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
        if args.redis_url:
            with contextlib.suppress(Exception):
                cleanup_redis(args.redis_url, stream_key)
        for name in (created_db, baseline_db):
            if name:
                try:
                    drop_database(args.postgres, name)
                except Exception as exc:
                    print(f"could not drop database {name}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
