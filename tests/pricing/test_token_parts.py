"""Cache-write and audio tokens, like cached and reasoning tokens: ranges in the one filter
vocabulary, totals in Summary (page and export) and the REST groups."""

from __future__ import annotations

import csv
import io

import pytest

from tests.dashboard.conftest import write_logs

pytestmark = pytest.mark.django_db

PARTS = [
    {"trace_id": "voice", "model": "gpt-4o-audio-preview", "audio_prompt_tokens": 40, "audio_completion_tokens": 25},
    {"trace_id": "cache-write", "model": "claude-haiku-4-5", "cache_write_tokens": 300},
    {"trace_id": "plain", "model": "gpt-4o-mini"},
]


def test_cache_write_and_audio_token_ranges_filter_rest_logs(workspace, api_key, client, member):
    write_logs(workspace, api_key[0], PARTS)
    client.force_login(member)
    url = f"/api/v1/logs?workspace={workspace.slug}"

    def traces(query: str) -> list[str]:
        response = client.get(url + query)
        assert response.status_code == 200, response.content
        return [log["trace_id"] for log in response.json()["data"]]

    assert traces("&cache_write_tokens_min=1") == ["cache-write"]
    assert traces("&audio_prompt_tokens_min=40&audio_completion_tokens_max=25") == ["voice"]
    assert sorted(traces("&audio_completion_tokens_max=0&cache_write_tokens_max=0")) == ["plain"]
    bad = client.get(url + "&audio_prompt_tokens_min=-1")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "audio_prompt_tokens_min"


def test_summary_and_its_export_and_rest_groups_carry_every_token_part(workspace, api_key, client, member):
    write_logs(workspace, api_key[0], PARTS)
    client.force_login(member)
    page = client.get(f"/w/{workspace.slug}/summary/?group=model").content.decode()
    assert "300 written to cache" in page and "40 audio in · 25 audio out" in page

    export = client.get(f"/w/{workspace.slug}/summary/export/?group=model&format=csv").content.decode()
    rows = {row["value"]: row for row in csv.DictReader(io.StringIO(export))}
    assert (rows["claude-haiku-4-5"]["cache_write_tokens"], rows["gpt-4o-audio-preview"]["audio_prompt_tokens"]) == (
        "300",
        "40",
    )
    assert rows["gpt-4o-audio-preview"]["audio_completion_tokens"] == "25"

    groups = client.get(f"/api/v1/analytics/groups/models?workspace={workspace.slug}").json()["data"]
    by_model = {row["model"]: row for row in groups}
    assert by_model["claude-haiku-4-5"]["cache_write_tokens"] == 300
    assert (
        by_model["gpt-4o-audio-preview"]["audio_prompt_tokens"],
        by_model["gpt-4o-audio-preview"]["audio_completion_tokens"],
    ) == (40, 25)
