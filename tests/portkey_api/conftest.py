"""Fixtures for Portkey's paths: a key of the workspace, seeded logs written through the log
writer (so the rollups are filled as in production), and the conftest actors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.analytics.api_helpers import ago, write_many
from workspaces import services


@pytest.fixture
def key(api_key):
    return api_key[1]


@pytest.fixture
def outsider_key(other_workspace):
    return services.api_key_create(workspace=other_workspace, name="outsider")[1]


@pytest.fixture
def hour():
    """The start of a whole hour two hours ago: every seeded log falls inside it."""
    return ago(hours=2).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def logs(workspace, api_key, hour):
    """Five logs in one hour: three successes (alice, production), a 500 and a 429 (bob, staging)."""
    at = hour + timedelta(minutes=10)
    ok = {"created_at": at, "status_code": 200, "success": True}
    return write_many(
        workspace,
        api_key[0],
        [
            {
                **ok,
                "cost": "0.00010000",
                "finish_reasons": ["stop"],
                "latency_ms": 100.0,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "total_tokens": 15,
            },
            {
                **ok,
                "cost": "0.00020000",
                "latency_ms": 200.0,
                "prompt_tokens": 20,
                "completion_tokens": 10,
                "total_tokens": 30,
            },
            {
                **ok,
                "cost": "0.00030000",
                "latency_ms": 300.0,
                "prompt_tokens": 30,
                "completion_tokens": 15,
                "total_tokens": 45,
                "model": "gpt-4o",
            },
            {
                "created_at": at,
                "status_code": 500,
                "success": False,
                "cost": None,
                "latency_ms": 50.0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "total_tokens": 0,
                "user": "bob",
                "metadata": {"_user": "bob", "environment": "staging"},
            },
            {
                "created_at": at,
                "status_code": 429,
                "success": False,
                "cost": None,
                "latency_ms": 10.0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "total_tokens": 0,
                "user": "bob",
                "metadata": {"_user": "bob", "environment": "staging"},
            },
        ],
    )


@pytest.fixture
def window(hour):
    """Portkey's window parameters around the seeded hour."""
    return {
        "time_of_generation_min": (hour - timedelta(hours=1)).isoformat(),
        "time_of_generation_max": (hour + timedelta(hours=1, minutes=59)).isoformat(),
    }
