"""GET /api/v1/logs (keyset pagination) and GET /api/v1/logs/<id> (detail)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics.ingest import write_log_batch
from analytics.models import Feedback
from tests.analytics.api_helpers import ago, get, ids, write, write_many
from tests.analytics.records import log_record
from workspaces import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(api_key):
    return api_key[1]


def walk(client, key, **params) -> list[dict]:
    rows, cursor, pages = [], None, 0
    while True:
        response = get(client, "/api/v1/logs", key, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.json()
        body = response.json()
        rows += body["data"]
        pages += 1
        assert body["has_more"] == (body["next_cursor"] is not None)
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
        assert pages < 100


def test_it_lists_newest_first_with_the_list_shape(client, key, workspace, api_key):
    old = write(workspace, api_key[0], created_at=ago(hours=2))
    new = write(workspace, api_key[0], created_at=ago(hours=1), finish_reasons=["length"])
    body = get(client, "/api/v1/logs", key).json()
    assert body["object"] == "list"
    assert [row["id"] for row in body["data"]] == [new["id"], old["id"]]
    assert body["next_cursor"] is None and body["has_more"] is False
    row = body["data"][0]
    assert row["workspace"] == "acme"
    assert row["api_key_id"] == api_key[0].id
    assert row["metadata"] == {"_user": "alice", "environment": "production", "feature": "chat"}
    assert row["cost"] == pytest.approx(0.0000468)
    assert (row["finish_reasons"], body["data"][1]["finish_reasons"]) == (["length"], None)


def test_keyset_pagination_walks_every_row_once_under_equal_timestamps(client, key, workspace):
    same = ago(hours=1)
    written = write_many(workspace, records=[{"created_at": same} for _ in range(23)])
    written += write_many(workspace, records=[{"created_at": same - timedelta(minutes=i)} for i in range(1, 8)])
    rows = walk(client, key, limit="4")
    assert len(rows) == 30
    assert {row["id"] for row in rows} == {r["id"] for r in written}
    keys = [(row["created_at"], row["id"]) for row in rows]
    assert keys == sorted(keys, reverse=True)


def test_pagination_keeps_the_filters(client, key, workspace):
    wanted = write_many(workspace, records=[{"metadata": {"team": "a"}} for _ in range(7)])
    write_many(workspace, records=[{"metadata": {"team": "b"}} for _ in range(5)])
    rows = walk(client, key, limit="3", **{"metadata.team": "a"})
    assert sorted(row["id"] for row in rows) == sorted(r["id"] for r in wanted)


def test_limit_defaults_to_50(client, key, workspace):
    write_many(workspace, records=[{} for _ in range(51)])
    body = get(client, "/api/v1/logs", key).json()
    assert len(body["data"]) == 50 and body["has_more"]


def test_it_never_counts(client, key, workspace):
    write_many(workspace, records=[{} for _ in range(5)])
    with CaptureQueriesContext(connection) as queries:
        get(client, "/api/v1/logs", key, limit="2")
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


def test_detail_has_bodies_metadata_trace_and_feedback(client, key, workspace, api_key):
    record = log_record(
        workspace,
        api_key[0],
        trace_id="trace-9",
        span_id="span-1",
        parent_span_id="span-0",
        span_name="answer",
        finish_reasons=["tool_calls"],
        body={"request_headers": {"content-type": "application/json"}, "request_body": "{}", "response_body": "ok"},
    )
    write_log_batch([record])
    Feedback.objects.create(workspace=workspace, trace_id="trace-9", value=5, weight=0.5)
    other_ws = services.workspace_create(slug="elsewhere")
    Feedback.objects.create(workspace=other_ws, trace_id="trace-9", value=-5)
    body = get(client, f"/api/v1/logs/{record['id']}", key).json()
    assert body["id"] == record["id"]
    assert (body["trace_id"], body["span_id"], body["parent_span_id"], body["span_name"]) == (
        "trace-9",
        "span-1",
        "span-0",
        "answer",
    )
    assert body["body"] == {
        "request_headers": {"content-type": "application/json"},
        "request_body": "{}",
        "response_body": "ok",
    }
    assert [(f["value"], f["weight"]) for f in body["feedback"]] == [(5, 0.5)]
    assert body["metadata"]["environment"] == "production"
    assert body["finish_reasons"] == ["tool_calls"]


def test_detail_without_stored_bodies(client, key, workspace):
    record = write(workspace)
    assert get(client, f"/api/v1/logs/{record['id']}", key).json()["body"] is None


@pytest.mark.parametrize("log_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_detail_of_an_unknown_log_is_a_json_404(client, key, log_id):
    response = get(client, f"/api/v1/logs/{log_id}", key)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_a_session_user_reads_their_workspace(client, member, workspace):
    record = write(workspace)
    client.force_login(member)
    assert ids(client.get("/api/v1/logs")) == {record["id"]}
    assert client.get(f"/api/v1/logs/{record['id']}").status_code == 200


def test_a_user_of_several_workspaces_must_name_one(client, member, workspace, other_workspace):
    services.membership_add(workspace=other_workspace, user=member)
    record = write(workspace)
    write(other_workspace)
    client.force_login(member)
    response = client.get("/api/v1/logs")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "workspace"
    assert ids(client.get("/api/v1/logs", {"workspace": "acme"})) == {record["id"]}


def test_a_key_naming_its_own_workspace_is_fine(client, key, workspace):
    record = write(workspace)
    assert ids(get(client, "/api/v1/logs", key, workspace="acme")) == {record["id"]}


def test_bearer_authorization_is_accepted(client, key, workspace):
    record = write(workspace)
    response = client.get("/api/v1/logs", headers={"Authorization": f"Bearer {key}"})
    assert ids(response) == {record["id"]}


def test_a_provider_bearer_token_is_not_a_credential(client, key):
    response = client.get("/api/v1/logs", headers={"Authorization": "Bearer sk-openai-placeholder"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_revoked_key_is_a_401(client, api_key):
    services.api_key_revoke(api_key=api_key[0])
    response = get(client, "/api/v1/logs", api_key[1])
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_invalid_key_wins_over_a_session(client, member, workspace):
    client.force_login(member)
    response = client.get("/api/v1/logs", headers={"x-portkey-api-key": "pk-" + "x" * 48})
    assert response.status_code == 401
