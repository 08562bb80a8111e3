"""Shared fixtures: three actors (owner, member, outsider) and a workspace with a key and a
provider. Services are used to build them so tests go through the same code as users do."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.db.backends.signals import connection_created

from bench.mock_upstream import MockUpstream
from tests.servers import serve_asgi
from workspaces import services
from workspaces.models import Membership

USES_POSTGRES = os.environ.get("DATABASE_URL", "").startswith("postgres")
USES_REDIS = bool(os.environ.get("REDIS_URL"))

# Prometheus' multiprocess files go to a folder of this test process's own, not the checkout's
# var/metrics (which a running `make run` scrapes): with pytest-xdist, a test reading a
# counter's change must not see another worker's increments. Set here, at import, because
# prometheus_client reads the variable when a metric value is created and a folder's conftest
# (tests/otel) may create metrics before pytest_configure.
METRICS_DIR = Path(tempfile.mkdtemp(prefix="portico-test-metrics-"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)


def pytest_configure(config):
    # Spooled log batches from tests must never land in the developer's real spool folder.
    from django.conf import settings

    settings.LOG_SPOOL_DIR = Path(tempfile.mkdtemp(prefix="portico-test-spool-"))
    settings.METRICS_DIR = METRICS_DIR
    # A stream of the test run's own, so a developer's running stack is not disturbed.
    settings.LOG_STREAM_KEY = f"portico:test:{os.getpid()}:logs"
    # Static files as production serves them (hashed names from the manifest), collected once
    # per run into a folder of the run's own (see collected_static below).
    settings.STATIC_ROOT = Path(tempfile.mkdtemp(prefix="portico-test-static-"))
    run = f"portico:test:{os.getpid()}:{time.time_ns()}"
    settings.REDIS_KEY_PREFIX = run
    # Django's cache too: in Redis it outlives the run (form nonces keep 24 h), and a later
    # run with a fresh database reuses the same primary keys, hence the same cache keys.
    settings.CACHES = {alias: {**conf, "KEY_PREFIX": run} for alias, conf in settings.CACHES.items()}
    # The actor fixtures create users with passwords and tests log them in: the production
    # hasher (PBKDF2, deliberately ~0.5 s a hash) would be most of the suite's CPU. Hashes a
    # test process makes are only checked in that process.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# Marked `slow` (so `make test-fast` leaves them out; CI runs them): long generated-input runs
# (hypothesis, schemathesis, the 10k-log rollup check) and tests that start processes
# (settings checks in a fresh interpreter, servers, schedulers, Prometheus, a private Redis).
SLOW_FILES = frozenset(
    {
        "alerts/test_api_fuzz.py",
        "analytics/test_api_query_fuzz.py",
        "analytics/test_api_schemathesis.py",
        "analytics/test_ingest_fast_path.py",
        "analytics/test_rollups_bench.py",
        "analytics/test_rollups_property.py",
        "config/test_checks.py",
        "config/test_compose.py",
        "config/test_scheduler.py",
        "config/test_settings.py",
        "config/test_startup.py",
        "dashboard/test_query_fuzz.py",
        "dashboard/test_reads_agree.py",
        "gateway/test_fuzz.py",
        "gateway/test_policies_redis.py",
        "gateway/test_prometheus.py",
        "monitoring/test_listener.py",
        "monitoring/test_multiprocess.py",
        "monitoring/test_settings.py",
    }
)


def pytest_ignore_collect(collection_path, config):
    # When the marker expression leaves out every slow test (`make test-fast`), their files are
    # not imported at all: they would only be deselected, after importing hypothesis and
    # schemathesis (seconds per worker).
    if f"{collection_path.parent.name}/{collection_path.name}" in SLOW_FILES and _deselects_slow(config):
        return True
    return None


def _deselects_slow(config) -> bool:
    from _pytest.mark.expression import Expression

    if not config.option.markexpr:
        return False
    expression = Expression.compile(config.option.markexpr)
    # False for a slow test whatever its other markers (checked with all of them on, all off).
    return not any(
        expression.evaluate(lambda name, others=others: name == "slow" or others) for others in (True, False)
    )


def pytest_collection_modifyitems(config, items):
    # Postgres- and Redis-only tests are skipped in the embedded pass only; in the
    # Postgres+Redis pass nothing skips.
    skip_pg = pytest.mark.skip(reason="needs DATABASE_URL=postgres://... (embedded pass)")
    skip_redis = pytest.mark.skip(reason="needs REDIS_URL (embedded pass)")
    for item in items:
        # `make test-fast` deselects these two folders by marker, whatever a test file declares.
        path = Path(str(item.path))
        folder = path.parent.name
        if folder in ("browser", "reliability"):
            item.add_marker(getattr(pytest.mark, folder))
        if f"{folder}/{path.name}" in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
        if "postgres" in item.keywords and not USES_POSTGRES:
            item.add_marker(skip_pg)
        if "redis" in item.keywords and not USES_REDIS:
            item.add_marker(skip_redis)


@pytest.fixture(scope="session", autouse=True)
def collected_static():
    """`collectstatic`, as a deployment runs it: pages link the manifest's hashed names."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(scope="session", autouse=True)
def static_files_scanned_once(collected_static):
    """WhiteNoise lists STATIC_ROOT (a stat and a content type per file) whenever its middleware
    is built, and Django's test client builds the middleware for every client: ~25 ms a test.
    STATIC_ROOT is collected once per run, so its listing is made once and every middleware
    built afterwards serves from a copy of it, exactly as it would from its own."""
    from whitenoise.middleware import WhiteNoiseMiddleware

    scan = WhiteNoiseMiddleware.update_files_dictionary
    listings: dict[tuple, dict] = {}

    def update_files_dictionary(self, root, prefix):
        key = (root, prefix, self.max_age, self.allow_all_origins, self.charset, self.add_headers_function)
        if key not in listings:
            own, self.files = self.files, {}
            scan(self, root, prefix)
            listings[key], self.files = self.files, own
        self.files.update(listings[key])

    WhiteNoiseMiddleware.update_files_dictionary = update_files_dictionary
    yield
    WhiteNoiseMiddleware.update_files_dictionary = scan


@pytest.fixture(scope="session")
def live_server(request, collected_static):
    """pytest-django's live server, serving static files as a deployment does: WhiteNoise from
    the collected STATIC_ROOT. (pytest-django wraps the app in Django's test handler, which
    serves the source files under their plain names and 404s the manifest's hashed ones.)"""
    from django.contrib.staticfiles import handlers
    from pytest_django.live_server_helper import LiveServer

    test_handler = handlers.StaticFilesHandler
    handlers.StaticFilesHandler = lambda application: application
    try:
        server = LiveServer(request.config.getvalue("liveserver") or "localhost")
    finally:
        handlers.StaticFilesHandler = test_handler
    yield server
    server.stop()


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner", "owner@example.com", "owner-pass-123")


@pytest.fixture
def member(django_user_model):
    return django_user_model.objects.create_user("member", "member@example.com", "member-pass-123")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user("outsider", "outsider@example.com", "outsider-pass-123")


@pytest.fixture
def workspace(owner, member):
    ws = services.workspace_create(slug="acme", name="Acme", owner=owner)
    services.membership_add(workspace=ws, user=member, role=Membership.Role.MEMBER)
    return ws


@pytest.fixture
def other_workspace(outsider):
    return services.workspace_create(slug="other", name="Other Co", owner=outsider)


@pytest.fixture
def api_key(workspace):
    """(ApiKey, full key string)."""
    return services.api_key_create(workspace=workspace, name="default")


# --- a real gateway (uvicorn serving config.asgi on a loopback port) in front of the real mock
# upstream; session-wide and shared by tests/gateway, tests/providers and tests/configs, since the gateway app,
# its upstream client and its log buffer are per process and bound to the server's event loop.


@pytest.fixture(params=["native", "aiohttp"])
def upstream_client(request, settings):
    """Runs a test once per upstream client implementation (UPSTREAM_CLIENT): both must behave
    the same (workspaces/upstream/client.py)."""
    settings.UPSTREAM_CLIENT = request.param
    return request.param


@pytest.fixture(scope="session")
def upstream():
    with MockUpstream() as mock:
        yield mock


@pytest.fixture(scope="session")
def log_consumer():
    """With REDIS_URL the gateway hands logs to a Redis stream; this thread plays the Celery
    worker, running the same consumer the ``consume_log_stream`` task runs."""
    if not settings.REDIS_URL:
        yield None
        return
    from analytics import pipeline

    stop = threading.Event()
    # Fixed at start, like the gateway's buffer: a test that points settings.LOG_STREAM_KEY at a
    # stream of its own (test_logbuffer's `stream`) must not have this thread drain it (it did,
    # and dropped the records as orphans: the test's workspace is not committed).
    stream_key, name = settings.LOG_STREAM_KEY, f"{pipeline.consumer_name()}-test-consumer"

    def yield_to_the_flush(sender, connection, **kwargs):
        # Between transactional tests the database is flushed (one TRUNCATE of every table)
        # while this thread may be writing a batch; the two lock tables in opposite orders. With
        # a shorter deadlock_timeout this thread notices first and is the one rolled back (its
        # entries stay pending and are written later), never the test's flush.
        if threading.current_thread().name == "test-log-consumer" and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET deadlock_timeout = '100ms'")

    connection_created.connect(yield_to_the_flush, weak=False)

    def loop():
        while not stop.is_set():
            try:
                pipeline.consume_log_stream(
                    stream_key=stream_key, consumer=name, max_seconds=0.5, block_ms=50, min_idle_ms=2_000
                )
            except Exception:  # between tests the database is blocked; try again shortly
                time.sleep(0.05)
        connections.close_all()

    thread = threading.Thread(target=loop, name="test-log-consumer", daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join(timeout=10)
    connection_created.disconnect(yield_to_the_flush)
    pipeline.redis_client().delete(stream_key)


@pytest.fixture(scope="session")
def gateway_url(log_consumer):
    from config.asgi import application

    with serve_asgi(application) as url:
        yield url
