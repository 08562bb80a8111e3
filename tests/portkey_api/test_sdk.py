"""A script written against Portkey's API, run unchanged against Portico: the official
``portkey-ai`` SDK (analytics and logs.exports) over real HTTP to uvicorn serving config.asgi,
so the /v1 routing between the gateway app and Django is exercised too."""

from __future__ import annotations

import httpx
import pytest
from django.db import connections
from portkey_ai import Portkey

from tests.servers import serve_asgi


@pytest.fixture(scope="module")
def server_url():
    from config.asgi import application

    # The server's threads close their connections after each request, so none is left open
    # on the test database when it is dropped.
    settings = connections.settings["default"]
    max_age, settings["CONN_MAX_AGE"] = settings.get("CONN_MAX_AGE", 0), 0

    # No lifespan: these paths are Django's; the gateway's own start-up is not needed here.
    with serve_asgi(application, lifespan="off") as url:
        yield url
    settings["CONN_MAX_AGE"] = max_age


@pytest.fixture
def portkey(transactional_db, server_url, key):
    return Portkey(api_key=key, base_url=f"{server_url}/v1")


def test_analytics_through_the_portkey_sdk(portkey, logs, window):
    requests = portkey.analytics.graphs.requests(**window)
    assert requests.summary == {"total": 5}
    assert sum(point["total"] for point in requests.data_points) == 5
    cost = portkey.analytics.graphs.cost(**window, metadata='{"environment": "production"}')
    assert cost.summary == {"total": 0.06, "avg": 0.02}
    assert portkey.analytics.graphs.errors_rate(**window).summary["rate"] == 40.0
    status_codes = portkey.analytics.graphs.errors_status_codes(**window)
    assert {p["status_code"] for p in status_codes.data_points} == {429, 500}
    groups = portkey.analytics.groups.metadata(metadata_key="environment", **window)
    assert groups.total == 2
    assert [(row["metadata_value"], row["requests"]) for row in groups.data] == [("production", 3), ("staging", 2)]
    users = portkey.analytics.groups.users(**window, page_size=1, current_page=1)
    assert [row["user"] for row in users.data] == ["bob"]
    models = portkey.analytics.groups.ai_models(**window)
    assert models.data[0]["ai_model"] == "gpt-4o-mini"


def test_export_lifecycle_through_the_portkey_sdk(portkey, logs, window):
    created = portkey.logs.exports.create(
        filters=window, description="from the SDK", requested_data=["id", "ai_model", "cost", "metadata"]
    )
    assert (created.total, created.object) == (5, "export")
    assert portkey.logs.exports.retrieve(export_id=created.id).status == "draft"

    updated = portkey.logs.exports.update(
        export_id=created.id, filters={**window, "metadata": {"environment": "production"}}
    )
    assert updated.total == 3

    portkey.logs.exports.start(export_id=created.id)
    job = portkey.logs.exports.retrieve(export_id=created.id)
    assert (job.status, job.total_records, job.description) == ("success", 3, "from the SDK")
    assert created.id in [row["id"] for row in portkey.logs.exports.list().data]

    link = portkey.logs.exports.download(export_id=created.id).signed_url
    response = httpx.get(link)  # a plain GET, as for a pre-signed URL: no API key
    assert response.status_code == 200
    rows = [httpx.Response(200, content=line).json() for line in response.content.splitlines()]
    assert {row["id"] for row in rows} == {log["id"] for log in logs[:3]}
    assert all(set(row) == {"id", "ai_model", "cost", "metadata"} for row in rows)
    assert sorted(row["cost"] for row in rows) == pytest.approx([0.01, 0.02, 0.03])

    other = portkey.logs.exports.create(filters=window)
    assert portkey.logs.exports.cancel(export_id=other.id).object == "export"
    assert portkey.logs.exports.retrieve(export_id=other.id).status == "stopped"
