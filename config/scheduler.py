"""Embedded mode's periodic jobs: with no REDIS_URL there is no Celery beat, so the server
process runs the same task functions on the same intervals itself (config/celery.py's
``beat_schedule`` is the one list of jobs and intervals).

One thread per process, started and stopped with the ASGI lifespan (config/asgi.py). Under
``uvicorn --workers N`` every worker starts one, but only the worker holding an exclusive
``flock`` on ``VAR_DIR/scheduler.lock`` runs jobs; the others retry the lock every
``lock_retry_s``, so a restarted or killed worker's duty passes to another within that time
(the kernel releases the lock when its holder exits). A failing job is logged and retried at
its next interval; the others keep running.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

# Beat entries that have nothing to do without Redis: the stream reader (the gateway writes
# straight to the database in embedded mode).
REDIS_ONLY_JOBS = frozenset({"consume-log-stream"})


@dataclass
class Job:
    name: str
    func: Callable[[], object]
    interval_s: float
    next_run: float = 0.0


def beat_jobs() -> list[Job]:
    """The Celery beat schedule's jobs, each calling its task function in this process."""
    from config.celery import app

    return [
        Job(name=name, func=import_string(entry["task"]), interval_s=float(entry["schedule"]))
        for name, entry in app.conf.beat_schedule.items()
        if name not in REDIS_ONLY_JOBS
    ]


class EmbeddedScheduler:
    def __init__(
        self,
        jobs: list[Job],
        *,
        lock_path: Path,
        first_run_after_s: float = 10.0,
        lock_retry_s: float = 60.0,
    ) -> None:
        self.jobs = jobs
        self.lock_path = Path(lock_path)
        self.first_run_after_s = first_run_after_s
        self.lock_retry_s = lock_retry_s
        self.runs: dict[str, int] = {job.name: 0 for job in jobs}
        self.failures: dict[str, int] = {job.name: 0 for job in jobs}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None

    @property
    def owns_lock(self) -> bool:
        return self._lock_fd is not None

    def start(self) -> EmbeddedScheduler:
        self._thread = threading.Thread(target=self._run, name="portico-embedded-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the job running now (if any) and release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._try_lock():
                    self._run_jobs()
                else:
                    self._stop.wait(self.lock_retry_s)
        finally:
            self._release_lock()

    def _run_jobs(self) -> None:
        # Due shortly after start, then every interval: a development server restarted often
        # still applies retention, instead of waiting a full hour after each start.
        start = time.monotonic() + self.first_run_after_s
        for job in self.jobs:
            job.next_run = start
        logger.info("Embedded scheduler running %d periodic job(s) in process %d", len(self.jobs), os.getpid())
        while not self._stop.is_set():
            now = time.monotonic()
            for job in self.jobs:
                if job.next_run <= now and not self._stop.is_set():
                    self._run_job(job)
                    job.next_run = time.monotonic() + job.interval_s
            self._stop.wait(max(0.0, min(job.next_run for job in self.jobs) - time.monotonic()))

    def _run_job(self, job: Job) -> None:
        try:
            result = job.func()
        except Exception:
            self.failures[job.name] += 1
            logger.exception("Periodic job %s failed; next try in %.0f s", job.name, job.interval_s)
        else:
            logger.debug("Periodic job %s: %s", job.name, result)
        finally:
            self.runs[job.name] += 1
            # This thread's connections would otherwise stay open (and, on SQLite, keep the
            # file busy) until the next run.
            connections.close_all()

    def _try_lock(self) -> bool:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
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


def start_embedded_scheduler() -> EmbeddedScheduler | None:
    """Start the periodic jobs in this server process when the deployment is embedded (no
    REDIS_URL: Celery beat runs them otherwise) and EMBEDDED_SCHEDULER is on."""
    if settings.REDIS_URL or not settings.EMBEDDED_SCHEDULER:
        return None
    return EmbeddedScheduler(beat_jobs(), lock_path=Path(settings.VAR_DIR) / "scheduler.lock").start()
