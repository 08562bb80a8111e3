"""A production-like Portico stack built from real processes, for reliability drills and benchmarks.

Every piece is a child process of the caller that it can signal, kill and restart:

- ``RedisServer``: a private ``redis-server`` on a free loopback port (optionally with an
  append-only file, so a restart keeps the stream);
- ``PostgresCluster``: a private PostgreSQL cluster (initdb into a temp dir owned by the
  ``postgres`` user), for drills that stop the database; ``shared_database`` makes a fresh
  database on an existing cluster instead (createdb/dropdb, optionally from a template);
- ``MockUpstreamServer``: ``bench/mock_upstream.py`` as a process;
- ``Gateway``: ``uvicorn config.asgi:application --loop uvloop --http httptools --lifespan on``;
- ``LogConsumer`` (``manage.py consume_logs``) and ``CeleryWorker`` (``celery -A config worker -B``).

Children run in their own session (a signal to the group reaches a worker's pool children too)
and, when started from the main thread, get SIGKILL if the process that started them dies. ``portico_env`` builds the production
environment (DEBUG off, real keys) the Portico processes share; ``manage`` runs a management
command and returns its last stdout line (the scriptable commands print their result there).

Nothing here touches processes it did not start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import orjson

BASE_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PG_BIN = Path(os.environ.get("PORTICO_PG_BIN", "/usr/lib/postgresql/15/bin"))
PYTHON = sys.executable
_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A component did not start or stop as expected (the message carries its log tail)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], what: str, *, timeout: float = 30.0, interval: float = 0.05) -> object:
    """Poll ``check`` until it returns something truthy; raise StackError at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing is not up yet
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise StackError(f"{what} not reached within {timeout:.0f} s{detail}")
        time.sleep(interval)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """One child process, its output in ``log_path``; restartable with the same command."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, log_dir: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_path = Path(log_dir) / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Process:
        if self.alive:
            raise StackError(f"{self.name} is already running (pid {self.pid})")
        self.starts += 1
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- start #{self.starts}: {' '.join(self.cmd)}\n".encode())
            log_file.flush()
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=BASE_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # The death signal follows the *thread* that forked: only the main thread lives
                # as long as the caller (a child started from a helper thread would die with it).
                preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def signal(self, sig: int, *, group: bool = False) -> None:
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (a worker's pool children too) and reap."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise StackError(f"{self.name} did not exit within {timeout:.0f} s:\n{self.tail()}") from None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Whatever the group left behind (a pool child) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def rss_kb(self) -> int:
        """Resident memory of the main process in KiB (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise StackError(f"no VmRSS for {self.name}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self, what: str = "") -> None:
        if self.proc is not None and not self.alive:
            raise StackError(f"{self.name} exited with code {self.returncode}{what}:\n{self.tail()}")


# --- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server. ``persistent`` keeps an fsync'd append-only file in ``workdir``
    so a kill and restart keep what was acknowledged (the production setting for a log stream)."""

    def __init__(self, workdir: Path, *, port: int | None = None, persistent: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        cmd = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--daemonize", "no"]
        cmd += ["--dir", str(self.workdir), "--protected-mode", "no"]
        cmd += ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        self.process = Process(f"redis-{self.port}", cmd, log_dir=self.workdir)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.process.start()

        def ready() -> bool:
            self.process.check_alive()
            with self.client() as client:
                return bool(client.ping())

        wait_for(ready, f"redis on port {self.port}", timeout=timeout)
        return self

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()


# --- PostgreSQL -------------------------------------------------------------------------------


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd]


class PostgresCluster:
    """A private cluster in a temp dir owned by ``postgres`` (fsync off: drills, not data)."""

    def __init__(self, *, port: int | None = None, root: Path | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(root or tempfile.mkdtemp(prefix="portico-pg-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://postgres@{HOST}:{self.port}/{dbname}"

    def _run(self, *cmd: str, timeout: float = 60.0) -> str:
        result = subprocess.run(_as_postgres(*cmd), capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise StackError(f"{' '.join(cmd[:2])} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout

    def init(self) -> PostgresCluster:
        shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "-N")
        return self

    def start(self) -> PostgresCluster:
        options = f"-p {self.port} -k {self.root} -c listen_addresses={HOST} -c fsync=off -c full_page_writes=off"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-o", options, "-w", "start"
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def createdb(self, name: str) -> str:
        subprocess.run(["createdb", "-h", HOST, "-p", str(self.port), "-U", "postgres", name], check=True)
        return self.url(name)

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(StackError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _pg_args(url: str) -> list[str]:
    parts = urlsplit(url)
    args = ["-h", parts.hostname or HOST, "-p", str(parts.port or 5432), "-U", parts.username or "postgres"]
    return args


def _pg_env(url: str) -> dict[str, str]:
    password = urlsplit(url).password
    return {**os.environ, "PGPASSWORD": password} if password else dict(os.environ)


def with_dbname(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def create_database(server_url: str, name: str, *, template: str | None = None) -> str:
    """A new database on the cluster of ``server_url`` (any database URL of it); returns its URL."""
    cmd = ["createdb", *_pg_args(server_url)] + (["-T", template] if template else []) + [name]
    result = subprocess.run(cmd, env=_pg_env(server_url), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"createdb {name} failed: {result.stderr.strip()}")
    return with_dbname(server_url, name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    cmd = ["dropdb", *_pg_args(url), "--if-exists", "--force", name]
    subprocess.run(cmd, env=_pg_env(url), capture_output=True, check=False)


def copy_database(source_url: str, target_url: str) -> None:
    """pg_dump | psql: a database copied to another cluster (same major version)."""
    dump = subprocess.Popen(
        ["pg_dump", "--no-owner", *_pg_args(source_url), urlsplit(source_url).path.lstrip("/")],
        env=_pg_env(source_url),
        stdout=subprocess.PIPE,
    )
    restore = subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", *_pg_args(target_url), urlsplit(target_url).path.lstrip("/")],
        env=_pg_env(target_url),
        stdin=dump.stdout,
        capture_output=True,
        check=False,
    )
    dump.stdout.close()
    if dump.wait() != 0 or restore.returncode != 0:
        raise StackError(f"copying the database failed: {restore.stderr.decode(errors='replace')[-2000:]}")


# --- Portico processes ------------------------------------------------------------------------


def new_secrets() -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {"SECRET_KEY": secrets.token_urlsafe(50), "PORTICO_ENCRYPTION_KEY": Fernet.generate_key().decode()}


def portico_env(
    *,
    database_url: str,
    redis_url: str | None,
    var_dir: Path,
    keys: dict[str, str],
    stream_key: str = "portico:logs",
    **extra: str | int | float,
) -> dict[str, str]:
    """The production environment (DEBUG off) for gateway, workers and commands."""
    drop = ("REDIS_URL", "DATABASE_URL", "PYTEST_VERSION", "PYTEST_CURRENT_TEST", "DJANGO_SETTINGS_MODULE")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("LOG_", "GATEWAY_"))}
    var_dir = Path(var_dir)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        ALLOWED_HOSTS=HOST,
        SECURE_SSL_REDIRECT="false",
        UPSTREAM_ALLOWED_NETWORKS="127.0.0.0/8",
        DATABASE_URL=database_url,
        PORTICO_VAR_DIR=str(var_dir),
        LOG_SPOOL_DIR=str(var_dir / "spool"),
        LOG_STREAM_KEY=stream_key,
        LOG_LEVEL="warning",
        PYTHONUNBUFFERED="1",
        **keys,
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update({name: str(value) for name, value in extra.items()})
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120.0) -> str:
    """Run ``manage.py *args``; return the last line of stdout (raise with stderr on failure)."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def manage_many(env: dict[str, str], commands: list[list[str]], *, timeout: float = 120.0) -> list[str]:
    """Independent management commands run side by side; their last stdout lines, in order."""
    procs = [
        subprocess.Popen(
            [PYTHON, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise StackError(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{stderr[-3000:]}")
        lines = stdout.strip().splitlines()
        results.append(lines[-1] if lines else "")
    return results


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class MockUpstreamServer:
    """``bench/mock_upstream.py`` in its own process (its own CPU time, like a real provider)."""

    def __init__(self, log_dir: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        cmd = [PYTHON, "bench/mock_upstream.py", "--host", HOST, "--port", str(self.port)]
        self.process = Process(f"mock-{self.port}", cmd, log_dir=log_dir)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> MockUpstreamServer:
        self.process.start()

        def ready() -> bool:
            self.process.check_alive()
            return _http_status(self.url + "/_mock/stats") == 200

        wait_for(ready, "mock upstream", timeout=15)
        return self

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "/_mock/stats", timeout=5) as response:
            return orjson.loads(response.read())

    def stop(self) -> None:
        self.process.stop()


class Gateway:
    """uvicorn serving config.asgi the production way, one worker."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, port: int | None = None, name: str = "gateway") -> None:
        self.port = port or free_port()
        cmd = [PYTHON, "-m", "uvicorn", "config.asgi:application", "--host", HOST, "--port", str(self.port)]
        cmd += ["--loop", "uvloop", "--http", "httptools", "--lifespan", "on", "--no-access-log"]
        cmd += ["--log-level", "warning", "--backlog", "4096"]
        self.process = Process(name, cmd, env=env, log_dir=log_dir)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> Gateway:
        self.process.start()

        def ready() -> bool:
            self.process.check_alive(" while starting")
            return _http_status(self.url + "/healthz") == 200

        wait_for(ready, "gateway /healthz", timeout=timeout)
        return self

    def stop(self, timeout: float = 20.0) -> int | None:
        return self.process.stop(timeout)


class LogConsumer:
    """``manage.py consume_logs``: the stream consumer as a dedicated process."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, name: str = "consumer") -> None:
        self.process = Process(name, [PYTHON, "manage.py", "consume_logs"], env=env, log_dir=log_dir)

    def start(self) -> LogConsumer:
        self.process.start()
        return self

    def stop(self) -> int | None:
        return self.process.stop()


class CeleryWorker:
    """``celery -A config worker -B --concurrency N`` (default 1): the worker with beat embedded,
    which runs consume_log_stream every second and replay_spool every 30 s (config/celery.py)."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, name: str = "celery", concurrency: int = 1) -> None:
        self.log_dir = Path(log_dir)
        schedule = self.log_dir / f"{name}-beat-schedule"
        cmd = [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-B",
            "-l",
            "warning",
            "--concurrency",
            str(concurrency),
        ]
        cmd += ["-s", str(schedule), "-n", f"{name}-{secrets.token_hex(3)}@%h", "--without-mingle", "--without-gossip"]
        self.process = Process(name, cmd, env=env, log_dir=log_dir)

    def start(self) -> CeleryWorker:
        self.process.start()
        return self

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> int | None:
        # A warm shutdown waits for the running consume task (up to ~5 s): a drill's teardown
        # has no use for it, the stream is at-least-once anyway.
        return self.process.stop(2)
