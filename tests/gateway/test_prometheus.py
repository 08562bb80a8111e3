"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes a running Portico both ways: with the
bearer token on the gateway's port, and on a METRICS_BIND address of its own (the listener of
analytics/metrics_listener.py, on this process's metrics directory). Requests with metadata go
through the gateway to the mock upstream, and Prometheus' own query API must see them under
their metadata labels."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from analytics.metrics_listener import LOCK_NAME, MetricsListener
from tests.monitoring.conftest import TOKEN, metrics_on, unique  # noqa: F401 - fixtures

PROMETHEUS = Path("/usr/bin/prometheus")  # .ci/run installs Debian's package


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def bind_address(tmp_path):
    """A METRICS_BIND listener of this process (the gateway's metrics directory)."""
    listener = MetricsListener(("127.0.0.1", free_port()), lock_path=tmp_path / LOCK_NAME, retry_s=0.1).start()
    deadline = time.monotonic() + 10
    while not listener.serving:
        assert time.monotonic() < deadline, "the metrics listener did not start"
        time.sleep(0.05)
    yield "{}:{}".format(*listener.address)
    listener.stop()


@pytest.fixture
def prometheus(gateway_url, bind_address, tmp_path):
    """Prometheus scraping the live gateway and the bind address every second; yields its URL."""
    assert PROMETHEUS.exists(), "Debian's prometheus package is needed: apt-get install -y prometheus"
    target = gateway_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "portico",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials": TOKEN},
                "static_configs": [{"targets": [target]}],
            },
            {
                "job_name": "portico-bind",  # the token is asked there too while one is set
                "authorization": {"type": "Bearer", "credentials": TOKEN},
                "static_configs": [{"targets": [bind_address]}],
            },
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def query(prometheus: str, promql: str) -> list:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]


def wait_for_value(prometheus: str, promql: str, expected: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    result: list = []
    while time.monotonic() < deadline:
        result = query(prometheus, promql)
        if result and float(result[0]["value"][1]) == expected:
            return
        time.sleep(0.25)
    raise AssertionError(f"{promql}: expected {expected}, Prometheus has {result}")


def metadata(**values: str) -> dict[str, str]:
    return {"x-portkey-metadata": json.dumps(values)}


def test_prometheus_scrapes_requests_by_metadata_label(metrics_on, gw, prometheus, unique):  # noqa: F811
    production = {**gw.headers(), **metadata(environment="production", feature=unique)}
    staging = {**gw.headers(), **metadata(environment="staging", feature=unique)}
    for headers in (production, production, production, staging):
        assert gw.post(headers=headers).status_code == 200
    stream = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", gw.v1 + "/chat/completions", json=stream, headers=production, timeout=10) as response:
        assert response.status_code == 200
        response.read()

    for job in ("portico", "portico-bind"):
        production = f'job="{job}",environment="production",feature="{unique}"'
        wait_for_value(prometheus, f"sum(portico_requests_total{{{production}}})", 4)
        wait_for_value(
            prometheus, f'sum(portico_requests_total{{job="{job}",environment="staging",feature="{unique}"}})', 1
        )
        wait_for_value(prometheus, f'up{{job="{job}"}}', 1)
    # The mock's usage: "hi" is 1 word + 3 per message; the reply "This is a mock reply." 5 words.
    labels = f'job="portico",feature="{unique}",provider="@mock",model="gpt-4o-mini",status_class="2xx"'
    wait_for_value(prometheus, f'sum(portico_tokens_total{{{labels},type="input"}})', 5 * 4)
    wait_for_value(prometheus, f'sum(portico_tokens_total{{{labels},type="output"}})', 5 * 5)
    wait_for_value(prometheus, f"sum(portico_request_duration_seconds_count{{{labels}}})", 5)
    wait_for_value(prometheus, f"sum(portico_upstream_duration_seconds_count{{{labels}}})", 5)
    wait_for_value(prometheus, f"sum(portico_stream_first_chunk_seconds_count{{{labels}}})", 1)
    # Pipeline health comes along in the same scrape.
    wait_for_value(prometheus, 'portico_database_up{job="portico-bind"}', 1)
    wait_for_value(prometheus, 'portico_database_up{job="portico"}', 1)
    assert query(prometheus, "portico_rollup_lag_seconds")
    assert query(prometheus, "portico_log_buffer_records")
