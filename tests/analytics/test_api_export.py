"""GET /api/v1/logs/export: the list's filters, fixed columns, streamed in keyset chunks."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from analytics import selectors
from analytics.models import RequestLog
from tests.analytics.api_helpers import ago, get, write_many

pytestmark = pytest.mark.django_db

URL = "/api/v1/logs/export"


@pytest.fixture
def key(api_key):
    return api_key[1]


@pytest.fixture
def logs(workspace, api_key):
    same = ago(hours=1)
    prod = write_many(
        workspace,
        api_key[0],
        [
            {
                "created_at": same - timedelta(seconds=i % 3),
                "metadata": {"env": "prod", "note": 'a "q", v'},
                "finish_reasons": ["stop", "length"],
            }
            for i in range(12)
        ],
    )
    dev = write_many(workspace, None, [{"metadata": {"env": "dev"}, "cost": None} for _ in range(5)])
    return prod, dev


def body_of(response) -> bytes:
    assert response.streaming
    return b"".join(response.streaming_content)


def test_csv_has_the_fixed_columns_and_every_filtered_row(client, key, logs, monkeypatch):
    monkeypatch.setattr(selectors, "EXPORT_CHUNK", 5)
    prod, _ = logs
    response = get(client, URL, key, **{"metadata.env": "prod"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="portico-logs-acme-')
    rows = list(csv.DictReader(io.StringIO(body_of(response).decode())))
    assert tuple(rows[0]) == selectors.EXPORT_COLUMNS
    assert len(rows) == RequestLog.objects.filter(metadata__env="prod").count() == 12
    assert {row["id"] for row in rows} == {r["id"] for r in prod}
    assert json.loads(rows[0]["metadata"]) == {"env": "prod", "note": 'a "q", v'}
    assert rows[0]["workspace"] == "acme"
    assert rows[0]["success"] == "true"
    assert json.loads(rows[0]["finish_reasons"]) == ["stop", "length"]


def test_chunks_walk_equal_timestamps_without_duplicates(workspace):
    same = ago(hours=1)
    write_many(workspace, records=[{"created_at": same} for _ in range(11)])
    queryset = RequestLog.objects.filter(workspace=workspace)
    chunks = list(selectors.export_chunks(queryset, chunk_size=4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    exported = [row[0] for chunk in chunks for row in chunk]
    assert len(set(exported)) == 11


def test_jsonl_has_one_object_per_log(client, key, logs, monkeypatch):
    monkeypatch.setattr(selectors, "EXPORT_CHUNK", 4)
    response = get(client, URL, key, format="jsonl")
    assert response["Content-Type"] == "application/x-ndjson"
    lines = body_of(response).decode().splitlines()
    assert len(lines) == 17
    docs = [json.loads(line) for line in lines]
    assert list(docs[0]) == list(selectors.EXPORT_COLUMNS)
    assert {doc["metadata"]["env"] for doc in docs} == {"prod", "dev"}
    assert sum(doc["cost"] is None for doc in docs) == 5
    assert {doc["metadata"]["env"]: doc["finish_reasons"] for doc in docs} == {"prod": ["stop", "length"], "dev": None}


def test_the_export_uses_the_list_filters(client, key, logs):
    response = get(client, URL, key, format="jsonl", api_key="999")
    assert body_of(response) == b""
    response = get(client, URL, key, format="jsonl", start=ago(days=30).isoformat(), end=ago(days=20).isoformat())
    assert body_of(response) == b""


@pytest.mark.parametrize("export_format", ["csv", "jsonl"])
def test_a_token_range_past_the_columns_maximum_exports_nothing_or_everything(client, key, logs, export_format):
    # Beyond a 32-bit column Django compiles "min" to no rows and "max" to every row.
    past = str(2**40)
    nothing = body_of(get(client, URL, key, format=export_format, prompt_token_min=past, cache_write_tokens_min=past))
    assert nothing.decode().count("\n") == (1 if export_format == "csv" else 0)  # the CSV header only
    everything = body_of(get(client, URL, key, format=export_format, audio_prompt_tokens_max=past))
    assert everything.decode().count("\n") == 17 + (export_format == "csv")


def test_an_unknown_format_is_a_400(client, key):
    response = get(client, URL, key, format="xml")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "format"


def test_a_bad_filter_is_a_json_400_whatever_accept_says(client, key):
    response = client.get(URL, {"start": "x"}, headers={"x-portkey-api-key": key, "Accept": "text/csv"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "start"


@pytest.mark.django_db(transaction=True)
def test_under_asgi_the_export_streams_an_async_iterator(workspace, api_key):
    write_many(workspace, records=[{} for _ in range(7)])

    async def fetch():
        response = await AsyncClient().get(URL, {"format": "jsonl"}, headers={"x-portkey-api-key": api_key[1]})
        assert response.is_async
        return b"".join([chunk async for chunk in response.streaming_content])

    assert len(async_to_sync(fetch)().splitlines()) == 7


@pytest.mark.postgres
@pytest.mark.parametrize("export_format", ["csv", "jsonl"])
def test_postgres_formats_rows_exactly_as_the_generic_path(workspace, api_key, export_format, monkeypatch):
    monkeypatch.setattr(selectors, "EXPORT_CHUNK", 3)
    write_many(
        workspace,
        api_key[0],
        [
            {"created_at": ago(hours=1), "cost": None, "ttft_ms": 12.25, "span_name": 'a "quoted", name'},
            {"created_at": ago(hours=1), "success": False, "status_code": 500, "latency_ms": 1e-05},
            {"created_at": ago(hours=2), "metadata": {"k": "line\nbreak", "q": 'x"y'}, "user": ""},
            {"created_at": ago(hours=3), "is_stream": True, "finish_reasons": ["stop", "length"]},
            {"created_at": ago(hours=3), "finish_reasons": ["end_turn"]},
            {
                "created_at": ago(hours=4),
                "config_id": "inline",
                "attempts": [
                    {"target": "config.targets[0]", "provider": "@a", "status": 503, "ms": 12.5},
                    {"target": "config.targets[1]", "provider": "@b", "status": 200, "ms": 8.25, "cache": "MISS"},
                ],
            },
            {"created_at": ago(hours=3)},
        ],
    )
    queryset = RequestLog.objects.filter(workspace=workspace)
    fast = b"".join(selectors.export_lines(queryset, export_format=export_format, workspace_slug="acme"))
    encode = selectors.csv_lines if export_format == "csv" else selectors.jsonl_lines
    generic = b"".join(encode(selectors.export_chunks(queryset), workspace_slug="acme"))
    if export_format == "csv":
        assert list(csv.reader(io.StringIO(fast.decode()))) == list(csv.reader(io.StringIO(generic.decode())))
    else:
        for a, b in zip(fast.splitlines(), generic.splitlines(), strict=True):
            a, b = json.loads(a), json.loads(b)
            assert {k: (a[k], b[k]) for k in a if a[k] != b[k]} == {}
    assert len(fast.splitlines()) >= 5
