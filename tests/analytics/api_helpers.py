"""Small helpers for the REST API tests: logs are written through write_log_batch (so the
rollups are filled as in production) and requests carry a workspace API key."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from analytics.ingest import write_log_batch
from tests.analytics.records import log_record


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)


def write(workspace, api_key=None, **overrides) -> dict:
    """Write one log (a gateway-shaped record) and return the record."""
    if isinstance(overrides.get("created_at"), datetime):
        overrides["created_at"] = overrides["created_at"].isoformat()
    record = log_record(workspace, api_key, **overrides)
    assert write_log_batch([record]) == [record["id"]]
    return record


def write_many(workspace, api_key=None, records: list[dict] | None = None) -> list[dict]:
    """Write several (override dicts) in one batch."""
    built = []
    for overrides in records or []:
        overrides = dict(overrides)
        if isinstance(overrides.get("created_at"), datetime):
            overrides["created_at"] = overrides["created_at"].isoformat()
        built.append(log_record(workspace, api_key, **overrides))
    write_log_batch(built)
    return built


def key_headers(full_key: str) -> dict[str, str]:
    return {"x-portkey-api-key": full_key}


def get(client, url: str, full_key: str | None = None, **params):
    return client.get(url, params, headers=key_headers(full_key) if full_key else {})


def ids(response) -> set[str]:
    return {row["id"] for row in response.json()["data"]}
