"""Two-key rollups (analytics.pair_rollups, analytics.reads.pairs): written by write_log_batch
for the workspace's pair keys within their caps, rebuilt, pruned by retention, and read by the
engine for "group by B where A = v" only when complete, with the raw logs' answer. Runs on
SQLite and on Postgres (the SQL upsert)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.http import QueryDict

from analytics import histogram, pair_rollups, recompute, retention
from analytics.filters import LogFilter
from analytics.forms import log_filter_data
from analytics.ingest import write_log_batch
from analytics.models import MetadataKey, MetadataRollup, PairRollup, RequestLog
from analytics.reads.cache import Question, compute
from analytics.reads.engine import Grouping, choose_source
from analytics.reads.window import Window
from tests.analytics.records import log_record
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW = (T0, T0 + timedelta(hours=3))


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def flag(workspace, *keys: str) -> None:
    """Registry rows flagged ``paired`` (as an admin would), before any log."""
    for key in keys:
        MetadataKey.objects.create(workspace=workspace, key=key, first_seen=T0, last_seen=T0)
    pair_rollups.set_paired(workspace_id=workspace.id, keys=keys)


def write(workspace, *metadatas: dict, minutes: float = 1, **overrides) -> None:
    write_log_batch(
        [
            log_record(
                workspace, created_at=at(minutes + i / 60), metadata=metadata, latency_ms=100.0 * (i + 1), **overrides
            )
            for i, metadata in enumerate(metadatas)
        ]
    )


def pairs(**filters) -> dict[tuple, int]:
    rows = PairRollup.objects.filter(**filters)
    return {(r.key_a, r.value_a, r.key_b, "(not set)" if r.b_missing else r.value_b): r.requests for r in rows}


def log_filter(query: str) -> LogFilter:
    window = Window(*WINDOW, "")
    found = LogFilter(log_filter_data(QueryDict(query), window), queryset=RequestLog.objects.all())
    assert found.is_valid()
    return found


def source_model(workspace, query: str, group: str):
    source = choose_source(
        workspace=workspace, log_filter=log_filter(query), window=WINDOW, grouping=Grouping.parse(group)
    )
    return source.queryset.model


def answer(workspace, query: str, group: str, columns=("group",)) -> dict:
    cells = compute(workspace, *WINDOW, Question(columns, group, hist=True), log_filter(query))
    return {
        group: (c.requests, c.errors, c.cost, c.prompt_tokens, c.hist, c.last_seen, round(c.latency_sum_ms, 6))
        for group, c in cells.items()
    }


def test_the_writer_keeps_every_ordered_pair_of_the_pair_keys(workspace):
    flag(workspace, "environment", "feature")
    write(
        workspace,
        {"environment": "production", "feature": "chat", "team": "red"},
        {"environment": "production", "feature": "search"},
        {"environment": "production"},
        {"feature": "chat"},
    )
    assert pairs() == {
        ("environment", "production", "feature", "chat"): 1,
        ("environment", "production", "feature", "search"): 1,
        ("environment", "production", "feature", "(not set)"): 1,
        ("feature", "chat", "environment", "production"): 1,
        ("feature", "chat", "environment", "(not set)"): 1,
        ("feature", "search", "environment", "production"): 1,
    }
    chat = PairRollup.objects.get(key_a="environment", value_b="chat")
    assert (chat.bucket, chat.latency_hist, chat.prompt_tokens) == (T0, histogram.add({}, 100.0), 120)
    # Complete: the rows of A = v add up to MetadataRollup's count for A = v.
    prod = PairRollup.objects.filter(key_a="environment", value_a="production").aggregate(n=Sum("requests"))["n"]
    assert prod == MetadataRollup.objects.get(key="environment", value="production").requests == 3


def test_pair_keys_are_the_flagged_then_the_most_used_low_cardinality_keys(settings):
    settings.ROLLUP_PAIR_KEYS = 3
    settings.ROLLUP_PAIR_MAX_VALUES = 32
    candidates = [("request_id", False, 900, 100), ("b", False, 500, 3), ("a", False, 500, 4), ("c", False, 10, 2)]
    assert pair_rollups.choose_pair_keys(candidates) == ("a", "b", "c")
    assert pair_rollups.choose_pair_keys([*candidates, ("z", True, 1, 100)]) == ("a", "b", "z")
    assert pair_rollups.choose_pair_keys([("a", False, 5, 3)]) == ()  # one key: no pairs
    settings.ROLLUP_PAIR_KEYS = 0
    assert pair_rollups.pair_keys([1]) == {}


def test_the_first_batch_of_a_new_workspace_has_no_pairs_and_the_next_ones_do(workspace):
    write(workspace, {"environment": "production", "feature": "chat"})
    assert not PairRollup.objects.exists()  # no registry yet: no pair keys
    write(workspace, {"environment": "production", "feature": "chat"}, minutes=70)
    assert pairs(bucket=T0 + timedelta(hours=1)) == {
        ("environment", "production", "feature", "chat"): 1,
        ("feature", "chat", "environment", "production"): 1,
    }
    # The first hour is incomplete for A = production: read from the logs; the second from pairs.
    assert source_model(workspace, "metadata.environment=production", "metadata.feature") is RequestLog
    assert (
        choose_source(
            workspace=workspace,
            log_filter=log_filter("metadata.environment=production"),
            window=(T0 + timedelta(hours=1), T0 + timedelta(hours=2)),
            grouping=Grouping.parse("metadata.feature"),
        ).queryset.model
        is PairRollup
    )


def test_values_past_the_cap_get_no_pair_rows(workspace, settings):
    settings.ROLLUP_PAIR_MAX_VALUES = 2
    flag(workspace, "environment", "feature")
    write(
        workspace,
        {"environment": "production", "feature": "chat"},
        {"environment": "staging", "feature": "chat"},
        {"environment": "development", "feature": "chat"},  # a third value of A in the hour
        {"environment": "production", "feature": "search"},
        {"environment": "production", "feature": "summarise"},  # a third value of B for production
        {"environment": "production"},  # "not set" takes no slot
    )
    write(workspace, {"environment": "qa", "feature": "chat"}, minutes=5)  # a later batch: still capped
    environment = pairs(key_a="environment")
    assert {value for _key, value, _b, _vb in environment} == {"production", "staging"}
    assert environment == {
        ("environment", "production", "feature", "chat"): 1,
        ("environment", "production", "feature", "search"): 1,
        ("environment", "production", "feature", "(not set)"): 1,
        ("environment", "staging", "feature", "chat"): 1,
    }
    # A = production is incomplete (its third feature was left out), A = staging is complete.
    assert source_model(workspace, "metadata.environment=production", "metadata.feature") is RequestLog
    assert source_model(workspace, "metadata.environment=staging", "metadata.feature") is PairRollup
    assert source_model(workspace, "metadata.environment=development", "metadata.feature") is RequestLog


def test_complete_pairs_answer_as_the_raw_logs_do(workspace):
    flag(workspace, "environment", "feature", "team")
    metadatas = [
        {"environment": "production", "feature": "chat", "team": "red"},
        {"environment": "production", "feature": "search", "team": "blue"},
        {"environment": "production", "team": "red"},
        {"environment": "staging", "feature": "chat"},
        {"feature": "chat"},
    ]
    write(workspace, *metadatas, success=False)
    write(workspace, *metadatas, minutes=65, cost=None)
    write(workspace, *metadatas[:2], minutes=130)
    for query, group in [
        ("metadata.environment=production", "metadata.feature"),
        ("metadata.environment__in=production,staging", "metadata.team"),
        ("metadata.feature=chat", "metadata.environment"),
    ]:
        assert source_model(workspace, query, group) is PairRollup
        from_pairs = [answer(workspace, query, group), answer(workspace, query, group, ("group", "hour"))]
        PairRollup.objects.all().delete()
        assert source_model(workspace, query, group) is RequestLog
        assert [answer(workspace, query, group), answer(workspace, query, group, ("group", "hour"))] == from_pairs
        recompute.rebuild_rollups(workspace_id=workspace.id)


def test_pairs_need_a_rolled_up_filter_value(workspace, settings):
    settings.ROLLUP_VALUE_CAP = 1
    flag(workspace, "environment", "feature")
    write(workspace, {"environment": "production", "feature": "chat"}, {"environment": "staging", "feature": "chat"})
    # staging was folded into "(other)" in MetadataRollup: its count there is not its own.
    assert source_model(workspace, "metadata.environment=staging", "metadata.feature") is RequestLog


def test_rebuild_recomputes_pairs_and_chooses_keys_from_the_logs_without_a_registry(workspace):
    write(workspace, {"environment": "production", "feature": "chat", "request_id": "r1"})
    write(workspace, {"environment": "staging", "feature": "chat", "request_id": "r2"}, minutes=2)
    before = pairs()
    MetadataKey.objects.all().delete()
    PairRollup.objects.all().delete()
    out = StringIO()
    call_command("rebuild_rollups", stdout=out)
    assert "pair row(s)" in out.getvalue()
    after = pairs()
    assert after[("environment", "production", "feature", "chat")] == 1  # the first log has pairs now
    assert {key for pair in after for key in (pair[0], pair[2])} == {"environment", "feature", "request_id"}
    assert set(before) < set(after)
    assert source_model(workspace, "metadata.environment=production", "metadata.feature") is PairRollup


def test_retention_prunes_pairs_with_the_other_rollups(workspace, settings):
    settings.ROLLUP_RETENTION_DAYS = 10
    flag(workspace, "environment", "feature")
    write(workspace, {"environment": "production", "feature": "chat"})
    assert PairRollup.objects.exists()
    retention.apply_retention(T0 + timedelta(days=500))
    assert not PairRollup.objects.exists()
    assert not MetadataRollup.objects.exists()


def test_an_admin_flags_a_key_without_touching_its_counters(workspace, admin_client):
    write(workspace, {"environment": "production"})
    key = MetadataKey.objects.get(key="environment")
    MetadataKey.objects.filter(pk=key.pk).update(requests=99)  # the writer moved on meanwhile
    response = admin_client.post(f"/admin/analytics/metadatakey/{key.pk}/change/", {"paired": "on"})
    assert response.status_code == 302, response.content
    key.refresh_from_db()
    assert (key.paired, key.requests) == (True, 99)
    event = AuditEvent.objects.get(action="metadata_key.update")
    assert (event.via, event.before["paired"], event.after["paired"]) == ("admin", False, True)


def test_pair_rows_sum_each_log_once_per_pair_as_a_per_log_count_would():
    """The writer adds a log once, to its combination of pair key values, and sums each pair row
    from the combinations holding it: the same rows, order and metrics as adding every log to
    every pair it belongs to (the reference below), over missing keys, odd values, two
    workspaces and two hours."""
    import random
    from decimal import Decimal

    from analytics.reads.metrics import Metrics
    from analytics.rollup_batch import aggregate, cell_metrics, hour_of, metadata_items

    rng = random.Random(7)
    keys = ("environment", "feature", "team")
    rows = []
    for i in range(600):
        metadata = {}
        for key in keys:
            if rng.random() < 0.8:
                metadata[key] = rng.choice(["a", "b", "c", "d" * 200, 5, True])
        metadata["other"] = f"x{i % 5}"
        rows.append(
            {
                "id": __import__("uuid").UUID(int=i + 1),
                "created_at": T0 + timedelta(minutes=rng.randrange(0, 120)),
                "workspace_id": 1 + i % 2,
                "api_key_id": None,
                "provider": "openai",
                "model": "m",
                "status_code": 200 if i % 7 else 500,
                "success": bool(i % 7),
                "latency_ms": rng.choice([12.5, 250.0, 1200.0]),
                "prompt_tokens": rng.randrange(0, 50),
                "completion_tokens": rng.randrange(0, 50),
                "cached_prompt_tokens": rng.choice([0, 0, 3]),
                "cache_write_tokens": 0,
                "reasoning_tokens": rng.choice([0, 2]),
                "audio_prompt_tokens": 0,
                "audio_completion_tokens": 0,
                "cost": rng.choice([None, Decimal("0.00001234")]),
                "metadata": metadata,
            }
        )
    pair_keys = {1: keys, 2: keys[:2]}
    batch = aggregate(rows, pair_keys)

    # The reference: every log into every (A = its value, B = its value or not set), in time order.
    reference: dict[tuple, dict[tuple, list]] = {}
    for row in sorted(rows, key=lambda row: (row["created_at"], row["id"].int)):
        workspace_id, bucket = row["workspace_id"], hour_of(row["created_at"])
        present = dict(metadata_items(row["metadata"]))
        paired = pair_keys[workspace_id]
        for key_a in paired:
            if key_a not in present:
                continue
            cells = reference.setdefault((workspace_id, key_a, bucket), {})
            for key_b in paired:
                if key_b != key_a:
                    cells.setdefault((present[key_a], key_b, present.get(key_b)), []).append(row)

    def metrics_of_rows(cell_rows: list[dict]) -> Metrics:
        metrics = Metrics()
        for _key, part in aggregate(cell_rows).dimension_metrics:
            metrics.add(part)
        return metrics

    assert list(batch.pairs) == list(reference)
    for group, cells in reference.items():
        assert list(batch.pairs[group]) == list(cells)  # same cells, same first-come order
        for cell, expected in cells.items():
            got, want = cell_metrics(batch.pairs[group][cell]), metrics_of_rows(expected)
            assert got.latency_sum_ms == pytest.approx(want.latency_sum_ms)
            got.latency_sum_ms = want.latency_sum_ms
            assert got == want, (group, cell)
    assert cell_metrics([]) == Metrics()
