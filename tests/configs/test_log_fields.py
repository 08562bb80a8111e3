"""What a config-routed log records (config id, the target that answered, every try, retries,
cache status and saving) is readable everywhere logs are: the REST list and detail, the CSV and
JSONL exports, Portkey's export jobs, the log detail's Routing block; and ``config`` filters
like model or provider (the REST API, Portkey's ``configs``, the Logs page)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest
from django.urls import reverse

from tests.analytics.api_helpers import ago, write_many
from workspaces import services

pytestmark = pytest.mark.django_db

ATTEMPTS = [
    {"target": "config.targets[0]", "provider": "@primary", "status": 503, "ms": 12.5},
    {"target": "config.targets[1]", "provider": "@backup", "status": 429, "ms": 8.0},
    {"target": "config.targets[1]", "provider": "@backup", "status": 200, "ms": 30.25},
]


@pytest.fixture
def saved(workspace):
    for slug in ("primary", "backup"):
        services.provider_create(workspace=workspace, slug=slug, base_url="https://upstream.example.com/v1")
    config = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@primary"}, {"provider": "@backup"}]}
    return services.config_create(workspace=workspace, slug="resilient", config=config)


@pytest.fixture
def routed(workspace, api_key, saved):
    """Three logs: a fallback through the saved config, an inline-config cache hit, a plain one."""
    at = ago(minutes=30)
    return write_many(
        workspace,
        api_key[0],
        [
            {
                "created_at": at,
                "provider": "@backup",
                "config_id": saved.public_id,
                "last_used_option_index": "config.targets[1]",
                "attempts": ATTEMPTS,
                "retry_count": 1,
                "cache_status": "MISS",
                "trace_id": "fallback",
            },
            {
                "created_at": ago(minutes=20),
                "provider": "@primary",
                "config_id": "inline",
                "last_used_option_index": "config",
                "attempts": [{"target": "config", "provider": "@primary", "status": 200, "ms": 0.5, "cache": "HIT"}],
                "cache_status": "HIT",
                "cost": "0",
                "cache_saved_cost": "0.00004680",
                "trace_id": "hit",
            },
            {"created_at": ago(minutes=10), "trace_id": "plain"},
        ],
    )


def api_logs(client, key: str, **params) -> list[dict]:
    response = client.get("/api/v1/logs", params, headers={"x-portkey-api-key": key})
    assert response.status_code == 200, response.content
    return response.json()["data"]


def test_rest_logs_carry_the_routing_fields_and_filter_by_config(client, api_key, routed, saved):
    key = api_key[1]
    [fallback] = api_logs(client, key, config=saved.public_id)
    assert fallback["trace_id"] == "fallback"
    assert (fallback["config_id"], fallback["last_used_option_index"], fallback["retry_count"]) == (
        saved.public_id,
        "config.targets[1]",
        1,
    )
    assert fallback["attempts"] == ATTEMPTS and fallback["cache_saved_cost"] is None
    [hit] = api_logs(client, key, config="inline")
    assert (hit["cache_status"], float(hit["cost"]), float(hit["cache_saved_cost"])) == ("HIT", 0.0, 0.0000468)
    both = api_logs(client, key, config=f"{saved.public_id},inline")
    assert [log["trace_id"] for log in both] == ["hit", "fallback"]
    plain = next(log for log in api_logs(client, key) if log["trace_id"] == "plain")
    assert (plain["config_id"], plain["last_used_option_index"], plain["attempts"]) == ("", "", [])
    assert api_logs(client, key, config="pc-0000000000000000") == []
    detail = client.get(f"/api/v1/logs/{fallback['id']}", headers={"x-portkey-api-key": key}).json()
    assert detail["attempts"] == ATTEMPTS and detail["last_used_option_index"] == "config.targets[1]"
    too_long = client.get("/api/v1/logs", {"config": "x" * 40}, headers={"x-portkey-api-key": key})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "config"


def test_an_outsiders_config_filter_sees_nothing(client, other_workspace, routed, saved):
    _, outsider_key = services.api_key_create(workspace=other_workspace, name="outsider")
    assert api_logs(client, outsider_key, config=saved.public_id) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_exports_carry_the_routing_fields(client, api_key, routed, saved, fmt):
    response = client.get(
        "/api/v1/logs/export", {"format": fmt, "config": saved.public_id}, headers={"x-portkey-api-key": api_key[1]}
    )
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    if fmt == "csv":
        [row] = list(csv.DictReader(io.StringIO(text)))
        attempts = json.loads(row["attempts"])
        assert row["cache_saved_cost"] == "" and row["retry_count"] == "1"
    else:
        [row] = [json.loads(line) for line in text.splitlines()]
        attempts = row["attempts"]
        assert row["cache_saved_cost"] is None and row["retry_count"] == 1
    assert (row["config_id"], row["last_used_option_index"]) == (saved.public_id, "config.targets[1]")
    assert attempts == ATTEMPTS


def test_portkey_export_jobs_name_the_config_and_filter_by_configs(client, api_key, routed, saved):
    headers = {"x-portkey-api-key": api_key[1]}
    fields = ["trace_id", "config", "mode", "cost", "cache_saved_cost", "last_used_option_index", "attempts"]
    created = client.post(
        "/v1/logs/exports",
        {"filters": {"configs": [saved.public_id, "inline"]}, "requested_data": fields},
        content_type="application/json",
        headers=headers,
    ).json()
    assert created["total"] == 2
    client.post(f"/v1/logs/exports/{created['id']}/start", headers=headers)
    link = client.get(f"/v1/logs/exports/{created['id']}/download", headers=headers).json()["signed_url"]
    path = link.split("://", 1)[-1].split("/", 1)[1]
    lines = b"".join(client.get("/" + path).streaming_content).decode().splitlines()
    rows = {row["trace_id"]: row for row in map(json.loads, lines)}
    assert rows["fallback"]["config"] == saved.public_id and rows["fallback"]["attempts"] == ATTEMPTS
    assert rows["fallback"]["mode"] is None  # the strategy is not on the log: not claimed "single"
    hit = rows["hit"]
    assert (hit["config"], hit["last_used_option_index"], hit["cost"]) == ("inline", "config", 0)
    assert hit["cache_saved_cost"] == pytest.approx(0.00468)  # cents, like cost


def test_log_detail_shows_the_routing_block(client, member, workspace, routed, saved):
    client.force_login(member)
    fallback, hit, plain = routed
    url = reverse("dashboard:log_detail", args=[workspace.slug, fallback["id"]])
    page = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert 'id="routing"' in page and saved.public_id in page and ">resilient</a>" in page
    assert "config.targets[1]" in page and "1 of that target" in page and "3 tries in all" in page
    assert page.count('<tr><td class="mono">config.targets[') == 3 and ">503</span>" in page and ">429</span>" in page
    hit_page = client.get(
        reverse("dashboard:log_detail", args=[workspace.slug, hit["id"]]), headers={"HX-Request": "true"}
    ).content.decode()
    assert (
        "HIT · saved $0.000047 USD" in hit_page
        and ">inline<" in hit_page
        and ">0.5 ms<" in hit_page
        and "</span> HIT</td>" in hit_page
    )
    plain_page = client.get(
        reverse("dashboard:log_detail", args=[workspace.slug, plain["id"]]), headers={"HX-Request": "true"}
    ).content.decode()
    assert 'id="routing"' not in plain_page


def test_the_logs_page_filters_by_config(client, member, workspace, routed, saved):
    fallback, hit, plain = routed
    client.force_login(member)
    url = reverse("dashboard:logs", args=[workspace.slug])
    page = client.get(url, {"range": "24h", "config": saved.public_id}).content.decode()
    assert f'<option value="{saved.public_id}" selected>resilient ({saved.public_id})</option>' in page
    assert fallback["id"] in page and hit["id"] not in page and plain["id"] not in page
    assert f"config = resilient ({saved.public_id})" in page  # a removable chip naming the config
    assert client.get(url, {"config": "x" * 40}).status_code == 400


def test_a_cache_hit_of_an_unpriced_model_says_the_saving_is_unknown(client, member, workspace, api_key, saved):
    [log] = write_many(
        workspace,
        api_key[0],
        [{"model": "my-finetune", "config_id": "inline", "cache_status": "HIT", "cost": "0", "cache_saved_cost": None}],
    )
    client.force_login(member)
    url = reverse("dashboard:log_detail", args=[workspace.slug, log["id"]])
    page = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "saving unknown (no price for this model)" in page
    assert Decimal(log["cost"]) == 0
