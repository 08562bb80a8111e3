"""``METRICS_BIND``: Prometheus scrapes an address of its own (e.g. ``127.0.0.1:9464``) instead of
the main server's ``/metrics``, which then answers 404. The network is the protection (bind it
to loopback or an internal interface); with METRICS_TOKEN set too, scrapes there need the token
as well.

One listener per host (per PROMETHEUS_MULTIPROC_DIR), whatever the number of processes: every
server process (each uvicorn worker, from the ASGI lifespan), each Celery worker's main process
and ``manage.py consume_logs`` starts a ``MetricsListener`` thread; the one that takes an exclusive ``flock`` on
``METRICS_DIR/.listener.lock`` binds the address and serves, the others try again every
``retry_s`` seconds, so when the serving process exits or is killed (the kernel drops its lock)
another takes over within that time. The answer is ``render_metrics()``: every process's
multiprocess files plus the pipeline gauges read at that moment, the same text ``/metrics``
serves. A Celery worker forks its pool after its listener started: the children close their
copies of the lock and the socket, so neither outlives the process that serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from django.conf import settings

from analytics.prometheus import authorized, render_metrics

logger = logging.getLogger(__name__)

LOCK_NAME = ".listener.lock"
PATH = "/metrics"


class _Handler(BaseHTTPRequestHandler):
    server_version = "portico-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self._plain(404, b"Not found: scrape /metrics.\n")
            return
        if not authorized(self.headers.get("Authorization", "")):
            self._plain(
                401, b"Send Authorization: Bearer <METRICS_TOKEN>.\n", {"WWW-Authenticate": 'Bearer realm="metrics"'}
            )
            return
        try:
            body, content_type = render_metrics()
        except Exception:
            logger.exception("Metrics listener: the scrape failed")
            self._plain(500, b"The scrape failed; see the server log.\n")
            return
        finally:
            from django.db import connections

            connections.close_all()  # this request's thread ends here: no connection left behind
        self._answer(200, body, content_type, {"Cache-Control": "no-store"})

    def do_POST(self) -> None:
        self._plain(405, b"Use GET.\n", {"Allow": "GET"})

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._answer(status, body, "text/plain; charset=utf-8", headers or {})

    def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # scrapes every few seconds: not worth a log line each
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a successor binds at once, whatever TIME_WAIT the last one left


class MetricsListener:
    def __init__(self, address: tuple[str, int], *, lock_path: Path, retry_s: float = 5.0) -> None:
        self.address = address
        self.lock_path = Path(lock_path)
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._server: _Server | None = None
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None

    def start(self) -> MetricsListener:
        _listeners.add(self)
        self._thread = threading.Thread(target=self._run, name="portico-metrics-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._guard:
            server = self._server
        if server is not None:
            server.shutdown()  # ends serve_forever in the listener's thread
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._try_lock():
                try:
                    self._serve()
                finally:
                    self._release_lock()
            self._stop.wait(self.retry_s)

    def _serve(self) -> None:
        host, port = self.address
        try:
            server = _Server((host, port), _Handler)
        except OSError as exc:
            logger.error(
                "Metrics listener: cannot listen on %s:%d (%s); trying again in %.0f s", host, port, exc, self.retry_s
            )
            return
        with self._guard:
            if self._stop.is_set():
                server.server_close()
                return
            self._server = server
        logger.info("Metrics listener on http://%s:%d%s (process %d)", host, port, PATH, os.getpid())
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            with self._guard:
                self._server = None
            server.server_close()

    def _try_lock(self) -> bool:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _forget_after_fork(self) -> None:
        """In a forked child (a Celery pool process): close the inherited lock and socket, which
        belong to the parent's listener thread (not copied by fork), so they die with the parent."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.socket.close()
            self._server = None
        self._thread = None
        self._guard = threading.Lock()


_listeners: weakref.WeakSet[MetricsListener] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for listener in list(_listeners):
        listener._forget_after_fork()
    _listeners.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def start_metrics_listener() -> MetricsListener | None:
    """This process's candidate listener when METRICS_BIND is set (None otherwise)."""
    if settings.METRICS_BIND is None:
        return None
    return MetricsListener(settings.METRICS_BIND, lock_path=Path(settings.METRICS_DIR) / LOCK_NAME).start()
