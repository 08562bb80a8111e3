"""Fixtures for the dashboard view tests: the shared owner/member/outsider actors plus a viewer
and an admin, logged-in clients, and a few logs written through write_log_batch (so rollups
and the key registry are filled as in production)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.ingest import write_log_batch
from tests.analytics.records import log_record
from workspaces import services
from workspaces.models import Membership


@pytest.fixture
def viewer(django_user_model, workspace):
    user = django_user_model.objects.create_user("viewer", "viewer@example.com", "viewer-pass-123")
    services.membership_add(workspace=workspace, user=user, role=Membership.Role.VIEWER)
    return user


@pytest.fixture
def owner_client(client, owner, workspace):
    client.force_login(owner)
    return client


@pytest.fixture
def provider(workspace):
    return services.provider_create(
        workspace=workspace, slug="mock", base_url="https://upstream.example.com/v1", api_key="sk-secret-do-not-show"
    )


def write_logs(workspace, api_key=None, records: list[dict] | None = None) -> list[dict]:
    built = []
    for overrides in records or []:
        overrides = dict(overrides)
        if "created_at" in overrides and not isinstance(overrides["created_at"], str):
            overrides["created_at"] = overrides["created_at"].isoformat()
        built.append(log_record(workspace, api_key, **overrides))
    write_log_batch(built)
    return built


@pytest.fixture
def logs(workspace, api_key):
    """Six logs in the last hours: three environments x features, one failure."""
    now = timezone.now()
    specs = [
        {"environment": "production", "feature": "chat", "_user": "alice"},
        {"environment": "production", "feature": "search", "_user": "bob"},
        {"environment": "staging", "feature": "chat", "_user": "alice"},
        {"environment": "production", "feature": "chat", "_user": "carol"},
        {"env": "production", "feature": "chat", "_user": "dave"},
        {"environment": "staging", "feature": "search", "_user": "bob"},
    ]
    records = []
    for i, metadata in enumerate(specs):
        failed = i == 3
        records.append(
            {
                "created_at": now - timedelta(minutes=10 * (i + 1)),
                "metadata": metadata,
                "user": metadata["_user"],
                "status_code": 500 if failed else 200,
                "success": not failed,
                "model": "gpt-4o" if i % 2 else "gpt-4o-mini",
                "latency_ms": 100.0 * (i + 1),
                "finish_reasons": None if failed else ["stop", "length"][: 1 + i % 2],
                "body": {
                    "request_headers": {},
                    "request_body": '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}',
                    "response_body": '{"choices": [{"message": {"content": "hello"}}]}',
                },
            }
        )
    return write_logs(workspace, api_key[0], records)
