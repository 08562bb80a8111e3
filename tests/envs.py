"""The test suite's environment overrides (pytest.ini `env =`), for tests that start a process
the way a real deployment would and so must not inherit them."""

from __future__ import annotations

import os

SUITE_OVERRIDES = (
    "SECRET_KEY",
    "PORTICO_ENCRYPTION_KEY",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "EMBEDDED_SCHEDULER",
    "UPSTREAM_ALLOWED_NETWORKS",
)


def deployment_env(*drop: str) -> dict[str, str]:
    """This process's environment without the suite's overrides and without `drop`."""
    gone = {*SUITE_OVERRIDES, *drop}
    return {key: value for key, value in os.environ.items() if key not in gone}
