"""`manage.py check --deploy` (and server start-up) warn when the log stream's Redis keeps
nothing on disk: a Redis restart would lose the log batches no worker has written yet."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.checks import registry

from bench.stack import RedisServer, free_port
from config.checks import NO_PERSISTENCE, SNAPSHOTS_ONLY, redis_persistence_warning, warn_at_startup
from tests.envs import deployment_env

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_server(tmp_path):
    def start(*, persistent: bool) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{persistent}", persistent=persistent).start()
        started.append(server)
        return server

    started: list[RedisServer] = []
    yield start
    for server in started:
        server.stop()


def deploy_warnings(settings, url: str) -> list[str]:
    settings.REDIS_URL = url
    return [m.id for m in registry.run_checks(tags=["portico"], include_deployment_checks=True)]


@pytest.mark.redis
def test_it_warns_about_the_shared_redis_without_persistence(settings):
    # The suite's Redis (127.0.0.1:6379, as CI starts it) runs with --save "" --appendonly no.
    assert deploy_warnings(settings, settings.REDIS_URL) == [NO_PERSISTENCE]


def test_a_redis_with_aof_passes(settings, redis_server):
    assert deploy_warnings(settings, redis_server(persistent=True).url) == []


def test_a_redis_with_snapshots_only_gets_its_own_warning(settings, redis_server):
    server = redis_server(persistent=False)
    assert deploy_warnings(settings, server.url) == [NO_PERSISTENCE]
    with server.client() as client:
        client.config_set("save", "3600 1")
    warning = redis_persistence_warning(server.url)
    assert warning.id == SNAPSHOTS_ONLY
    assert "since the last snapshot" in warning.msg
    assert "--appendonly yes" in warning.hint


def test_an_unreachable_redis_is_not_an_error(settings):
    assert deploy_warnings(settings, f"redis://127.0.0.1:{free_port()}/0") == []


def test_embedded_mode_has_no_stream_to_check(settings):
    assert deploy_warnings(settings, "") == []


def test_the_server_logs_the_warning_at_start_up(settings, redis_server, caplog):
    settings.REDIS_URL = redis_server(persistent=False).url
    with caplog.at_level(logging.WARNING, logger="config.checks"):
        warn_at_startup()
    assert NO_PERSISTENCE in caplog.text and "keeps nothing on disk" in caplog.text


def test_manage_py_check_deploy_reports_it(tmp_path, redis_server):
    env = deployment_env("DATABASE_URL")
    env.update(
        DEBUG="false",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        PORTICO_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="portico.example.com",
        PORTICO_VAR_DIR=str(tmp_path),
        REDIS_URL=redis_server(persistent=False).url,
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr  # a warning, not an error
    assert f"({NO_PERSISTENCE}) The log stream's Redis keeps nothing on disk" in result.stderr


def test_a_production_server_on_the_development_secret_says_so(settings, caplog):
    settings.REDIS_URL = ""
    settings.DEBUG = False
    settings.USES_DEV_SECRET_KEY = True
    with caplog.at_level(logging.WARNING, logger="config.checks"):
        warn_at_startup()
    assert "SECRET_KEY is not set: using this checkout's development secret" in caplog.text


def test_make_run_on_sqlite_prints_no_system_check_warnings(tmp_path):
    # `make run` migrates first; on SQLite Django warned (models.W040) that the rollup index's
    # INCLUDE columns are ignored: a WARNINGS block as the first thing a newcomer reads.
    env = {**deployment_env("REDIS_URL"), "DEBUG": "true", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--database", "default"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNINGS" not in result.stderr and "W040" not in result.stderr, result.stderr
    assert "no issues" in result.stdout
