"""Prometheus plumbing shared by every Portico process: the multiprocess directory and ``/metrics``.

Portico runs as several processes (uvicorn workers, Celery workers, the embedded writer), so
metric values live in prometheus_client's multiprocess mode: each process writes its own
memory-mapped files under ``settings.METRICS_DIR`` (config/settings.py exports it as
``PROMETHEUS_MULTIPROC_DIR`` before prometheus_client is imported) and a scrape, served by
whichever uvicorn worker gets it, adds the files up and appends the pipeline-health gauges
collected at that moment (analytics/health.py).

Cleaning: a directory left by an earlier run would keep counting its counters forever, so the
first Portico process that finds no other live one using the directory empties it. Every
process holds a shared ``flock`` on ``.portico.lock`` for its lifetime (the kernel drops it
when a process dies, even by SIGKILL); whoever can take it exclusively is alone and wipes. A
worker that dies while others run leaves its counters (they stay in the sums, so totals never
go backwards) and its live gauges, which the next process to start removes.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hmac
import os
from pathlib import Path
from typing import IO

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.views.decorators.http import require_safe

_LOCK_NAME = ".portico.lock"
_LIVE_GAUGE_PREFIX = "gauge_live"
_joined: dict[str, IO] = {}  # METRICS_DIR -> the lock file this process holds


def metrics_enabled() -> bool:
    return settings.METRICS_ENABLED


def join_metrics_dir(directory: Path | None = None) -> Path:
    """Make this process one of the directory's writers (idempotent; forked children inherit
    the parent's lock). Call before creating any metric: files made before a wipe are lost.
    ``directory`` defaults to the one prometheus_client writes to."""
    directory = directory or Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if str(directory) in _joined:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / _LOCK_NAME, "a+")  # noqa: SIM115 - held for the process' lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # Others are alive: join them (waits while one of them is wiping).
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        _remove_dead_live_gauges(directory)
    else:
        for path in directory.glob("*.db"):
            path.unlink(missing_ok=True)
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
    _joined[str(directory)] = handle
    atexit.register(_forget_live_gauges, directory)
    return directory


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_live_gauges(directory: Path) -> None:
    # Live gauges (buffered records) of a dead process would otherwise be summed forever.
    for path in directory.glob(f"{_LIVE_GAUGE_PREFIX}*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            path.unlink(missing_ok=True)


def _forget_live_gauges(directory: Path) -> None:
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(os.getpid(), str(directory))


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of every process' metrics plus the pipeline health, and its type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    from analytics.health import PipelineHealthCollector

    directory = join_metrics_dir()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    registry.register(PipelineHealthCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def authorized(authorization: str) -> bool:
    """Whether an ``Authorization`` header value carries METRICS_TOKEN (any, when none is set:
    metrics are then on only with DEBUG or on METRICS_BIND's own address)."""
    token = settings.METRICS_TOKEN
    if not token:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: 404 while metrics are off or served on METRICS_BIND's address
    (analytics/metrics_listener.py), 401 without the bearer token."""
    if settings.METRICS_BIND is not None:
        return HttpResponseNotFound(b"Metrics are not served here (METRICS_BIND).\n", content_type="text/plain")
    if not metrics_enabled():
        return HttpResponseNotFound(b"Metrics are off: set METRICS_TOKEN.\n", content_type="text/plain")
    if not authorized(request.headers.get("Authorization", "")):
        response = HttpResponse(b"Send Authorization: Bearer <METRICS_TOKEN>.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = render_metrics()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
