"""POST /v1/feedback: Portkey's feedback on a trace id, scoped to the key's workspace."""

from __future__ import annotations

import pytest

from analytics.models import Feedback
from workspaces import services

pytestmark = pytest.mark.django_db

URL = "/v1/feedback"


def post(client, payload, full_key):
    return client.post(URL, payload, content_type="application/json", headers={"x-portkey-api-key": full_key})


def test_it_stores_feedback_for_the_keys_workspace(client, api_key, workspace):
    response = post(
        client, {"trace_id": "trace-1", "value": 7, "weight": 0.25, "metadata": {"source": "thumbs"}}, api_key[1]
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["message"]) == ("success", "Feedback created successfully.")
    feedback = Feedback.objects.get(id=body["feedback_ids"][0])
    assert (feedback.workspace_id, feedback.trace_id, feedback.value, feedback.weight) == (
        workspace.id,
        "trace-1",
        7,
        0.25,
    )
    assert feedback.metadata == {"source": "thumbs"}


def test_weight_defaults_to_1(client, api_key):
    assert post(client, {"trace_id": "t", "value": -10}, api_key[1]).status_code == 200
    assert Feedback.objects.get().weight == 1.0


def test_an_inference_only_key_may_send_feedback(client, workspace):
    key = services.api_key_create(workspace=workspace, name="k", scopes=["inference"])[1]
    assert post(client, {"trace_id": "t", "value": 1}, key).status_code == 200


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"value": 1}, "trace_id"),
        ({"trace_id": "", "value": 1}, "trace_id"),
        ({"trace_id": "x" * 129, "value": 1}, "trace_id"),
        ({"trace_id": "t"}, "value"),
        ({"trace_id": "t", "value": 11}, "value"),
        ({"trace_id": "t", "value": -11}, "value"),
        ({"trace_id": "t", "value": 1.5}, "value"),
        ({"trace_id": "t", "value": 1, "weight": 1.5}, "weight"),
        ({"trace_id": "t", "value": 1, "weight": -0.1}, "weight"),
        ({"trace_id": "t", "value": 1, "metadata": "nope"}, "metadata"),
        ({"trace_id": "t", "value": 1, "metadata": {"a": "b\x00"}}, "metadata"),
    ],
)
def test_validation_errors_name_the_field(client, api_key, payload, param):
    response = post(client, payload, api_key[1])
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert not Feedback.objects.exists()


def test_a_list_is_a_400(client, api_key):
    response = post(client, [{"trace_id": "t", "value": 1}], api_key[1])
    assert response.status_code == 400


def test_without_a_key_it_is_a_401(client):
    response = client.post(URL, {"trace_id": "t", "value": 1}, content_type="application/json")
    assert response.status_code == 401
