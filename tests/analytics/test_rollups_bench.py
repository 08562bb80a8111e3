"""bench/analytics_data.py: the synthetic logs load (COPY on Postgres, ORM on SQLite) and their
rollups are built by the rebuild path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from analytics.models import DimensionRollup, MetadataKey, MetadataRollup, RequestLog
from bench import analytics_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def bench_workspaces():
    return analytics_data.bench_workspaces(2, days=3)


def load(workspaces, count: int) -> None:
    end = datetime.now(UTC)
    start = end - timedelta(days=3)
    if connection.vendor == "postgresql":
        analytics_data.load_postgres_parallel(workspaces=workspaces, start=start, end=end, seed=3, count=count, jobs=1)
    else:
        analytics_data.load_orm(analytics_data.LogGenerator(workspaces=workspaces, start=start, end=end, seed=3), count)


def test_the_generated_logs_load_and_roll_up(bench_workspaces):
    load(bench_workspaces, 3000)
    logs = RequestLog.objects.filter(workspace_id__in=[w for w, _keys in bench_workspaces])
    assert logs.count() == 3000
    assert 0.01 < logs.filter(success=False).count() / 3000 < 0.06
    assert logs.filter(cost__isnull=True).exists() and logs.filter(api_key__isnull=True).exists()
    sample = logs.first()
    assert set(sample.metadata) - {"experiment"} == set(analytics_data.METADATA_CARDINALITY) - {"experiment"}

    assert analytics_data.build_rollups([w for w, _keys in bench_workspaces], jobs=1) == 3000
    assert sum(DimensionRollup.objects.values_list("requests", flat=True)) == 3000
    environment = MetadataRollup.objects.filter(key="environment")
    assert sum(environment.values_list("requests", flat=True)) == 3000
    assert set(environment.values_list("value", flat=True)) == set(analytics_data.NAMED_VALUES["environment"])
    assert MetadataKey.objects.filter(key="request_id").count() == 2


def test_a_second_run_replaces_the_bench_data(bench_workspaces):
    load(bench_workspaces, 500)
    again = analytics_data.bench_workspaces(2, days=3)
    assert again == bench_workspaces
    assert RequestLog.objects.count() == 0
