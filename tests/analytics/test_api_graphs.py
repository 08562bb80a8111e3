"""GET /api/v1/analytics/graphs/<metric>: totals and points equal a raw aggregation of the
logs written (through write_log_batch, so the rollups are filled), from the rollups when they
can answer and from the logs (saying so) when they cannot."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics import histogram
from tests.analytics.api_helpers import get, write_many

pytestmark = pytest.mark.django_db

URL = "/api/v1/analytics/graphs/"


@pytest.fixture
def key(api_key):
    return api_key[1]


@pytest.fixture
def hour0():
    return timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)


@pytest.fixture
def logs(workspace, api_key, hour0):
    """36 logs over 4 hours: two models/providers, three features, three users, some errors."""
    specs = []
    for i in range(36):
        specs.append(
            {
                "created_at": hour0 + timedelta(hours=i % 4, minutes=i),
                "provider": "openai" if i % 3 else "anthropic",
                "model": "gpt-4o" if i % 3 else "claude-3",
                "status_code": 500 if i % 7 == 0 else 200,
                "success": i % 7 != 0,
                "latency_ms": 10.0 * (i + 1),
                "prompt_tokens": i,
                "completion_tokens": 2 * i,
                "total_tokens": 3 * i,
                "cost": None if i % 5 == 0 else f"0.00{i:02d}",
                "user": f"user{i % 3}",
                "metadata": {
                    "_user": f"user{i % 3}",
                    "feature": ["chat", "search", "summarize"][(i % 3 == 0 and 2) or i % 2],
                },
            }
        )
    return write_many(workspace, api_key[0], specs)


def window(hour0):
    return {"start": (hour0 - timedelta(hours=1)).isoformat(), "end": (hour0 + timedelta(hours=5)).isoformat()}


def graph(client, key, metric, **params):
    response = get(client, URL + metric, key, **params)
    assert response.status_code == 200, response.json()
    return response.json()


def hour_of(record) -> str:
    return record["created_at"][:13]


def by_point(body) -> dict:
    return {point["timestamp"][:13]: point for point in body["data_points"]}


def test_requests_per_hour_from_rollups(client, key, logs, hour0):
    body = graph(client, key, "requests", **window(hour0))
    assert body["object"] == "analytics.graph"
    assert (body["source"], body["interval"]) == ("rollups", "hour")
    assert body["summary"] == {"total": 36}
    assert len(body["data_points"]) == 7  # 6 whole hours plus the one holding `end`
    expected = Counter(hour_of(r) for r in logs)
    assert {k: p["total"] for k, p in by_point(body).items() if p["total"]} == dict(expected)


def test_cost_tokens_errors_and_rate(client, key, logs, hour0):
    priced = [Decimal(r["cost"]) for r in logs if r["cost"] is not None]
    cost = graph(client, key, "cost", **window(hour0))["summary"]
    assert cost["total"] == pytest.approx(float(sum(priced)))
    assert cost["avg"] == pytest.approx(float(sum(priced)) / len(priced))
    tokens = graph(client, key, "tokens", **window(hour0))["summary"]
    assert tokens == {
        "total": sum(3 * i for i in range(36)),
        "prompt": sum(range(36)),
        "completion": sum(2 * i for i in range(36)),
        **dict.fromkeys(("cached_prompt", "cache_write", "reasoning", "audio_prompt", "audio_completion"), 0),
        "avg": pytest.approx(sum(3 * i for i in range(36)) / 36, abs=1e-3),
    }
    errors = sum(not r["success"] for r in logs)
    assert graph(client, key, "errors", **window(hour0))["summary"] == {"total": errors}
    rate = graph(client, key, "error-rate", **window(hour0))["summary"]
    assert rate["rate"] == pytest.approx(errors / 36, abs=1e-6)


def test_latency_percentiles_come_from_merged_histograms(client, key, logs, hour0):
    hist: dict[str, int] = {}
    per_hour: dict[str, dict] = defaultdict(dict)
    for r in logs:
        histogram.add(hist, r["latency_ms"])
        histogram.add(per_hour[hour_of(r)], r["latency_ms"])
    body = graph(client, key, "latency", **window(hour0))
    summary = body["summary"]
    assert summary["avg"] == pytest.approx(sum(r["latency_ms"] for r in logs) / 36, abs=1e-3)
    for q in (50, 90, 99):
        assert summary[f"p{q}"] == histogram.percentile(hist, q)
    for hour, point in by_point(body).items():
        assert point["p90"] == histogram.percentile(per_hour.get(hour, {}), 90)


def test_users_counts_distinct_users(client, key, logs, hour0):
    body = graph(client, key, "users", **window(hour0))
    assert body["summary"] == {"total": 3}
    assert body["source"] == "rollups"
    expected = defaultdict(set)
    for r in logs:
        expected[hour_of(r)].add(r["user"])
    assert {k: p["total"] for k, p in by_point(body).items() if p["total"]} == {k: len(v) for k, v in expected.items()}


def test_a_long_window_is_daily_and_interval_overrides(client, key, logs):
    assert graph(client, key, "requests")["interval"] == "day"
    body = graph(client, key, "requests", interval="hour")
    assert body["interval"] == "hour" and body["summary"]["total"] == 36
    assert sum(p["total"] for p in body["data_points"]) == 36


def test_dimension_filters_are_answered_by_rollups(client, key, logs, hour0):
    body = graph(client, key, "requests", provider="openai", success="true", **window(hour0))
    assert body["source"] == "rollups"
    assert body["summary"]["total"] == sum(r["provider"] == "openai" and r["success"] for r in logs)


def test_one_metadata_pair_is_answered_by_rollups(client, key, logs, hour0):
    body = graph(client, key, "cost", **{"metadata.feature": "chat"}, **window(hour0))
    assert body["source"] == "rollups"
    chat = [r for r in logs if r["metadata"]["feature"] == "chat"]
    assert body["summary"]["total"] == pytest.approx(float(sum(Decimal(r["cost"] or 0) for r in chat)))
    users = graph(client, key, "requests", user="user1", **window(hour0))
    assert users["source"] == "rollups"
    assert users["summary"]["total"] == sum(r["user"] == "user1" for r in logs)


@pytest.mark.parametrize(
    "params",
    [
        {"metadata.feature": "chat", "provider": "openai"},
        {"metadata.feature": "chat", "metadata._user": "user1"},
        {"latency_min": "100"},
        {"status_code": "500"},
        {"metadata.feature__ne": "chat"},
    ],
)
def test_other_filters_fall_back_to_the_logs_and_say_so(client, key, logs, hour0, params):
    body = graph(client, key, "requests", **params, **window(hour0))
    assert body["source"] == "logs"

    def keep(r):
        md = r["metadata"]
        return (
            ("metadata.feature" not in params or md["feature"] == params["metadata.feature"])
            and ("metadata.feature__ne" not in params or md["feature"] != params["metadata.feature__ne"])
            and ("metadata._user" not in params or md["_user"] == params["metadata._user"])
            and ("provider" not in params or r["provider"] == params["provider"])
            and ("latency_min" not in params or r["latency_ms"] >= float(params["latency_min"]))
            and ("status_code" not in params or r["status_code"] == int(params["status_code"]))
        )

    assert body["summary"]["total"] == sum(map(keep, logs))


@pytest.mark.parametrize("metric", ["requests", "cost", "tokens", "latency", "errors", "error-rate", "users"])
def test_rollups_and_logs_give_the_same_answer(client, key, logs, hour0, metric):
    from_rollups = graph(client, key, metric, **window(hour0))
    from_logs = graph(client, key, metric, latency_min="0", **window(hour0))
    assert (from_rollups["source"], from_logs["source"]) == ("rollups", "logs")
    assert same(from_logs["summary"], from_rollups["summary"])
    assert len(from_logs["data_points"]) == len(from_rollups["data_points"])
    for a, b in zip(from_logs["data_points"], from_rollups["data_points"], strict=True):
        assert same(a, b)


def same(a: dict, b: dict) -> bool:
    """Equal keys; numbers equal up to float rounding."""
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], float) or isinstance(b[name], float):
            assert a[name] == pytest.approx(b[name]), name
        else:
            assert a[name] == b[name], name
    return True


def test_group_by_metadata_splits_series(client, key, logs, hour0):
    body = graph(client, key, "requests", group_by="metadata.feature", **window(hour0))
    assert body["group_by"] == "metadata.feature"
    totals = Counter(r["metadata"]["feature"] for r in logs)
    assert {s["value"]: s["summary"]["total"] for s in body["series"]} == dict(totals)
    for series in body["series"]:
        expected = Counter(hour_of(r) for r in logs if r["metadata"]["feature"] == series["value"])
        got = {p["timestamp"][:13]: p["total"] for p in series["data_points"] if p["total"]}
        assert got == dict(expected)


@pytest.mark.parametrize("group_by", ["model", "provider", "user", "api_key"])
def test_group_by_dimensions(client, key, logs, hour0, group_by, api_key):
    body = graph(client, key, "latency", group_by=group_by, **window(hour0))
    assert body["source"] == "rollups"
    field = {"api_key": "api_key_id"}.get(group_by, group_by)
    values = Counter(str(r[field]) for r in logs)
    assert {s["value"] for s in body["series"]} == set(values)
    for series in body["series"]:
        hist: dict = {}
        for r in logs:
            if str(r[field]) == series["value"]:
                histogram.add(hist, r["latency_ms"])
        assert series["summary"]["p50"] == histogram.percentile(hist, 50)


def test_more_than_ten_values_fold_into_other(client, key, workspace, hour0):
    write_many(workspace, records=[{"created_at": hour0, "metadata": {"team": f"t{i:02d}"}} for i in range(13)])
    write_many(workspace, records=[{"created_at": hour0, "metadata": {"team": "t00"}} for _ in range(3)])
    body = graph(client, key, "requests", group_by="metadata.team", **window(hour0))
    series = {s["value"]: s["summary"]["total"] for s in body["series"]}
    assert len(series) == 11
    assert series["t00"] == 4
    assert series["(other)"] == 3
    assert sum(series.values()) == 16


def test_metadata_values_past_the_rollup_cap_are_read_from_logs(client, key, workspace, hour0, settings):
    settings.ROLLUP_VALUE_CAP = 2
    write_many(workspace, records=[{"created_at": hour0, "metadata": {"team": f"t{i}"}} for i in range(5)])
    body = graph(client, key, "requests", **{"metadata.team": "t4"}, **window(hour0))
    assert (body["source"], body["summary"]["total"]) == ("logs", 1)


def test_unknown_metric_is_a_404(client, key):
    response = get(client, URL + "nope", key)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "colour"}, "group_by"),
        ({"group_by": "metadata."}, "group_by"),
        ({"interval": "minute"}, "interval"),
        ({"interval": "hour", "start": "1990-01-01T00:00:00Z"}, "interval"),
        ({"start": "bad"}, "start"),
        ({"page": "2"}, "page"),
    ],
)
def test_bad_parameters_are_a_400(client, key, params, param):
    response = get(client, URL + "requests", key, **params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_users_past_the_rollup_cap_are_counted_from_logs(client, key, workspace, hour0, settings):
    settings.ROLLUP_VALUE_CAP = 2
    write_many(
        workspace, records=[{"created_at": hour0, "user": f"u{i}", "metadata": {"_user": f"u{i}"}} for i in range(5)]
    )
    body = graph(client, key, "users", **window(hour0))
    assert (body["source"], body["summary"]["total"]) == ("logs", 5)


def test_cached_day_histograms_follow_late_logs(client, key, workspace, api_key):
    # Closed days' merged histograms are cached (per day and per group's run of days); a log
    # landing late in one of those days must change the percentiles on the next request.
    days_ago = timezone.now().astimezone(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=3)
    params = {"start": (days_ago - timedelta(days=2)).isoformat(), "end": timezone.now().isoformat()}
    write_many(
        workspace, api_key[0], [{"created_at": days_ago - timedelta(days=d), "latency_ms": 100.0} for d in (0, 1)]
    )

    def p95_by_model():
        response = get(client, "/api/v1/analytics/groups/models", key, **params)
        assert response.status_code == 200, response.content
        return {row["value"]: row["p95_latency_ms"] for row in response.json()["data"]}

    assert graph(client, key, "latency", **params)["summary"]["p99"] == histogram.percentile(
        histogram.add({}, 100.0), 99
    )
    before = p95_by_model()
    assert p95_by_model() == before  # served from the caches now (a run of two closed days)
    write_many(workspace, api_key[0], [{"created_at": days_ago + timedelta(minutes=5), "latency_ms": 9000.0}])
    expected: dict = {}
    for latency in (100.0, 100.0, 9000.0):
        histogram.add(expected, latency)
    assert graph(client, key, "latency", **params)["summary"]["p99"] == histogram.percentile(expected, 99)
    assert p95_by_model() == {"gpt-4o-mini": histogram.percentile(expected, 95)}
