"""Several processes, one scrape: prometheus_client's multiprocess files as Portico manages them
(analytics/prometheus.py). Real child processes write to a directory of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from analytics.prometheus import join_metrics_dir
from tests.monitoring.conftest import value

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from gateway.metrics import GatewayMetrics
records, buffered, ending = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
metrics = GatewayMetrics(metadata_labels=("environment",), max_values=100)
record = {"provider": "@mock", "model": "m", "status_code": 200, "latency_ms": 20.0,
          "prompt_tokens": 4, "completion_tokens": 5, "metadata": {"environment": "production"}}
metrics.observe_records([record] * records)
metrics.buffered.set(buffered)
print("ready", flush=True)
if ending == "wait":
    sys.stdin.read()  # until the test closes stdin
elif ending == "killed":
    os._exit(0)  # no clean-up, as after SIGKILL
"""


class Child:
    def __init__(self, directory: Path, records: int, buffered: int = 0, ending: str = "exit") -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "METRICS_TOKEN": "t"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(records), str(buffered), ending],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "ready"

    def finish(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0


def run(directory: Path, records: int, buffered: int = 0, ending: str = "exit") -> None:
    Child(directory, records, buffered, ending).finish()


def collect(directory: Path) -> str:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry).decode()


@pytest.fixture
def directory(tmp_path) -> Path:
    return tmp_path / "metrics"


def test_two_processes_increment_and_one_scrape_sees_both(directory):
    join_metrics_dir(directory)  # this process plays the uvicorn worker that serves /metrics
    run(directory, records=3)
    run(directory, records=2)
    text = collect(directory)
    assert value(text, "portico_requests_total", environment="production") == 5
    assert value(text, "portico_tokens_total", type="output") == 25
    assert value(text, "portico_request_duration_seconds_count") == 5


def test_the_first_process_of_a_fresh_start_empties_the_directory(directory):
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"left by an earlier run")
    run(directory, records=3)  # exits: no Portico process uses the directory any more
    run(directory, records=2)  # a new start
    assert not (directory / "counter_999999.db").exists()
    assert value(collect(directory), "portico_requests_total") == 2


def test_a_dead_process_leaves_no_buffered_records_behind(directory):
    join_metrics_dir(directory)
    run(directory, records=1, buffered=7, ending="killed")
    assert value(collect(directory), "portico_log_buffer_records") == 7  # nobody has noticed yet
    alive = Child(directory, records=1, buffered=2, ending="wait")  # a restarted worker
    text = collect(directory)
    assert value(text, "portico_log_buffer_records") == 2
    assert value(text, "portico_requests_total") == 2  # counters of the dead process still count
    alive.finish()
    assert not value(collect(directory), "portico_log_buffer_records")  # a clean exit removes its own
