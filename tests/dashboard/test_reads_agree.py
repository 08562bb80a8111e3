"""Property: for random hour-aligned windows, groupings and filters, the Summary table the
dashboard shows (rows with their p95, "(not set)" and total), the Errors page's status codes,
the REST groups answer and an aggregation of the same logs computed here in plain Python are
equal, whichever source the engine chose and whether the closed-period cache answered. Runs in
the database of the pass.

The logs are written, then the rollups rebuilt so that the workspace's three keys (env, team,
_user) have complete pair rollups, except in a few hours whose pair rows are deleted: a
one-key filter grouped by another key is then answered from PairRollup in windows clear of those
hours and from the raw logs in windows that hold one."""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.http import QueryDict
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics import dashboard_selectors as ds
from analytics import histogram, recompute
from analytics.filters import LogFilter
from analytics.forms import log_filter_data
from analytics.models import PairRollup, RequestLog
from analytics.reads.cache import clear_memo
from analytics.reads.window import Window
from tests.dashboard.conftest import write_logs

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(minute=0, second=0, microsecond=0)
GROUPINGS = ["metadata.env", "metadata.team", "model", "provider", "user"]
# (query string, the same test in Python over a log record)
FILTERS = {
    "": lambda r: True,
    "metadata.env=prod": lambda r: r["metadata"].get("env") == "prod",
    "metadata.env__ne=prod": lambda r: r["metadata"].get("env") != "prod",
    "metadata.team__exists=true": lambda r: "team" in r["metadata"],
    "metadata.env=prod&metadata.team=red": lambda r: (
        r["metadata"].get("env") == "prod" and r["metadata"].get("team") == "red"
    ),
    "model=gpt-4o": lambda r: r["model"] == "gpt-4o",
    "success=false": lambda r: not r["success"],
    "status_code=429": lambda r: r["status_code"] == 429,
    "user=alice": lambda r: r["user"] == "alice",
    "metadata.env=dev&model=gpt-4o-mini": lambda r: r["metadata"].get("env") == "dev" and r["model"] == "gpt-4o-mini",
}


def _records() -> list[dict]:
    rng = random.Random(7)
    records = []
    for _ in range(60):
        metadata = {}
        if rng.random() < 0.8:
            metadata["env"] = rng.choice(["prod", "dev"])
        if rng.random() < 0.5:
            metadata["team"] = rng.choice(["red", "blue"])
        user = rng.choice(["alice", "bob", ""])
        if user:
            metadata["_user"] = user
        status = rng.choice([200, 200, 200, 429, 500])
        records.append(
            {
                "created_at": NOW - timedelta(hours=rng.randint(3, 90), minutes=rng.randint(0, 59)),
                "metadata": metadata,
                "user": user,
                "model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
                "provider": rng.choice(["openai", "azure-openai"]),
                "status_code": status,
                "success": status < 400,
                "prompt_tokens": rng.randint(0, 900),
                "latency_ms": float(rng.choice([40, 120, 350, 900, 2400, 7000])),
                "cost": str(Decimal(rng.randint(1, 10**6)) / 10**8),
            }
        )
    return records


def _value(record: dict, grouping: str) -> str | None:
    if grouping.startswith("metadata."):
        return record["metadata"].get(grouping.removeprefix("metadata."))
    if grouping == "user":
        return record["user"] or None
    return record[grouping]


def _in_window(records: list[dict], window: Window) -> list[dict]:
    created = dict(RequestLog.objects.filter(id__in=[r["id"] for r in records]).values_list("id", "created_at"))
    return [r for r in records if window.start <= created[uuid.UUID(r["id"])] < window.end]


def _expected(records: list[dict], window: Window, grouping: str, test) -> tuple[dict, int, dict, Counter]:
    """{value: [requests, errors, cost]}, the total, {value: p95 ms} and requests per status."""
    per_value: dict[str, list] = defaultdict(lambda: [0, 0, Decimal(0)])
    hists: dict[str, dict] = defaultdict(dict)
    statuses: Counter = Counter()
    total = 0
    for r in _in_window(records, window):
        if not test(r):
            continue
        total += 1
        statuses[r["status_code"]] += 1
        value = _value(r, grouping)
        if value is not None:
            row = per_value[value]
            row[0] += 1
            row[1] += 0 if r["success"] else 1
            row[2] += Decimal(r["cost"])
            histogram.add(hists[value], r["latency_ms"])
    p95 = {value: histogram.percentile(hist, 95) for value, hist in hists.items()}
    return dict(per_value), total, p95, statuses


def _rest_get(client, full_key: str, path: str, window: Window, query: str, **extra: str) -> dict:
    params = QueryDict(query, mutable=True)
    params["start"] = window.start.isoformat()
    params["end"] = (window.end - timedelta(seconds=1)).isoformat()
    params.update(extra)
    response = client.get(f"/api/v1/analytics/{path}?{params.urlencode()}", headers={"x-portkey-api-key": full_key})
    assert response.status_code == 200, response.content
    return response.json()


def _rest(client, full_key: str, window: Window, grouping: str, query: str) -> dict:
    paths = {"model": "models", "provider": "providers", "user": "users"}
    path = paths.get(grouping) or f"metadata/{grouping.removeprefix('metadata.')}"
    answer = _rest_get(client, full_key, f"groups/{path}", window, query, page_size="500")
    return {str(row["value"]): row for row in answer["data"]}


@pytest.fixture
def written(workspace, api_key):
    built = write_logs(workspace, api_key[0], _records())
    # The first batch of a workspace has no registry yet, so no pair keys: the rebuild fills in
    # its pairs, and a few hours are then made incomplete again.
    recompute.rebuild_rollups(workspace_id=workspace.id)
    assert PairRollup.objects.filter(workspace=workspace).exists()
    for record in built[::20]:  # three hours with logs lose their pairs: the raw-log fallback
        hour = datetime.fromisoformat(record["created_at"]).replace(minute=0, second=0, microsecond=0)
        PairRollup.objects.filter(workspace=workspace, bucket=hour).delete()
    clear_memo()
    return built


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start_hours=st.integers(0, 96),
    length_hours=st.integers(1, 96),
    grouping=st.sampled_from(GROUPINGS),
    query=st.sampled_from(sorted(FILTERS)),
)
def test_dashboard_rest_and_the_logs_agree(
    client, workspace, api_key, written, start_hours, length_hours, grouping, query
):
    end = NOW - timedelta(hours=start_hours) + timedelta(hours=1)
    window = Window(end - timedelta(hours=length_hours), end, "")
    log_filter = LogFilter(log_filter_data(QueryDict(query), window), queryset=RequestLog.objects.all())
    assert log_filter.is_valid()
    expected, total, p95, statuses = _expected(written, window, grouping, FILTERS[query])

    report = ds.group_report(workspace, window, grouping, log_filter=log_filter)
    shown = {str(row["raw"]): (row["requests"], row["errors"], Decimal(row["cost"])) for row in report["rows"]}
    assert shown == {value: tuple(row) for value, row in expected.items()}
    assert {str(row["raw"]): row["p95_latency"] for row in report["rows"]} == p95
    codes = ds.status_codes(ds.dimension_cells(workspace, window, log_filter))
    assert {row["code"]: row["requests"] for row in codes} == dict(statuses)
    assert report["total"]["requests"] == total
    not_set = [row for row in report["extra"] if row.get("not_set")]
    assert sum(row["requests"] for row in report["rows"] + report["extra"]) == total
    assert (not_set[0]["requests"] if not_set else 0) == total - sum(row[0] for row in expected.values())

    rest = _rest(client, api_key[1], window, grouping, query)
    assert {value: (row["requests"], row["errors"]) for value, row in rest.items()} == {
        value: (row[0], row[1]) for value, row in expected.items()
    }
    assert all(Decimal(str(rest[v]["cost"])) == round(row[2], 8) for v, row in expected.items())

    users = {r["user"] for r in _in_window(written, window) if r["user"] and FILTERS[query](r)}
    assert ds.unique_users(workspace, window, log_filter) == len(users)

    graph = _rest_get(client, api_key[1], "graphs/requests", window, query, interval="hour")
    assert graph["summary"]["total"] == total
    per_hour = {point["timestamp"]: point["total"] for point in graph["data_points"]}
    hours = ds.hourly(workspace, window, log_filter=log_filter)
    assert {t: n for t, n in per_hour.items() if n} == {
        t.isoformat().replace("+00:00", "Z"): cell.requests for t, cell in hours.items()
    }
