"""Server processes freeze their start-up heap (config/startup.py): full garbage collections
then walk only what requests allocate, not Django's and the project's modules (the ~50 ms
collections that made the analytics API's p95)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
PROBE = (
    "import gc, importlib, sys; importlib.import_module(sys.argv[1]); "
    "print(gc.get_freeze_count(), len(gc.get_objects()))"
)


@pytest.mark.parametrize("entry_point", ["config.asgi", "config.wsgi"])
def test_a_server_process_starts_with_its_heap_frozen(tmp_path, entry_point):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="true", PORTICO_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, entry_point], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    frozen, tracked = map(int, result.stdout.split())
    # Every view module is loaded and out of the collector's sight; what it still tracks is
    # what the process allocated after start-up.
    assert frozen > 50_000
    assert tracked < frozen / 20
    assert (
        "analytics.api"
        in subprocess.run(
            [sys.executable, "-c", f"import {entry_point}, sys; print(' '.join(sys.modules))"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
    )
