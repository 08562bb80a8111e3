"""docker-compose.yml's healthchecks, run as written against real processes: the web check
under the production settings .env.example suggests, and beat's heartbeat file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from cryptography.fernet import Fernet

from config.celery import HeartbeatScheduler, app
from tests.envs import deployment_env

BASE_DIR = Path(__file__).resolve().parents[2]


def healthcheck(service: str) -> list[str]:
    """The service's healthcheck command from docker-compose.yml, without the leading CMD."""
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return test[1:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_web_healthcheck_passes_under_production_settings(tmp_path):
    port = free_port()
    env = deployment_env("DATABASE_URL", "REDIS_URL", "DEBUG")
    env.update(
        DEBUG="false",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        PORTICO_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="portico.example.com",
        SECURE_SSL_REDIRECT="true",
        PORTICO_VAR_DIR=str(tmp_path),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None, "server did not start"
                time.sleep(0.2)
        # These settings are in force: a page asked for as localhost is refused, and plain
        # HTTP for the right host is redirected to HTTPS ...
        assert httpx.get(base + "/login/", headers={"host": "localhost:8000"}).status_code == 400
        assert httpx.get(base + "/login/", headers={"host": "portico.example.com"}).status_code == 301
        # ... and the container's healthcheck, exactly as docker-compose.yml runs it, passes.
        command = [part.replace("localhost:8000", f"localhost:{port}") for part in healthcheck("web")]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        health = httpx.get(base + "/healthz", headers={"host": "localhost:8000"})
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_the_beat_healthcheck_follows_the_heartbeat(tmp_path, settings):
    heartbeat = tmp_path / "beat-heartbeat"
    command = [part.replace("/app/var/beat-heartbeat", str(heartbeat)) for part in healthcheck("beat")]
    assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0  # no beat yet

    settings.BEAT_HEARTBEAT_FILE = heartbeat
    scheduler = HeartbeatScheduler(app=app, schedule_filename=str(tmp_path / "celerybeat-schedule"), lazy=True)
    scheduler.setup_schedule()
    scheduler.tick()
    assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0

    stale = time.time() - 120  # a beat that stopped ticking two minutes ago
    os.utime(heartbeat, (stale, stale))
    assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0


def test_web_and_worker_share_the_spool_on_a_volume_and_only_migrate_migrates():
    services = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]
    for name in ("web", "worker"):
        assert "spool:/app/var/spool" in services[name]["volumes"]
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert "migrate" not in str(services[name]["command"])
        assert services[name]["healthcheck"]["test"]
    assert services["migrate"]["restart"] == "no"
    assert "--appendonly" in services["redis"]["command"]
