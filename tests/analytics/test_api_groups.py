"""GET /api/v1/analytics/groups/... and /metadata-keys: totals per group equal a raw
aggregation of the logs written; ordering and pagination."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics import histogram
from tests.analytics.api_helpers import get, write_many
from workspaces import services

pytestmark = pytest.mark.django_db

URL = "/api/v1/analytics/groups/"


@pytest.fixture
def key(api_key):
    return api_key[1]


@pytest.fixture
def second_key(workspace):
    return services.api_key_create(workspace=workspace, name="batch jobs")[0]


@pytest.fixture
def logs(workspace, api_key, second_key):
    start = timezone.now().astimezone(UTC) - timedelta(hours=30)
    specs = []
    for i in range(40):
        specs.append(
            {
                "created_at": start + timedelta(minutes=45 * i),
                "api_key_id": [api_key[0].id, second_key.id, None][i % 3],
                "provider": ["openai", "anthropic"][i % 2],
                "model": ["gpt-4o", "claude-3", "gpt-4o-mini", "o1"][i % 4],
                "success": i % 6 != 0,
                "status_code": 200 if i % 6 else 502,
                "latency_ms": 5.0 * (i + 1) ** 1.5,
                "prompt_tokens": 10 * i,
                "completion_tokens": i,
                "cost": None if i % 4 == 3 else f"0.{i:04d}",
                "user": f"u{i % 5}",
                "metadata": {"_user": f"u{i % 5}", "customer": f"c{i % 7}"},
            }
        )
    return write_many(workspace, None, specs)


def expected_groups(logs, value_of) -> dict:
    groups: dict = defaultdict(lambda: {"requests": 0, "errors": 0, "cost": Decimal(0), "tokens": 0, "lat": 0.0})
    hists: dict = defaultdict(dict)
    for r in logs:
        g = groups[value_of(r)]
        g["requests"] += 1
        g["errors"] += not r["success"]
        g["cost"] += Decimal(r["cost"] or 0)
        g["tokens"] += r["prompt_tokens"] + r["completion_tokens"]
        g["lat"] += r["latency_ms"]
        histogram.add(hists[value_of(r)], r["latency_ms"])
        g["last_seen"] = max(g.get("last_seen", ""), r["created_at"])
    for value, g in groups.items():
        g["p95"] = histogram.percentile(hists[value], 95)
    return groups


def check(rows: list[dict], expected: dict) -> None:
    assert {row["value"] for row in rows} == set(expected)
    for row in rows:
        e = expected[row["value"]]
        assert row["requests"] == e["requests"]
        assert row["errors"] == e["errors"]
        assert row["success_rate"] == pytest.approx(1 - e["errors"] / e["requests"], abs=1e-6)
        assert row["cost"] == pytest.approx(float(e["cost"]))
        assert row["total_tokens"] == e["tokens"]
        assert row["avg_tokens"] == pytest.approx(e["tokens"] / e["requests"], abs=1e-3)
        assert row["avg_latency_ms"] == pytest.approx(e["lat"] / e["requests"], abs=1e-3)
        assert row["p95_latency_ms"] == e["p95"]
        assert row["last_seen"][:19] == e["last_seen"][:19]


def groups(client, key, path, **params):
    response = get(client, URL + path, key, **params)
    assert response.status_code == 200, response.json()
    return response.json()


def test_metadata_groups(client, key, logs):
    body = groups(client, key, "metadata/customer")
    assert (body["object"], body["source"], body["total"]) == ("list", "rollups", 7)
    check(body["data"], expected_groups(logs, lambda r: r["metadata"]["customer"]))
    assert all(row["metadata_value"] == row["value"] for row in body["data"])


def test_user_groups(client, key, logs):
    body = groups(client, key, "users")
    check(body["data"], expected_groups(logs, lambda r: r["user"]))
    assert all(row["user"] == row["value"] for row in body["data"])


@pytest.mark.parametrize(("path", "field"), [("models", "model"), ("providers", "provider")])
def test_model_and_provider_groups(client, key, logs, path, field):
    body = groups(client, key, path)
    assert body["source"] == "rollups"
    check(body["data"], expected_groups(logs, lambda r: r[field]))


def test_api_key_groups_carry_names(client, key, logs, api_key, second_key):
    body = groups(client, key, "api-keys")
    check(body["data"], expected_groups(logs, lambda r: r["api_key_id"] or 0))
    names = {row["api_key_id"]: row["name"] for row in body["data"]}
    assert names == {api_key[0].id: "default", second_key.id: "batch jobs", None: ""}


def test_default_ordering_is_most_requests_first(client, key, logs):
    rows = groups(client, key, "metadata/customer")["data"]
    assert [row["requests"] for row in rows] == sorted((row["requests"] for row in rows), reverse=True)


@pytest.mark.parametrize(
    "column",
    ["value", "cost", "avg_latency_ms", "p95_latency_ms", "success_rate", "last_seen", "avg_tokens", "total_tokens"],
)
def test_ordering_by_any_column(client, key, logs, column):
    for sign in ("", "-"):
        rows = groups(client, key, "metadata/customer", ordering=f"{sign}{column}")["data"]
        values = [row[column] for row in rows]
        assert values == sorted(values, reverse=bool(sign))


def test_page_and_portkey_current_page(client, key, logs):
    everything = groups(client, key, "metadata/customer", ordering="value")["data"]
    page2 = groups(client, key, "metadata/customer", ordering="value", page="2", page_size="3")
    assert (page2["total"], page2["page"], page2["has_more"]) == (7, 2, True)
    assert page2["data"] == everything[3:6]
    portkey = groups(client, key, "metadata/customer", ordering="value", current_page="2", page_size="3")
    assert portkey["data"] == everything[6:] and portkey["has_more"] is False


def test_filters_the_rollups_cannot_answer_fall_back_to_logs(client, key, logs):
    body = groups(client, key, "metadata/customer", provider="openai")
    assert body["source"] == "logs"
    check(
        body["data"],
        expected_groups([r for r in logs if r["provider"] == "openai"], lambda r: r["metadata"]["customer"]),
    )
    body = groups(client, key, "models", **{"metadata.customer": "c1"})
    assert body["source"] == "logs"
    check(body["data"], expected_groups([r for r in logs if r["metadata"]["customer"] == "c1"], lambda r: r["model"]))


def test_dimension_filters_stay_on_rollups(client, key, logs):
    body = groups(client, key, "models", provider="openai", success="true")
    assert body["source"] == "rollups"
    kept = [r for r in logs if r["provider"] == "openai" and r["success"]]
    check(body["data"], expected_groups(kept, lambda r: r["model"]))


def test_the_window_limits_groups(client, key, logs):
    start = timezone.now() - timedelta(hours=10)
    body = groups(client, key, "users", start=start.isoformat())
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0).isoformat()
    check(body["data"], expected_groups([r for r in logs if r["created_at"] >= hour], lambda r: r["user"]))


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"ordering": "colour"}, "ordering"),
        ({"page": "0"}, "page"),
        ({"page_size": "501"}, "page_size"),
        ({"current_page": "-1"}, "current_page"),
        ({"interval": "hour"}, "interval"),
    ],
)
def test_bad_parameters_are_a_400(client, key, params, param):
    response = get(client, URL + "users", key, **params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_metadata_keys_registry(client, key, logs):
    response = get(client, "/api/v1/analytics/metadata-keys", key, top="3")
    body = response.json()
    assert body["object"] == "list"
    assert [row["key"] for row in body["data"]] == ["_user", "customer"]
    customer = body["data"][1]
    assert customer["requests"] == 40
    assert customer["distinct_values"] == 7
    assert len(customer["top_values"]) == 3
    counts = defaultdict(int)
    for r in logs:
        counts[r["metadata"]["customer"]] += 1
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:3]
    assert [(v["value"], v["requests"]) for v in customer["top_values"]] == top
