"""/v1/logs/exports...: Portkey's export job lifecycle, the JSONL behind the signed link, the
per-job cap, state rules and tenancy."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.core import signing

from analytics.ingest import write_log_batch
from analytics.models import LogExport, LogExportChunk
from tests.analytics.records import log_record

pytestmark = pytest.mark.django_db

URL = "/v1/logs/exports"


class Api:
    def __init__(self, client, key: str) -> None:
        self.client = client
        self.headers = {"x-portkey-api-key": key}

    def post(self, path: str = "", body: dict | None = None):
        return self.client.post(URL + path, body or {}, content_type="application/json", headers=self.headers)

    def put(self, path: str, body: dict):
        return self.client.put(URL + path, body, content_type="application/json", headers=self.headers)

    def get(self, path: str = "", **params):
        return self.client.get(URL + path, params, headers=self.headers)


@pytest.fixture
def api(client, key):
    return Api(client, key)


def fetch(client, signed_url: str) -> list[dict]:
    """GET the signed link as a browser or curl would: no API key."""
    parts = urlsplit(signed_url)
    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def test_create_start_retrieve_download(api, client, logs, window):
    created = api.post(body={"filters": window, "description": "weekly", "workspace_id": "acme"})
    assert created.status_code == 200
    body = created.json()
    assert (body["total"], body["object"]) == (5, "export")
    export_id = body["id"]

    draft = api.get(f"/{export_id}").json()
    assert (draft["status"], draft["description"], draft["workspace_id"]) == ("draft", "weekly", "acme")
    assert draft["filters"] == window
    assert "ai_org" in draft["requested_data"] and "metadata" in draft["requested_data"]

    started = api.post(f"/{export_id}/start")
    assert started.status_code == 200 and started.json()["object"] == "export"
    done = api.get(f"/{export_id}").json()
    assert (done["status"], done["total_records"]) == ("success", 5)

    signed_url = api.get(f"/{export_id}/download").json()["signed_url"]
    assert signed_url.startswith(f"http://testserver/v1/logs/exports/{export_id}/file?token=")
    rows = fetch(client, signed_url)
    assert len(rows) == 5
    assert {row["id"] for row in rows} == {log["id"] for log in logs}
    by_id = {row["id"]: row for row in rows}
    first = by_id[logs[0]["id"]]
    assert first["ai_org"] == "openai" and first["ai_model"] == "gpt-4o-mini"
    assert (first["req_units"], first["res_units"], first["total_units"]) == (10, 5, 15)
    assert first["cost"] == pytest.approx(0.01) and first["cost_currency"] == "USD"  # cents
    assert (first["response_status_code"], first["is_success"], first["response_time"]) == (200, True, 100.0)
    assert first["metadata"] == {"_user": "alice", "environment": "production", "feature": "chat"}
    assert first["request_url"] == "/v1/chat/completions" and first["mode"] == "single"
    assert by_id[logs[3]["id"]]["cost"] is None
    # Newest first, as the list.
    assert [row["created_at"] for row in rows] == sorted((row["created_at"] for row in rows), reverse=True)


def test_requested_data_and_filters_shape_the_file(api, client, logs, window):
    export_id = api.post(
        body={
            "filters": {**window, "metadata": {"environment": "staging"}, "status_code": "500"},
            "requested_data": ["id", "response_status_code", "metadata", "finish_reasons"],
        }
    ).json()["id"]
    api.post(f"/{export_id}/start")
    rows = fetch(client, api.get(f"/{export_id}/download").json()["signed_url"])
    assert rows == [
        {
            "id": logs[3]["id"],
            "response_status_code": 500,
            "metadata": {"_user": "bob", "environment": "staging"},
            "finish_reasons": None,  # a failed request: the answer named none
        }
    ]
    export_id = api.post(body={"filters": {**window, "status_code": "200"}, "requested_data": ["finish_reasons"]})
    api.post(f"/{export_id.json()['id']}/start")
    rows = fetch(client, api.get(f"/{export_id.json()['id']}/download").json()["signed_url"])
    assert sorted(rows, key=str) == [{"finish_reasons": None}, {"finish_reasons": None}, {"finish_reasons": ["stop"]}]


def test_bodies_are_exported_as_json(api, client, workspace, api_key, window, hour):
    record = log_record(workspace, api_key[0], created_at=(hour + timedelta(minutes=5)).isoformat())
    record["body"] = {
        "request_body": json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        "response_body": "not json",
    }
    write_log_batch([record])
    export_id = api.post(body={"filters": window, "requested_data": ["request", "response"]}).json()["id"]
    api.post(f"/{export_id}/start")
    [row] = fetch(client, api.get(f"/{export_id}/download").json()["signed_url"])
    assert row["request"]["messages"][0]["content"] == "hi"
    assert row["response"] == "not json"


def test_a_job_holds_at_most_the_cap(api, client, logs, window, settings, monkeypatch):
    settings.LOG_EXPORT_MAX_LOGS = 3
    from analytics import selectors

    monkeypatch.setattr(selectors, "EXPORT_CHUNK", 2)  # several stored chunks
    created = api.post(body={"filters": window, "requested_data": ["id"]}).json()
    assert created["total"] == 3
    api.post(f"/{created['id']}/start")
    assert api.get(f"/{created['id']}").json()["total_records"] == 3
    assert LogExportChunk.objects.filter(export_id=created["id"]).count() == 2
    rows = fetch(client, api.get(f"/{created['id']}/download").json()["signed_url"])
    assert len(rows) == 3
    too_many = api.post(body={"filters": {**window, "page_size": 4}})
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "filters.page_size"
    assert "3" in too_many.json()["error"]["message"]


def test_page_size_and_current_page_pick_a_slice(api, client, logs, window):
    pages = []
    for page in (0, 1, 2):
        export_id = api.post(
            body={"filters": {**window, "page_size": 2, "current_page": page}, "requested_data": ["id"]}
        ).json()["id"]
        api.post(f"/{export_id}/start")
        pages.append([row["id"] for row in fetch(client, api.get(f"/{export_id}/download").json()["signed_url"])])
    assert [len(p) for p in pages] == [2, 2, 1]
    assert {i for p in pages for i in p} == {log["id"] for log in logs}


def test_update_changes_a_draft_only(api, logs, window):
    export_id = api.post(body={"filters": window}).json()["id"]
    updated = api.put(f"/{export_id}", {"filters": {**window, "status_code": "429"}, "requested_data": ["id"]})
    assert updated.json() == {"id": export_id, "total": 1, "object": "export"}
    assert api.get(f"/{export_id}").json()["requested_data"] == ["id"]
    api.post(f"/{export_id}/start")
    again = api.put(f"/{export_id}", {"filters": window})
    assert again.status_code == 409
    assert "draft" in again.json()["error"]["message"]


def test_cancel_stops_a_draft_and_nothing_can_be_downloaded(api, logs, window):
    export_id = api.post(body={"filters": window}).json()["id"]
    not_yet = api.get(f"/{export_id}/download")
    assert not_yet.status_code == 409 and "draft" in not_yet.json()["error"]["message"]
    assert api.post(f"/{export_id}/cancel").json()["object"] == "export"
    assert api.get(f"/{export_id}").json()["status"] == "stopped"
    assert api.post(f"/{export_id}/start").status_code == 409
    assert api.post(f"/{export_id}/cancel").status_code == 409
    assert api.get(f"/{export_id}/download").status_code == 409


def test_a_job_cancelled_while_running_keeps_no_file(api, logs, window, monkeypatch):
    from analytics import log_exports

    export_id = api.post(body={"filters": window}).json()["id"]
    real = log_exports._jsonl

    def cancelled_meanwhile(rows, requested):
        LogExport.objects.filter(pk=export_id).update(status=LogExport.Status.STOPPED)
        return real(rows, requested)

    monkeypatch.setattr(log_exports, "_jsonl", cancelled_meanwhile)
    api.post(f"/{export_id}/start")
    assert api.get(f"/{export_id}").json()["status"] == "stopped"
    assert not LogExportChunk.objects.filter(export_id=export_id).exists()


def test_list_shows_the_workspaces_jobs_newest_first(api, client, logs, window, outsider_key):
    first = api.post(body={"filters": window}).json()["id"]
    second = api.post(body={"filters": window}).json()["id"]
    body = api.get().json()
    assert (body["object"], body["total"]) == ("list", 2)
    assert [job["id"] for job in body["data"]] == [second, first]
    assert body["data"][0]["object"] == "export"
    assert Api(client, outsider_key).get().json()["total"] == 0
    assert api.get(workspace_id="other").status_code == 404


def test_an_outsiders_key_cannot_touch_the_job(api, client, logs, window, outsider_key):
    export_id = api.post(body={"filters": window}).json()["id"]
    outsider = Api(client, outsider_key)
    assert outsider.get(f"/{export_id}").status_code == 404
    assert outsider.post(f"/{export_id}/start").status_code == 404
    assert outsider.post(f"/{export_id}/cancel").status_code == 404
    assert outsider.put(f"/{export_id}", {"filters": {}}).status_code == 404
    api.post(f"/{export_id}/start")
    assert outsider.get(f"/{export_id}/download").status_code == 404
    # The outsider's own jobs see only the outsider's workspace.
    assert outsider.post(body={"filters": window}).json()["total"] == 0
    assert outsider.post(body={"filters": window, "workspace_id": "acme"}).status_code == 404


def test_the_signed_link_is_bound_to_its_job_and_expires(api, client, logs, window, monkeypatch):
    export_id = api.post(body={"filters": window}).json()["id"]
    api.post(f"/{export_id}/start")
    token = urlsplit(api.get(f"/{export_id}/download").json()["signed_url"]).query.split("=", 1)[1]
    other_id = api.post(body={"filters": window}).json()["id"]
    assert client.get(f"{URL}/{other_id}/file?token={token}").status_code == 404
    assert client.get(f"{URL}/{export_id}/file?token=forged").status_code == 404
    assert client.get(f"{URL}/{export_id}/file").status_code == 404
    monkeypatch.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(0))
    from analytics import log_exports

    old = log_exports.download_token(LogExport.objects.get(pk=export_id))
    assert client.get(f"{URL}/{export_id}/file?token={old}").status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"filters": {"status_code": "abc"}}, "filters.status_code"),
        ({"filters": {"time_of_generation_min": "soon"}}, "filters.time_of_generation_min"),
        ({"filters": {"virtual_keys": "vk"}}, "filters.virtual_keys"),
        ({"filters": {"colour": "blue"}}, "filters.colour"),
        ({"filters": {"metadata": {"env": ["a"]}}}, "filters.metadata"),
        ({"filters": {"page_size": "many"}}, "filters.page_size"),
        ({"filters": {"current_page": -1}}, "filters.current_page"),
        ({"filters": "everything"}, "filters"),
        ({"requested_data": ["id", "secrets"]}, "requested_data[1]"),
        ({"requested_data": "id"}, "requested_data"),
        ({"requested_data": ["id", ["metadata"]]}, "requested_data[1]"),  # unhashable: was a 500
        ({"requested_data": [{"id": 1}]}, "requested_data[0]"),
        ({"description": "x" * 501}, "description"),
        ({"format": "csv"}, "format"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(api, body, param):
    response = api.post(body=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_unknown_export_ids_are_404(api):
    assert api.get("/not-a-uuid").status_code == 404
    assert api.get("/00000000-0000-0000-0000-000000000000").status_code == 404
