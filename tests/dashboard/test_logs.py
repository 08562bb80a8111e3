"""The logs page: filters from the shared LogFilter vocabulary, keyset "load more", the detail
panel and the metadata value suggestions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.dashboard.conftest import write_logs

pytestmark = pytest.mark.django_db


def _logs(client, workspace, query="", name="logs", **headers):
    return client.get(f"{reverse(f'dashboard:{name}', args=[workspace.slug])}?{query}", headers=headers)


def _ids(response) -> set[str]:
    return {str(row["id"]) for row in response.context["rows"]}


def test_it_lists_the_window_newest_first(owner_client, workspace, logs):
    rows = _logs(owner_client, workspace, "range=24h").context["rows"]
    assert [str(r["id"]) for r in rows] == [r["id"] for r in logs]


def test_it_filters_by_two_metadata_pairs(owner_client, workspace, logs):
    response = _logs(owner_client, workspace, "range=24h&metadata.environment=production&metadata.feature=chat")
    assert _ids(response) == {logs[0]["id"], logs[3]["id"]}
    chips = {(c["name"], c["value"]) for c in response.context["chips"]}
    assert chips == {("metadata.environment", "production"), ("metadata.feature", "chat")}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("success=false", [3]),
        ("status_code=500", [3]),
        ("model=gpt-4o", [1, 3, 5]),
        ("user=bob", [1, 5]),
        ("metadata.environment__ne=production", [2, 4, 5]),
        ("metadata.env__exists=true", [4]),
    ],
)
def test_it_applies_the_shared_filter_vocabulary(owner_client, workspace, logs, query, expected):
    response = _logs(owner_client, workspace, f"range=24h&{query}")
    assert _ids(response) == {logs[i]["id"] for i in expected}


def test_it_filters_by_api_key_and_trace(owner_client, workspace, api_key, logs):
    response = _logs(owner_client, workspace, f"range=24h&api_key={api_key[0].id}&trace_id={logs[2]['trace_id']}")
    assert _ids(response) == {logs[2]["id"]}


def test_it_reports_invalid_filters(owner_client, workspace, logs):
    response = _logs(owner_client, workspace, "range=24h&status_code=abc")
    assert response.status_code == 400
    assert response.context["rows"] == []
    assert "status_code" in response.content.decode()


def test_it_folds_the_add_inputs_into_a_metadata_parameter(owner_client, workspace, logs):
    response = _logs(owner_client, workspace, "range=24h&add_key=feature&add_value=search")
    assert response.status_code == 302
    assert response["Location"].endswith("?range=24h&metadata.feature=search")
    htmx = _logs(owner_client, workspace, "range=24h&add_key=feature&add_value=search", HX_Request="true")
    assert htmx.status_code == 204
    assert "metadata.feature=search" in htmx["HX-Location"]


def test_metadata_chips_link_to_the_added_filter(owner_client, workspace, logs):
    page = _logs(owner_client, workspace, "range=24h").content.decode()
    assert 'href="?range=24h&amp;metadata.feature=search"' in page


def test_load_more_follows_the_keyset_cursor(owner_client, workspace, api_key, monkeypatch):
    from dashboard.views import pages as views

    monkeypatch.setattr(views, "LOG_PAGE_SIZE", 4)
    now = timezone.now()
    records = write_logs(workspace, api_key[0], [{"created_at": now - timedelta(minutes=i)} for i in range(10)])
    first = _logs(owner_client, workspace, "range=24h")
    assert len(first.context["rows"]) == 4
    cursor = first.context["next_cursor"]
    assert cursor and "Load more" in first.content.decode()
    seen = _ids(first)
    while cursor:
        more = _logs(owner_client, workspace, f"range=24h&cursor={cursor}", name="log_rows")
        assert more.status_code == 200
        assert b"<html" not in more.content
        assert not seen & _ids(more)
        seen |= _ids(more)
        cursor = more.context["next_cursor"]
    assert seen == {r["id"] for r in records}


def test_load_more_rejects_a_bad_cursor(owner_client, workspace, logs):
    assert _logs(owner_client, workspace, "cursor=nonsense", name="log_rows").status_code == 400


def test_detail_panel_shows_bodies_metadata_and_ids(owner_client, workspace, logs):
    url = reverse("dashboard:log_detail", args=[workspace.slug, logs[0]["id"]])
    response = owner_client.get(url, headers={"HX-Request": "true"})
    page = response.content.decode()
    assert response.status_code == 200
    assert logs[0]["trace_id"] in page
    assert "&quot;content&quot;: &quot;hello&quot;" in page  # pretty-printed response body
    assert '<dt class="mono">environment</dt>' in page
    assert '<dt>Finish reason</dt><dd class="mono">stop</dd>' in page


def test_detail_shows_every_finish_reason_or_none(owner_client, workspace, logs):
    def finish(log) -> str:
        url = reverse("dashboard:log_detail", args=[workspace.slug, log["id"]])
        page = owner_client.get(url, headers={"HX-Request": "true"}).content.decode()
        return page.split("<dt>Finish reason</dt>")[1].split("</dd>")[0]

    assert finish(logs[1]) == '<dd class="mono">stop, length'
    assert finish(logs[3]) == '<dd class="mono">\N{EN DASH}'  # the failed request


def test_detail_link_opens_the_logs_page_with_the_panel(owner_client, workspace, logs):
    url = reverse("dashboard:log_detail", args=[workspace.slug, logs[0]["id"]])
    response = owner_client.get(url)
    assert response.status_code == 302
    page = owner_client.get(response["Location"])
    assert page.context["detail"]["id"].hex == logs[0]["id"].replace("-", "")


def test_value_suggestions_come_from_the_key_registry(owner_client, workspace, logs):
    response = _logs(owner_client, workspace, "add_key=feature", name="metadata_values")
    assert response.content.decode().count("<option") == 2
    assert 'value="chat"' in response.content.decode()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_streams_the_filtered_logs(owner_client, workspace, logs, fmt):
    response = _logs(owner_client, workspace, f"range=24h&metadata.feature=search&format={fmt}", name="log_export")
    body = b"".join(response.streaming_content).decode()
    assert logs[1]["id"] in body and logs[5]["id"] in body
    assert logs[0]["id"] not in body


def test_logs_cannot_be_edited_from_the_dashboard(owner_client, workspace, logs):
    url = reverse("dashboard:log_detail", args=[workspace.slug, logs[0]["id"]])
    assert owner_client.post(url, {"status_code": 200}).status_code == 405
    assert owner_client.delete(url).status_code == 405


def test_an_empty_window_says_so_and_a_filter_without_matches_names_the_filters(owner_client, workspace):
    unfiltered = _logs(owner_client, workspace, "range=24h").content.decode()
    assert "No logs yet" in unfiltered and "No logs match" not in unfiltered
    assert reverse("dashboard:overview", args=[workspace.slug]) in unfiltered  # where to start
    filtered = _logs(owner_client, workspace, "range=24h&metadata.environment=production").content.decode()
    assert "No logs match" in filtered and "matches these filters" in filtered
    assert "No logs yet" not in filtered


NAVIGATION = {"Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate"}


def test_more_rows_opened_as_a_page_lead_to_the_logs_page_with_the_same_filters(owner_client, workspace, logs):
    response = _logs(owner_client, workspace, "range=24h&metadata.feature=chat&cursor=x", name="log_rows", **NAVIGATION)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('dashboard:logs', args=[workspace.slug])}?range=24h&metadata.feature=chat"
    # htmx's own request (and any client that is not a browser navigating) gets the rows.
    rows = _logs(owner_client, workspace, "range=24h", name="log_rows", HX_Request="true", **NAVIGATION)
    assert rows.status_code == 200 and b"<tr" in rows.content
    assert _logs(owner_client, workspace, "range=24h", name="log_rows").status_code == 200


def test_an_outsider_navigating_to_more_rows_gets_404_not_a_redirect(client, outsider, workspace, logs):
    client.force_login(outsider)
    assert _logs(client, workspace, "range=24h", name="log_rows", **NAVIGATION).status_code == 404
