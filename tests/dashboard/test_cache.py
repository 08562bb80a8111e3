"""analytics.reads.cache: what a page reads through the one closed-period cache (shared cache,
then the per-process memo of a window's closed part), filtered or not, equals what the database
says, view after view, and late logs show up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.models import RequestLog
from analytics.reads import cache as dashboard_cache
from analytics.reads.cache import Question
from tests.dashboard.conftest import write_logs

pytestmark = pytest.mark.django_db


def _comparable(cells: dict) -> dict:
    return {group: (c.requests, c.errors, c.prompt_tokens, c.cost, dict(c.hist)) for group, c in cells.items()}


def test_cached_cells_equal_a_direct_query_on_every_view(workspace, api_key):
    now = timezone.now()
    write_logs(
        workspace,
        api_key[0],
        [
            {"created_at": now - timedelta(hours=h), "metadata": {"feature": f"f{h % 3}"}, "success": h % 4 != 0}
            for h in (1, 3, 5, 26, 30, 50, 70)
        ],
    )
    dashboard_cache.clear_memo()
    start, end = now - timedelta(days=3), now + timedelta(hours=1)
    question = Question(("key", "value"), hist=True)

    def through_caches():
        workspace.refresh_from_db()
        return dashboard_cache.read(workspace, start, end, question)

    direct = _comparable(dashboard_cache.compute(workspace, start, end, question))
    first = through_caches()
    assert _comparable(first) == direct
    # A careless caller cannot leak into the next view.
    first[("feature", "f0")].requests += 1000
    first[("feature", "f0")].hist["0"] = 10**6
    assert _comparable(through_caches()) == direct
    assert _comparable(through_caches()) == direct
    # A late log in a closed hour: a new data generation, so neither cache serves the old part.
    write_logs(workspace, api_key[0], [{"created_at": now - timedelta(hours=50), "metadata": {"feature": "f9"}}])
    assert through_caches()[("feature", "f9")].requests == 1


def test_memoised_cells_leave_the_garbage_collectors_sight(workspace, api_key):
    """Long-lived memo entries must not cost full collections (they once did, ~100 ms each,
    and the fix was a request-time gc.freeze() that leaked): after a collection or two the cyclic
    collector tracks none of them."""
    import gc

    now = timezone.now()
    write_logs(
        workspace,
        api_key[0],
        [{"created_at": now - timedelta(hours=h), "metadata": {"feature": f"f{h}"}} for h in (30, 50)],
    )
    dashboard_cache.clear_memo()
    dashboard_cache.read(workspace, now - timedelta(days=3), now, Question(("key", "value"), hist=True))
    for _ in range(4):  # a collection untracks a tuple once the ones inside it are untracked
        gc.collect()
    held = list(dashboard_cache._MEMO.values())
    assert held and all(len(entry) for entry in held)
    assert not any(gc.is_tracked(entry) or any(gc.is_tracked(cell) for cell in entry.values()) for entry in held)


def test_a_filtered_page_reads_closed_days_from_the_cache_and_sees_late_logs(workspace, api_key, owner_client):
    """A filtered Summary over closed days is cached like an unfiltered one (by the data
    generation): the second view asks fewer queries, and a late log in a closed hour shows."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    now = timezone.now()
    days = [now - timedelta(days=d, hours=3) for d in (1, 2, 3)]
    write_logs(workspace, api_key[0], [{"created_at": t, "metadata": {"env": "prod", "feature": "chat"}} for t in days])
    url = f"/w/{workspace.slug}/summary/?range=7d&group=metadata.feature&metadata.env__ne=dev"

    def chat_requests():
        with CaptureQueriesContext(connection) as queries:
            response = owner_client.get(url)
        assert response.status_code == 200
        row = next(r for r in response.context["rows"] if r["raw"] == "chat")
        return row["requests"], len(queries)

    (first, cold), (second, warm) = chat_requests(), chat_requests()
    assert first == second == 3
    assert warm < cold
    write_logs(workspace, api_key[0], [{"created_at": days[1], "metadata": {"env": "prod", "feature": "chat"}}])
    assert chat_requests()[0] == 4


def test_rest_groups_and_graphs_after_a_page_are_answered_from_its_cache(workspace, api_key, owner_client):
    """REST asks the cache what the pages asked (same question, filter and window): after the
    Summary and Overview pages have read a closed window, neither the groups nor the latency
    graph reads a log; a late log in a closed hour (a new data generation) shows in the next
    answer."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.analytics.api_helpers import get

    end = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    start = end - timedelta(days=3)
    days = [end - timedelta(days=d, hours=2) for d in (0, 1, 2)]
    prod_chat = {"metadata": {"env": "prod", "feature": "chat"}}
    write_logs(workspace, api_key[0], [{"created_at": t, **prod_chat} for t in days])
    # A filter the rollups cannot answer, so that a miss would read the logs table.
    window = {"start": start.isoformat(), "metadata.env__ne": "dev"}
    page = owner_client.get(
        f"/w/{workspace.slug}/summary/", {**window, "end": end.isoformat(), "group": "metadata.feature"}
    )
    assert page.status_code == 200
    assert next(r for r in page.context["rows"] if r["raw"] == "chat")["requests"] == 3
    # The Overview's hourly chart (with latency) asks what the hourly latency graph asks.
    assert owner_client.get(f"/w/{workspace.slug}/", {**window, "end": end.isoformat()}).status_code == 200
    rest = {**window, "end": (end - timedelta(seconds=1)).isoformat()}  # REST's end is inclusive

    def rest_answers():
        with CaptureQueriesContext(connection) as queries:
            groups = get(owner_client, "/api/v1/analytics/groups/metadata/feature", api_key[1], **rest)
            graph = get(owner_client, "/api/v1/analytics/graphs/latency", api_key[1], **rest)
        assert groups.status_code == graph.status_code == 200, (groups.json(), graph.json())
        assert groups.json()["source"] == graph.json()["source"] == "logs"
        chat = next(row for row in groups.json()["data"] if row["value"] == "chat")
        logs_read = [q["sql"] for q in queries if RequestLog._meta.db_table in q["sql"]]
        hours = sum(point["p50"] is not None for point in graph.json()["data_points"])
        return chat["requests"], hours, logs_read

    assert rest_answers() == (3, 3, [])
    write_logs(workspace, api_key[0], [{"created_at": days[1] + timedelta(hours=1), **prod_chat}])
    requests, hours, logs_read = rest_answers()
    assert (requests, hours) == (4, 4)
    assert logs_read  # the new generation's cells were read from the logs once
    assert rest_answers() == (4, 4, [])
