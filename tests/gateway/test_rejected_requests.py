"""A rejected request keeps its context on the log: workspace and key defaults, header-mapped
values, the valid part of the request metadata and ``_user``, with what was refused named in
``metadata_changes``; so metadata filters, Summary and the Errors page count the failure."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.http import QueryDict

from analytics.dashboard_selectors import group_table, top_failing_metadata
from analytics.filters import LogFilter
from analytics.models import RequestLog
from analytics.reads.window import Window
from gateway.auth import key_cache
from workspaces import services

BODY = {"model": "gpt-4o-mini", "user": "u1", "messages": [{"role": "user", "content": "hi"}]}
# What every rejected request below could still resolve.
CONTEXT = {"environment": "production", "team": "search", "x-team-id": "T42", "tenant": "acme"}


@pytest.fixture
def ctx_gw(gw, settings):
    settings.HEADERS_TO_METADATA = ["x-team-id"]
    services.workspace_update(workspace=gw.workspace, default_metadata={"environment": "production"})
    services.api_key_update(api_key=gw.api_key, default_metadata={"team": "search"})
    key_cache.clear()
    return gw


def post(gw, metadata: object = None, *, body: bytes | None = None, **headers: str):
    sent = {**gw.headers(), "x-team-id": "T42", "baggage": "tenant=acme", "content-type": "application/json"}
    if metadata is not None:
        sent["x-portkey-metadata"] = metadata if isinstance(metadata, str) else orjson.dumps(metadata).decode()
    sent.update(headers)
    return gw.post(headers=sent, content=body if body is not None else orjson.dumps(BODY), json=None)


def only_log(gw, status: int = 400) -> RequestLog:
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success) == (status, False)
    return log


def test_an_unknown_provider_is_logged_with_all_its_metadata(ctx_gw):
    resp = post(ctx_gw, {"feature": "chat"}, **{"x-portkey-provider": "@missing"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-portkey-provider"
    log = only_log(ctx_gw)
    assert log.metadata == {**CONTEXT, "feature": "chat", "_user": "u1"}
    assert (log.user, log.model, log.metadata_changes) == ("u1", "gpt-4o-mini", [])


def test_a_missing_provider_is_logged_with_its_metadata(ctx_gw):
    resp = post(ctx_gw, {"feature": "chat"}, **{"x-portkey-provider": ""})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-portkey-provider"
    assert only_log(ctx_gw).metadata == {**CONTEXT, "feature": "chat", "_user": "u1"}


def test_a_malformed_body_is_logged_with_the_header_metadata(ctx_gw):
    resp = post(ctx_gw, {"feature": "chat", "_user": "u2"}, body=b'{"model": ')
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    log = only_log(ctx_gw)
    assert log.metadata == {**CONTEXT, "feature": "chat", "_user": "u2"}
    assert log.user == "u2"


def test_a_compressed_json_body_is_a_415_naming_content_encoding_and_logged(ctx_gw):
    """It was a 400 "str is not valid UTF-8: surrogates not allowed" (gzip bytes read as JSON)."""
    body = gzip.compress(orjson.dumps(BODY))
    resp = post(ctx_gw, {"feature": "chat"}, body=body, **{"content-encoding": "gzip"})
    assert resp.status_code == 415
    error = resp.json()["error"]
    assert (error["param"], error["code"]) == ("content-encoding", "unsupported_content_encoding")
    assert "uncompressed" in error["message"]
    assert only_log(ctx_gw, 415).metadata == {**CONTEXT, "feature": "chat"}  # the body could not be read


@pytest.mark.parametrize(
    "metadata, param, kept, refused",
    [
        ({"feature": "chat", "n": 1}, "x-portkey-metadata.n", {"feature": "chat"}, "refused 'n': "),
        (
            {"feature": "chat", "long": "x" * 129},
            "x-portkey-metadata.long",
            {"feature": "chat"},
            "refused 'long': metadata key 'long' value is longer than 128 characters",
        ),
        (
            '{"feature": "chat"',
            "x-portkey-metadata",
            {},
            "refused x-portkey-metadata: x-portkey-metadata must be a JSON",
        ),
    ],
)
def test_invalid_request_metadata_is_refused_but_its_valid_part_logged(ctx_gw, metadata, param, kept, refused):
    resp = post(ctx_gw, metadata)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param
    log = only_log(ctx_gw)
    assert log.metadata == {**CONTEXT, **kept, "_user": "u1"}
    [change] = log.metadata_changes
    assert change.startswith(refused)
    assert ctx_gw.upstream.requests == []


def test_too_many_keys_are_refused_and_the_first_ones_logged(ctx_gw, settings):
    settings.METADATA_MAX_KEYS = 8
    resp = post(ctx_gw, {f"k{i}": "v" for i in range(10)})
    assert resp.status_code == 400 and "at most 8" in resp.json()["error"]["message"]
    log = only_log(ctx_gw)
    # The request's first keys, then the defaults and header values in precedence order up to 8.
    assert {k: log.metadata[k] for k in ("environment", "team", "k0")} == {
        "environment": "production",
        "team": "search",
        "k0": "v",
    }
    assert len(log.metadata) == 8
    assert [c for c in log.metadata_changes if "at most 8" in c]


def test_a_required_key_missing_is_named_and_the_rest_logged(ctx_gw):
    schema = {"type": "object", "properties": {"ticket": {"type": "string"}}, "required": ["ticket"]}
    services.workspace_update(workspace=ctx_gw.workspace, metadata_schema=schema)
    key_cache.clear()
    resp = post(ctx_gw, {"feature": "chat"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-portkey-metadata.ticket"
    log = only_log(ctx_gw)
    assert log.metadata == {**CONTEXT, "feature": "chat", "_user": "u1"}
    assert log.metadata_changes == ["missing 'ticket': metadata key 'ticket' is required"]


def test_failed_requests_count_in_metadata_filters_summary_and_errors(ctx_gw):
    assert post(ctx_gw, {"n": 1}).status_code == 400
    assert post(ctx_gw, **{"x-portkey-provider": "@missing"}).status_code == 400
    assert post(ctx_gw).status_code == 200
    ctx_gw.wait_for_logs(3)

    logs = RequestLog.objects.filter(workspace=ctx_gw.workspace)
    failed = LogFilter(QueryDict("metadata.environment=production&success=false"), queryset=logs).qs
    assert failed.count() == 2

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    window = Window(now - timedelta(hours=1), now + timedelta(hours=1), "")
    [row] = group_table(ctx_gw.workspace, window, "metadata.environment")
    assert (row["value"], row["requests"]) == ("production", 3)
    assert row["success_rate"] == pytest.approx(1 / 3)
    failing = {(r["key"], r["value"]): r["errors"] for r in top_failing_metadata(ctx_gw.workspace, window)}
    assert failing[("environment", "production")] == 2
    assert failing[("x-team-id", "T42")] == 2
