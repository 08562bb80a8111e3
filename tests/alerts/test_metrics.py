"""What a rule measures: totals over exactly its window (rollups for whole hours, raw logs at
the edges), per scope value, for each metric kind; the same numbers the logs add up to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics import histogram
from analytics.alerts import evaluation, metrics
from tests.alerts.conftest import make_rule, write_logs

pytestmark = pytest.mark.django_db

# A fixed "now" 25 minutes into an hour: a 1h window is 35 minutes of the previous hour plus
# 25 of this one, a 3h window has two whole hours inside.
NOW = datetime.now(UTC).replace(minute=25, second=0, microsecond=0) - timedelta(hours=1)


def at(minutes_ago: float) -> datetime:
    return NOW - timedelta(minutes=minutes_ago)


def log(minutes_ago: float, **overrides) -> dict:
    return {"created_at": at(minutes_ago), **overrides}


def value_of(workspace, **fields) -> dict:
    rule, _ = make_rule(workspace, **fields)
    return evaluation.measure(rule, now=NOW)[0]


def test_split_window_keeps_whole_hours_for_the_rollups():
    hours, edges = metrics.split_window(at(185), NOW)
    assert hours == (at(145), at(25)) and edges == [(at(185), at(145)), (at(25), NOW)]
    assert metrics.split_window(at(5), NOW) == (None, [(at(5), NOW)])
    aligned = NOW.replace(minute=0)
    assert metrics.split_window(aligned - timedelta(hours=2), aligned) == ((aligned - timedelta(hours=2), aligned), [])


def test_spend_counts_exactly_the_window(workspace):
    write_logs(
        workspace,
        log(2, cost="1.5"),
        log(30, cost="2"),  # previous hour, inside a 1h window
        log(70, cost="4"),  # outside 1h, inside 3h (a whole hour)
        log(200, cost="8"),  # outside both
        log(1, cost=None, total_tokens=10),  # unpriced: not spend
        log(-1, cost="16"),  # after "now"
    )
    assert value_of(workspace, name="5m", window="5m") == {"": 1.5}
    assert value_of(workspace, name="1h", window="1h") == {"": 3.5}
    assert value_of(workspace, name="3h", window="3h") == {"": 7.5}


def test_whole_hours_are_read_from_the_rollups_not_the_logs(workspace):
    write_logs(workspace, log(100, cost="1"), log(160, cost="1"))
    rule, _ = make_rule(workspace, window="3h")
    with CaptureQueriesContext(connection) as queries:
        assert evaluation.measure(rule, now=NOW)[0] == {"": 2.0}
    log_table_reads = [q["sql"] for q in queries if "analytics_requestlog" in q["sql"]]
    # Only the two partial edges ([now-3h, next hour) and [this hour, now)) touch raw logs.
    assert len(log_table_reads) == 2
    assert any("analytics_dimensionrollup" in q["sql"] for q in queries)


def test_scope_filters_and_per_values(workspace):
    write_logs(
        workspace,
        log(10, cost="1", user="alice", metadata={"_user": "alice", "feature": "chat"}),
        log(20, cost="2", user="bob", metadata={"_user": "bob", "feature": "chat"}),
        log(80, cost="4", user="alice", metadata={"_user": "alice", "feature": "chat"}),
        log(90, cost="8", user="alice", metadata={"_user": "alice", "feature": "search"}),
    )
    chat = {"scope": "metadata.feature=chat", "window": "3h"}
    assert value_of(workspace, name="chat", **chat) == {"": 7.0}
    assert value_of(workspace, name="per user", per="_user", **chat) == {"alice": 5.0, "bob": 2.0}
    assert value_of(workspace, name="per feature", per="metadata.feature", window="3h") == {"chat": 7.0, "search": 8.0}
    assert value_of(workspace, name="per model", per="model", window="3h") == {"gpt-4o-mini": 15.0}
    scoped = value_of(workspace, name="in", scope="metadata.feature__in=chat,search&user=alice", window="3h")
    assert scoped == {"": 13.0}


def test_values_folded_by_the_rollup_cap_are_measured_from_logs(workspace, settings):
    settings.ROLLUP_VALUE_CAP = 2
    users = ["u1", "u2", "u3", "u4"]
    write_logs(workspace, *[log(70, cost="1", user=u, metadata={"_user": u}) for u in users])
    assert value_of(workspace, per="_user", window="3h") == dict.fromkeys(users, 1.0)


def test_tokens_requests_error_rate_and_p95(workspace):
    latencies = [100.0] * 18 + [2000.0, 2000.0]
    write_logs(
        workspace,
        *[
            log(
                70 + i,
                latency_ms=latency,
                prompt_tokens=10,
                completion_tokens=5,
                status_code=500 if i < 5 else 200,
                success=i >= 5,
            )
            for i, latency in enumerate(latencies)
        ],
    )
    assert value_of(workspace, name="t", metric="tokens", window="3h") == {"": 300.0}
    assert value_of(workspace, name="r", metric="requests", window="3h") == {"": 20.0}
    assert value_of(workspace, name="e", metric="error_rate", window="3h", threshold="5") == {"": 25.0}
    p95 = value_of(workspace, name="p", metric="p95_latency", window="3h", threshold="500")[""]
    expected = histogram.percentile(histogram.merge_all([histogram.add({}, x) for x in latencies]), 95)
    assert p95 == expected and abs(p95 - 2000) / 2000 < 0.05


def test_ratios_need_min_requests(workspace):
    write_logs(workspace, log(5, status_code=500, success=False))
    assert value_of(workspace, name="a", metric="error_rate", threshold="5") == {"": 100.0}
    assert value_of(workspace, name="b", metric="error_rate", threshold="5", min_requests=10) == {"": None}
    assert value_of(workspace, name="c", metric="p95_latency", threshold="5", scope="model=none") == {"": None}


def test_an_empty_window_is_zero_spend(workspace):
    assert value_of(workspace, window="5m") == {"": 0.0}
