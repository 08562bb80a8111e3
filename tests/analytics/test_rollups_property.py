"""Property: whatever the logs, batch splits, arrival order and redeliveries, the rollups and the
key registry equal an aggregation of the same logs computed here in plain Python (with the
cap's "(other)" folding applied in arrival order), and rebuild_rollups gives the same totals
(folding in created_at order, which is the arrival order when logs arrive sorted).

Runs in the database of the pass (SQLite or Postgres, inside the test's transaction); the
``postgres`` variant commits every batch, as the Celery writer does."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics import histogram
from analytics.ingest import write_log_batch
from analytics.models import DimensionRollup, MetadataKey, MetadataKeySender, MetadataRollup, RequestLog

CAP = 3
OTHER = MetadataRollup.OTHER_VALUE
BASE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
ALPHABETS = {
    "env": ["prod", "dev", "staging"],
    "team": ["red", "blue", OTHER],  # a literal "(other)" is counted with the folded values
    "req": [f"r{i}" for i in range(12)],  # high cardinality: overflows the cap
}


@st.composite
def logs_strategy(draw) -> list[dict]:
    # Logs gather in a few random hours of the 3 days, so hours overflow the cap often.
    hours = draw(st.lists(st.integers(0, 71), min_size=1, max_size=3))
    log = st.fixed_dictionaries(
        {
            "ws": st.integers(0, 1),
            "second": st.builds(lambda h, s: h * 3600 + s, st.sampled_from(hours), st.integers(0, 3599)),
            "success": st.booleans(),
            "status_code": st.sampled_from([200, 201, 400, 429, 500]),
            "latency_ms": st.floats(0, 20_000, allow_nan=False),
            "prompt_tokens": st.integers(0, 5000),
            "completion_tokens": st.integers(0, 5000),
            "cost": st.none() | st.decimals(0, 5, places=8),
            "model": st.sampled_from(["gpt-4o", "gpt-4o-mini"]),
            "metadata": st.fixed_dictionaries(
                {"req": st.sampled_from(ALPHABETS["req"])},
                optional={key: st.sampled_from(ALPHABETS[key]) for key in ("env", "team")},
            ),
        }
    )
    return draw(st.lists(log, min_size=1, max_size=40))


@st.composite
def deliveries(draw, logs: list[dict]) -> tuple[bool, list[list[int]]]:
    """(shuffled?, deliveries): record indices split into batches, some delivered again later,
    sometimes together with the next batch (a partly written batch). Not shuffled = in
    (created_at, id) order, as the gateway sends them; ids follow the indices."""
    count = len(logs)
    shuffled = draw(st.booleans())
    in_time_order = sorted(range(count), key=lambda i: (logs[i]["second"], i))
    order = draw(st.permutations(range(count))) if shuffled else in_time_order
    cuts = sorted(draw(st.sets(st.integers(1, max(1, count - 1)), min_size=1, max_size=6)))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, count], strict=True) if order[a:b]]
    result: list[list[int]] = []
    for batch in batches:
        if result and draw(st.integers(0, 3)) == 0:
            result.append(result[draw(st.integers(0, len(result) - 1))] + batch)
        else:
            result.append(batch)
        if draw(st.integers(0, 3)) == 0:
            result.append(list(batch))
    return shuffled, result


def make_records(logs: list[dict], workspaces) -> list[dict]:
    records = []
    for i, log in enumerate(logs):
        workspace = workspaces[log["ws"]]
        records.append(
            {
                "id": str(uuid.UUID(int=i + 1)),
                "created_at": (BASE + timedelta(seconds=log["second"])).isoformat(),
                "workspace_id": workspace.id,
                "provider": "openai",
                **{k: v for k, v in log.items() if k not in ("ws", "second", "cost")},
                "cost": None if log["cost"] is None else str(log["cost"]),
            }
        )
    return records


# --- The model: plain Python over the records -------------------------------------------------


def _add(totals: dict, record: dict) -> None:
    created = datetime.fromisoformat(record["created_at"])
    totals["requests"] += 1
    totals["errors"] += not record["success"]
    totals["prompt_tokens"] += record["prompt_tokens"]
    totals["completion_tokens"] += record["completion_tokens"]
    if record["cost"] is not None:
        totals["cost"] += Decimal(record["cost"])
        totals["priced_requests"] += 1
    totals["latency_sum_ms"] += record["latency_ms"]
    histogram.add(totals["latency_hist"], record["latency_ms"])
    totals["last_seen"] = max(totals["last_seen"] or created, created)


def _totals() -> dict:
    return {
        "requests": 0,
        "errors": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost": Decimal(0),
        "priced_requests": 0,
        "latency_sum_ms": 0.0,
        "latency_hist": {},
        "last_seen": None,
    }


def _hour(record: dict) -> datetime:
    return datetime.fromisoformat(record["created_at"]).replace(minute=0, second=0, microsecond=0)


def expected_rollups(records: list[dict], arrival: list[list[int]]) -> tuple[dict, dict]:
    """Metadata and dimension rows as the documented rules define them, for this arrival."""
    metadata: dict = defaultdict(_totals)
    dimensions: dict = defaultdict(_totals)
    slots: dict = defaultdict(set)  # (ws, key, hour) -> values holding a row
    seen: set[int] = set()
    for delivery in arrival:
        new = sorted({i for i in delivery if i not in seen}, key=lambda i: (records[i]["created_at"], records[i]["id"]))
        seen.update(new)
        for i in new:
            record = records[i]
            ws, hour = record["workspace_id"], _hour(record)
            api_key = 0
            status = record["status_code"]
            _add(dimensions[(ws, hour, "openai", record["model"], api_key, status // 100, status)], record)
            for key, value in record["metadata"].items():
                held = slots[(ws, key, hour)]
                if value != OTHER and value not in held and len(held) < CAP:
                    held.add(value)
                _add(metadata[(ws, key, hour, value if value in held else OTHER)], record)
    return dict(metadata), dict(dimensions)


def expected_registry(records: list[dict]) -> dict:
    registry: dict = {}
    for record in records:
        created = datetime.fromisoformat(record["created_at"])
        for key, value in record["metadata"].items():
            entry = registry.setdefault(
                (record["workspace_id"], key), {"first": created, "last": created, "requests": 0, "top": {}}
            )
            entry["first"], entry["last"] = min(entry["first"], created), max(entry["last"], created)
            entry["requests"] += 1
            if value != OTHER:
                entry["top"][value] = entry["top"].get(value, 0) + 1
    return registry


def expected_senders(records: list[dict]) -> dict:
    """(workspace, key, api key or 0) -> (first seen, last seen, requests)."""
    found: dict = {}
    for record in records:
        created = datetime.fromisoformat(record["created_at"])
        for key in record["metadata"]:
            pair = (record["workspace_id"], key, record.get("api_key_id") or 0)
            first, last, requests = found.get(pair, (created, created, 0))
            found[pair] = (min(first, created), max(last, created), requests + 1)
    return found


def senders() -> dict:
    return {
        (s.workspace_id, s.key, s.api_key_id): (s.first_seen, s.last_seen, s.requests)
        for s in MetadataKeySender.objects.all()
    }


# --- Comparing -------------------------------------------------------------------------------


def stored(model, key_fields: tuple[str, ...]) -> dict:
    rows = {}
    for row in model.objects.all():
        rows[tuple(getattr(row, name) for name in key_fields)] = {name: getattr(row, name) for name in _totals()}
    return rows


def assert_same(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, want in expected.items():
        got = actual[key]
        assert got["latency_sum_ms"] == pytest.approx(want["latency_sum_ms"]), key
        assert {**got, "latency_sum_ms": 0} == {**want, "latency_sum_ms": 0}, key


def check(records: list[dict], arrival: list[list[int]]) -> None:
    metadata, dimensions = expected_rollups(records, arrival)
    assert_same(stored(MetadataRollup, ("workspace_id", "key", "bucket", "value")), metadata)
    dimension_key = ("workspace_id", "bucket", "provider", "model", "api_key_id", "status_class", "status_code")
    assert_same(stored(DimensionRollup, dimension_key), dimensions)


def run_property(workspaces, logs: list[dict], plan: tuple[bool, list[list[int]]]) -> None:
    for model in (MetadataRollup, DimensionRollup, MetadataKey, MetadataKeySender, RequestLog):
        model.objects.all().delete()
    shuffled, arrival = plan
    records = make_records(logs, workspaces)
    for delivery in arrival:
        write_log_batch([records[i] for i in delivery])
    check(records, arrival)
    registry = {(k.workspace_id, k.key): k for k in MetadataKey.objects.all()}
    expected = expected_registry(records)
    assert registry.keys() == expected.keys()
    for pair, want in expected.items():
        got = registry[pair]
        assert (got.first_seen, got.last_seen, got.requests) == (want["first"], want["last"], want["requests"])
        assert (got.top_values, got.distinct_values) == (want["top"], len(want["top"]))
    assert senders() == expected_senders(records)
    ingested = stored(MetadataRollup, ("workspace_id", "key", "bucket", "value"))

    call_command("rebuild_rollups", chunk_size=7, stdout=StringIO())
    in_time_order = [sorted(range(len(records)), key=lambda i: (records[i]["created_at"], records[i]["id"]))]
    check(records, in_time_order)
    assert senders() == expected_senders(records)  # a full rebuild recomputes them
    if not shuffled:
        assert_same(stored(MetadataRollup, ("workspace_id", "key", "bucket", "value")), ingested)
    for pair, want in expected.items():
        assert MetadataKey.objects.get(workspace_id=pair[0], key=pair[1]).requests == want["requests"]


PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.django_db
@PROPERTY_SETTINGS
@given(data=st.data())
def test_rollups_equal_a_raw_aggregation(workspace, other_workspace, settings, data):
    settings.ROLLUP_VALUE_CAP = CAP
    logs = data.draw(logs_strategy())
    run_property((workspace, other_workspace), logs, data.draw(deliveries(logs)))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@settings(parent=PROPERTY_SETTINGS, max_examples=10)
@given(data=st.data())
def test_rollups_equal_a_raw_aggregation_with_committed_batches(workspace, other_workspace, settings, data):
    settings.ROLLUP_VALUE_CAP = CAP
    logs = data.draw(logs_strategy())
    run_property((workspace, other_workspace), logs, data.draw(deliveries(logs)))
