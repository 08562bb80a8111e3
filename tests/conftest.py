"""Shared fixtures: three actors (owner, member, outsider) and a workspace with a key and a
provider. Services are used to build them so tests go through the same code as users do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workspaces import services
from workspaces.models import Membership

USES_POSTGRES = os.environ.get("DATABASE_URL", "").startswith("postgres")
USES_REDIS = bool(os.environ.get("REDIS_URL"))


def pytest_configure(config):
    # Spooled log batches from tests must never land in the developer's real spool folder.
    import tempfile

    from django.conf import settings

    settings.LOG_SPOOL_DIR = Path(tempfile.mkdtemp(prefix="portico-test-spool-"))
    # A stream of the test run's own, so a developer's running stack is not disturbed.
    settings.LOG_STREAM_KEY = f"portico:test:{os.getpid()}:logs"
    settings.REDIS_KEY_PREFIX = f"portico:test:{os.getpid()}"


def pytest_collection_modifyitems(config, items):
    # Postgres- and Redis-only tests are skipped in the embedded pass only; in the
    # Postgres+Redis pass nothing skips.
    skip_pg = pytest.mark.skip(reason="needs DATABASE_URL=postgres://... (embedded pass)")
    skip_redis = pytest.mark.skip(reason="needs REDIS_URL (embedded pass)")
    for item in items:
        if "postgres" in item.keywords and not USES_POSTGRES:
            item.add_marker(skip_pg)
        if "redis" in item.keywords and not USES_REDIS:
            item.add_marker(skip_redis)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner", "owner@example.com", "owner-pass-123")


@pytest.fixture
def member(django_user_model):
    return django_user_model.objects.create_user("member", "member@example.com", "member-pass-123")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user("outsider", "outsider@example.com", "outsider-pass-123")


@pytest.fixture
def workspace(owner, member):
    ws = services.workspace_create(slug="acme", name="Acme", owner=owner)
    services.membership_add(workspace=ws, user=member, role=Membership.Role.MEMBER)
    return ws


@pytest.fixture
def other_workspace(outsider):
    return services.workspace_create(slug="other", name="Other Co", owner=outsider)


@pytest.fixture
def api_key(workspace):
    """(ApiKey, full key string)."""
    return services.api_key_create(workspace=workspace, name="default")
