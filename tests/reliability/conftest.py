"""Process fixtures for the reliability drills (DESIGN.md, "The log pipeline").

Each drill gets a stack of real processes (bench/stack.py): its own redis-server, its own
database (a copy of a migrated template on the cluster of DATABASE_URL, or a private
PostgreSQL cluster when the drill stops the database), the gateway under uvicorn, and a log
consumer (``manage.py consume_logs``) or a Celery worker. The mock upstream and the template
database are shared by the session. Drills need PostgreSQL (``postgres`` marker): the embedded
pass skips them.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import stack
from tests.reliability.drill import LateTerminatorUpstream, pipeline_idle

# Rows for the table printed at the end of the run: drill, sent, answered correctly, logs
# landed, duplicates, result, note.
DRILL_REPORT: list[tuple] = []
_database_numbers = itertools.count(1)


_failed_stacks: list[Path] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter):
    if not DRILL_REPORT:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability drills")
    write(f"{'drill':<44} {'sent':>6} {'correct':>8} {'logs':>6} {'dups':>5}  result  note")
    for drill, sent, correct, logs, dups, result, note in DRILL_REPORT:
        write(f"{drill:<44} {sent:>6} {correct:>8} {logs:>6} {dups:>5}  {result:<6}  {note}")


@pytest.fixture
def report():
    """``report(name, verdict, note)``: adds a row to the end-of-run drill table."""

    def add(name: str, verdict, note: str = "") -> None:
        result = "ok" if verdict.ok else "FAIL"
        DRILL_REPORT.append(
            (name, verdict.sent, verdict.answered_correctly, verdict.logs_landed, verdict.duplicates, result, note)
        )

    return add


@pytest.fixture(scope="session")
def reliability_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="portico-reliability-"))
    yield path
    # Kept when a drill failed, for the component logs (the failure report names the folder).
    if not _failed_stacks:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def portico_keys() -> dict[str, str]:
    return stack.new_secrets()


@pytest.fixture(scope="session")
def mock_upstream(reliability_dir) -> Iterator[stack.MockUpstreamServer]:
    mock = stack.MockUpstreamServer(reliability_dir).start()
    yield mock
    mock.stop()


@pytest.fixture(scope="session")
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((stack.HOST, 0))
        yield sock.getsockname()[1]


class Template:
    """A migrated database with workspace ``drill``, an API key and three providers: ``@mock``
    (the mock upstream), ``@dead`` (a port that refuses connections) and ``@late`` (the
    late-terminator upstream); drills get copies of it."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url
        self.api_key = api_key
        self.name = url.rsplit("/", 1)[1]


@pytest.fixture(scope="session")
def late_upstream() -> Iterator[LateTerminatorUpstream]:
    upstream = LateTerminatorUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def template_db(reliability_dir, portico_keys, mock_upstream, refused_port, late_upstream) -> Iterator[Template]:
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith("postgres"):
        pytest.skip("reliability drills need DATABASE_URL=postgres://...")
    name = f"portico_rel_{os.getpid()}_template"
    stack.drop_database(stack.with_dbname(server_url, name))
    url = stack.create_database(server_url, name)
    try:
        env = stack.portico_env(
            database_url=url, redis_url=None, var_dir=reliability_dir / "template", keys=portico_keys
        )
        stack.manage(env, "migrate", "--noinput", "-v", "0")
        stack.manage(env, "create_workspace", "drill", "--name", "Reliability drills")
        providers = {
            "mock": mock_upstream.base_url,
            "dead": f"http://{stack.HOST}:{refused_port}/v1",
            "late": late_upstream.base_url,
        }
        commands = [["create_api_key", "--workspace", "drill", "--name", "drill"]] + [
            ["create_provider", "--workspace", "drill", "--slug", slug, "--base-url", base, "--api-key", "sk"]
            for slug, base in providers.items()
        ]
        api_key = stack.manage_many(env, commands)[0]
        yield Template(url, api_key)
    finally:
        stack.drop_database(url)


class Stack:
    """One drill's processes and database; everything it started is stopped by ``close``."""

    def __init__(self, name: str, root: Path, template: Template, keys: dict[str, str], mock) -> None:
        self.name = name
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.template = template
        self.keys = keys
        self.mock = mock
        self.api_key = template.api_key
        self.stream_key = f"portico:drill:{uuid.uuid4().hex[:12]}:logs"
        self.spool_dir = self.root / "var" / "spool"
        self.database_url = ""
        self.redis_url: str | None = None
        self.postgres: stack.PostgresCluster | None = None
        self._stoppables: list = []
        self._databases: list[str] = []

    # --- pieces ---
    def database(self, *, private: bool = False) -> str:
        """A copy of the template: on the shared cluster, or on a private cluster of this drill."""
        if private:
            self.postgres = stack.PostgresCluster(root=Path(tempfile.mkdtemp(prefix="portico-rel-pg-")))
            self.postgres.init().start()
            self.database_url = self.postgres.createdb("portico")
            stack.copy_database(self.template.url, self.database_url)
        else:
            name = f"portico_rel_{os.getpid()}_{next(_database_numbers)}"
            self.database_url = stack.create_database(self.template.url, name, template=self.template.name)
            self._databases.append(self.database_url)
        return self.database_url

    def redis(self, *, persistent: bool = False) -> stack.RedisServer:
        server = stack.RedisServer(self.root / f"redis-{len(self._stoppables)}", persistent=persistent).start()
        self._stoppables.append(server)
        self.redis_url = server.url
        return server

    def pipeline_idle(self) -> bool:
        """Nothing waiting in this drill's stream or spool (then no more logs can arrive)."""
        return pipeline_idle(self.redis_url, self.stream_key, self.spool_dir)

    def env(self, redis_url: str | None, **extra) -> dict[str, str]:
        assert self.database_url, "call database() first"
        defaults = {"GATEWAY_AUTH_CACHE_TTL": 300}
        return stack.portico_env(
            database_url=self.database_url,
            redis_url=redis_url,
            var_dir=self.root / "var",
            keys=self.keys,
            stream_key=self.stream_key,
            **{**defaults, **extra},
        )

    def gateway(self, env: dict[str, str], *, name: str = "gateway") -> stack.Gateway:
        gateway = stack.Gateway(env, self.root, name=name).start()
        self._stoppables.append(gateway)
        return gateway

    def consumer(self, env: dict[str, str]) -> stack.LogConsumer:
        consumer = stack.LogConsumer(env, self.root).start()
        self._stoppables.append(consumer)
        return consumer

    def celery(self, env: dict[str, str], *, name: str = "celery") -> stack.CeleryWorker:
        worker = stack.CeleryWorker(env, self.root, name=name).start()
        self._stoppables.append(worker)
        return worker

    def tails(self) -> str:
        parts = []
        for thing in self._stoppables:
            process = thing.process
            parts.append(f"----- {process.name} (exit {process.returncode}) -----\n{process.tail(25)}")
        return "\n".join(parts)

    def close(self, *, failed: bool) -> None:
        if failed:
            _failed_stacks.append(self.root)
            print(f"\n===== component logs of {self.name} (in {self.root}) =====\n{self.tails()}")
        steps = [thing.stop for thing in reversed(self._stoppables)]
        if self.postgres is not None:
            steps.append(self.postgres.destroy)
        steps += [functools.partial(stack.drop_database, url) for url in self._databases]
        for step in steps:  # one that fails must not leave the others running
            try:
                step()
            except Exception as exc:
                print(f"cleanup of {self.name}: {type(exc).__name__}: {exc}")


def _failed(node) -> bool:
    return any(getattr(getattr(node, f"rep_{when}", None), "failed", False) for when in ("setup", "call"))


@pytest.fixture
def drill_stack(request, reliability_dir, template_db, portico_keys, mock_upstream) -> Iterator[Stack]:
    name = request.node.name
    built = Stack(name, reliability_dir / name, template_db, portico_keys, mock_upstream)
    yield built
    built.close(failed=_failed(request.node))


@pytest.fixture(scope="module")
def module_stack(request, reliability_dir, template_db, portico_keys, mock_upstream) -> Iterator[Stack]:
    """One stack shared by a module's drills (those that kill nothing)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    built = Stack(name, reliability_dir / name, template_db, portico_keys, mock_upstream)
    yield built
    failed = any(_failed(item) for item in request.session.items if item.module is request.module)
    built.close(failed=failed)
