"""Settings refuse bad environment values at start-up with a message naming the variable.
Each case imports the settings in a fresh interpreter, as a server process would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.envs import SUITE_OVERRIDES

BASE_DIR = Path(__file__).resolve().parents[2]
LOAD_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"
)
CHECKED = [
    "DEBUG",
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "PORTICO_ENCRYPTION_KEY",
    "PORTICO_VAR_DIR",
    "METADATA_PRECEDENCE",
    "METADATA_VALIDATION",
    "METADATA_MAX_KEYS",
    "GATEWAY_UPSTREAM_TIMEOUT",
    "LOG_BATCH_SIZE",
    "LOG_LEVEL",
    "SECURE_HSTS_SECONDS",
    *SUITE_OVERRIDES,  # the test suite's own environment (pytest.ini)
]


def _load_settings(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in CHECKED}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", PORTICO_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", LOAD_SETTINGS], cwd=BASE_DIR, env=clean, capture_output=True, text=True, timeout=60
    )


def test_it_starts_with_development_defaults(tmp_path):
    result = _load_settings(tmp_path, DEBUG="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.db.backends.sqlite3"


def test_it_starts_in_production_mode_with_both_secrets(tmp_path):
    result = _load_settings(
        tmp_path, DEBUG="false", SECRET_KEY="x" * 50, PORTICO_ENCRYPTION_KEY=Fernet.generate_key().decode()
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe'"),
        ({"METADATA_PRECEDENCE": "bogus"}, "METADATA_PRECEDENCE='bogus'"),
        ({"METADATA_VALIDATION": "loose"}, "METADATA_VALIDATION='loose'"),
        ({"METADATA_MAX_KEYS": "0"}, "METADATA_MAX_KEYS='0'"),
        ({"DATABASE_URL": "foo://x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u:p@localhost/db"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL='http://x'"),
        ({"GATEWAY_UPSTREAM_TIMEOUT": "soon"}, "GATEWAY_UPSTREAM_TIMEOUT='soon'"),
        ({"LOG_BATCH_SIZE": "lots"}, "LOG_BATCH_SIZE='lots'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud'"),
        ({"PORTICO_ENCRYPTION_KEY": "not-a-fernet-key"}, "PORTICO_ENCRYPTION_KEY"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else None,
)
def test_it_rejects_bad_values_naming_the_variable(tmp_path, env, named):
    result = _load_settings(tmp_path, **{"DEBUG": "true", **env})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr


def test_it_requires_a_secret_key_when_debug_is_off(tmp_path):
    result = _load_settings(tmp_path, DEBUG="false", PORTICO_ENCRYPTION_KEY=Fernet.generate_key().decode())
    assert result.returncode != 0
    assert "SECRET_KEY is required when DEBUG is off" in result.stderr


def _secrets(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in CHECKED}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", PORTICO_VAR_DIR=str(tmp_path), **env)
    code = "from django.conf import settings; print(settings.SECRET_KEY, settings.PORTICO_ENCRYPTION_KEYS[0])"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=clean, capture_output=True, text=True, timeout=60
    )


def test_commands_outside_make_run_use_the_secret_make_run_generated(tmp_path):
    """`make run` (DEBUG=true) generates var/dev-secret-key; a README command run later without
    DEBUG hashes API keys and encrypts provider keys with the same secrets as that server."""
    server = _secrets(tmp_path, DEBUG="true")
    assert server.returncode == 0, server.stderr
    secret_file = tmp_path / "dev-secret-key"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert secret_file.read_text().startswith("django-insecure-")  # flagged by check --deploy
    command = _secrets(tmp_path)  # DEBUG unset: off
    assert command.returncode == 0, command.stderr
    assert command.stdout == server.stdout
    assert server.stdout.split()[0] == secret_file.read_text().strip()
    # An explicit SECRET_KEY wins over the file.
    assert _secrets(tmp_path, DEBUG="true", SECRET_KEY="y" * 50).stdout.split()[0] == "y" * 50


def test_production_without_a_development_secret_still_needs_secret_key(tmp_path):
    result = _secrets(tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is required when DEBUG is off" in result.stderr
    assert not (tmp_path / "dev-secret-key").exists()  # only a development start creates it


def test_it_requires_an_encryption_key_when_debug_is_off(tmp_path):
    result = _load_settings(tmp_path, DEBUG="false", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "PORTICO_ENCRYPTION_KEY is required when DEBUG is off" in result.stderr


def test_it_rejects_bad_https_settings_in_production(tmp_path):
    result = _load_settings(
        tmp_path,
        DEBUG="false",
        SECRET_KEY="x" * 50,
        PORTICO_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        SECURE_HSTS_SECONDS="-1",
    )
    assert result.returncode != 0
    assert "SECURE_HSTS_SECONDS='-1'" in result.stderr


def test_production_mode_passes_the_deploy_checklist(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in CHECKED}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PORTICO_VAR_DIR=str(tmp_path),
        DEBUG="false",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        PORTICO_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="portico.example.com",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_upstream_allow_list_must_be_networks(tmp_path):
    result = _load_settings(tmp_path, DEBUG="true", UPSTREAM_ALLOWED_NETWORKS="127.0.0.0/8,not-a-network")
    assert result.returncode != 0
    assert "UPSTREAM_ALLOWED_NETWORKS" in result.stderr


@pytest.mark.django_db
def test_pages_carry_a_content_security_policy(client):
    resp = client.get("/login/")
    policy = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-eval" not in policy


@pytest.mark.django_db
def test_api_docs_work_without_inline_scripts(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>" not in html.replace(" ", "")
    assert "cdn" not in html.lower()


def test_the_suite_overrides_only_what_tests_envs_lists(pytestconfig):
    """Subprocess tests strip exactly the suite's overrides to start a process as deployed."""
    names = [line.split("=", 1)[0].strip() for line in pytestconfig.getini("env") if line.strip()]
    assert sorted(names) == sorted(SUITE_OVERRIDES)
    assert all(os.environ.get(name) is not None for name in names)
