"""The metrics settings refuse bad values at start-up, naming the variable (fresh interpreter,
as a server process would load them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_address

ROOT = Path(__file__).resolve().parents[2]
SHOW = (
    "import django, os; django.setup(); from django.conf import settings; "
    "print(settings.METRICS_ENABLED, settings.METRICS_METADATA_LABELS, os.environ['PROMETHEUS_MULTIPROC_DIR'])"
)


def load(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "PROMETHEUS_"))}
    clean.pop("DEBUG", None)
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", PORTICO_VAR_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("labels", "complaint"),
    [
        ("environment,9lives", "'9lives', which is not a Prometheus label name"),
        ("x-team", "'x-team', which is not a Prometheus label name"),
        ("__name", "'__name', which is not a Prometheus label name"),
        ("model", "'model', which a Portico metric already uses"),
        ("feature,feature", "names a key twice"),
    ],
)
def test_it_refuses_bad_metadata_labels(tmp_path, labels, complaint):
    result = load(tmp_path, METRICS_METADATA_LABELS=labels)
    assert result.returncode != 0
    assert "METRICS_METADATA_LABELS" in result.stderr
    assert complaint in result.stderr


def test_it_refuses_a_bad_label_cap(tmp_path):
    result = load(tmp_path, METRICS_LABEL_MAX_VALUES="0")
    assert result.returncode != 0
    assert "METRICS_LABEL_MAX_VALUES" in result.stderr


def test_metrics_are_off_without_a_token_and_the_directory_defaults_to_var(tmp_path):
    result = load(tmp_path, METRICS_METADATA_LABELS="environment, feature")
    assert result.stdout.split(" ", 1) == ["False", f"['environment', 'feature'] {tmp_path / 'metrics'}\n"]
    assert load(tmp_path, METRICS_TOKEN="s3cret").stdout.startswith("True")
    assert load(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "m")).stdout.endswith(f"{tmp_path / 'm'}\n")


@pytest.mark.parametrize(
    "bind", ["9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9464", "host:port", ":9464"]
)
def test_a_bad_bind_address_is_refused_naming_the_variable(monkeypatch, bind):
    monkeypatch.setenv("METRICS_BIND", bind)
    with pytest.raises(ImproperlyConfigured, match="METRICS_BIND"):
        env_address("METRICS_BIND")


def test_bind_addresses_and_what_they_turn_on(monkeypatch, tmp_path):
    monkeypatch.setenv("METRICS_BIND", "[::1]:9464")
    assert env_address("METRICS_BIND") == ("::1", 9464)
    monkeypatch.setenv("METRICS_BIND", " ")
    assert env_address("METRICS_BIND") is None
    assert load(tmp_path, METRICS_BIND="127.0.0.1:9464").stdout.startswith("True")  # metrics on
    refused = load(tmp_path, METRICS_BIND="localhost")
    assert refused.returncode != 0 and "METRICS_BIND" in refused.stderr  # a server would not start
