"""Who may read what, on every read endpoint: an outsider (a user or key of another
workspace) sees nothing of ours and gets a 404 when naming our workspace or a log of ours; a
key without logs.read gets a 403; no credentials get a 401."""

from __future__ import annotations

import pytest

from tests.analytics.api_helpers import write
from workspaces import services

pytestmark = pytest.mark.django_db

METRICS = ["requests", "cost", "tokens", "latency", "errors", "error-rate", "users"]
COLLECTIONS = [
    "/api/v1/logs",
    "/api/v1/logs/export",
    *[f"/api/v1/analytics/graphs/{metric}" for metric in METRICS],
    "/api/v1/analytics/groups/metadata/environment",
    "/api/v1/analytics/groups/users",
    "/api/v1/analytics/groups/models",
    "/api/v1/analytics/groups/providers",
    "/api/v1/analytics/groups/api-keys",
    "/api/v1/analytics/metadata-keys",
]


@pytest.fixture
def our_log(workspace, api_key):
    return write(workspace, api_key[0], metadata={"environment": "secret-env", "_user": "secret-user"})


@pytest.fixture
def outsider_key(other_workspace):
    return services.api_key_create(workspace=other_workspace, name="theirs")[1]


def endpoints(log_id: str) -> list[str]:
    return [*COLLECTIONS, f"/api/v1/logs/{log_id}"]


def content(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("path", COLLECTIONS)
def test_an_outsider_user_sees_none_of_our_data(client, outsider, other_workspace, our_log, path):
    client.force_login(outsider)
    response = client.get(path)
    assert response.status_code == 200
    text = content(response)
    assert our_log["id"].encode() not in text and b"secret" not in text and b"acme" not in text


@pytest.mark.parametrize("path", COLLECTIONS)
def test_an_outsider_key_sees_none_of_our_data(client, outsider_key, our_log, path):
    response = client.get(path, headers={"x-portkey-api-key": outsider_key})
    assert response.status_code == 200
    text = content(response)
    assert our_log["id"].encode() not in text and b"secret" not in text and b"acme" not in text


def test_an_outsider_gets_a_404_for_our_workspace_on_every_endpoint(client, outsider, outsider_key, our_log):
    client.force_login(outsider)
    for path in endpoints(our_log["id"]):
        assert client.get(path, {"workspace": "acme"}).status_code == 404, path
        response = client.get(path, {"workspace": "acme"}, headers={"x-portkey-api-key": outsider_key})
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"


def test_an_outsider_gets_a_404_for_our_log(client, outsider, outsider_key, our_log):
    path = f"/api/v1/logs/{our_log['id']}"
    assert client.get(path, headers={"x-portkey-api-key": outsider_key}).status_code == 404
    client.force_login(outsider)
    assert client.get(path).status_code == 404


def test_a_user_without_any_workspace_gets_a_404(client, django_user_model, our_log):
    client.force_login(django_user_model.objects.create_user("loner", password="x-pass-123"))
    for path in endpoints(our_log["id"]):
        assert client.get(path).status_code == 404, path


def test_members_read_every_endpoint(client, member, our_log):
    client.force_login(member)
    for path in endpoints(our_log["id"]):
        assert client.get(path).status_code == 200, path


def test_a_key_without_logs_read_gets_a_403_on_every_endpoint(client, workspace, our_log):
    key = services.api_key_create(workspace=workspace, name="inference only", scopes=["inference"])[1]
    for path in endpoints(our_log["id"]):
        response = client.get(path, headers={"x-portkey-api-key": key})
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "permission_error"


def test_no_credentials_is_a_401_on_every_endpoint(client, our_log):
    for path in endpoints(our_log["id"]):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["type"] == "authentication_error"
    for path in ("/v1/logs", "/v1/feedback"):
        assert client.post(path, {}, content_type="application/json").status_code == 401


def test_an_outsider_key_writes_only_to_its_own_workspace(client, outsider_key, other_workspace, our_log):
    from analytics.models import Feedback

    response = client.post(
        "/v1/feedback",
        {"trace_id": our_log["trace_id"], "value": -10},
        content_type="application/json",
        headers={"x-portkey-api-key": outsider_key},
    )
    assert response.status_code == 200
    assert Feedback.objects.get().workspace_id == other_workspace.id
