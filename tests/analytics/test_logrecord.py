"""The one log record type: every producer fills it through ``log_record``, and the writer
stores each of its keys in the RequestLog column of the same name."""

from __future__ import annotations

import typing

from analytics.logrecord import REQUIRED_KEYS, LogRecord, log_body, log_record, redact_headers
from analytics.models import RequestLog
from analytics.usage import UsageTracker

# Keys that are not RequestLog columns: the body goes to RequestBody, the upstream latency to
# the gateway's metrics only.
NOT_COLUMNS = {"body", "upstream_latency_ms"}


def _usage(prompt: int = 10, completion: int = 5) -> UsageTracker:
    usage = UsageTracker()
    usage.prompt_tokens, usage.completion_tokens, usage.total_tokens = prompt, completion, prompt + completion
    usage.finish_reasons = ["stop"]
    return usage


def _record(**fields) -> LogRecord:
    base = {
        "id": "0190f2c4-0000-7000-8000-000000000001",
        "created_at": "2026-01-02T03:04:05+00:00",
        "workspace_id": 1,
        "status_code": 200,
        "usage": _usage(),
        "metadata": {"_user": "alice"},
    }
    return log_record(**{**base, **fields})


def test_every_record_key_is_a_requestlog_column_and_every_column_a_record_key():
    columns = {field.attname for field in RequestLog._meta.concrete_fields}
    keys = set(typing.get_type_hints(LogRecord)) - NOT_COLUMNS
    assert keys == columns


def test_the_required_keys_are_the_typed_ones():
    assert set(REQUIRED_KEYS) == set(LogRecord.__required_keys__)


def test_success_user_and_tokens_are_derived_the_same_way_for_every_producer():
    record = _record(status_code=502, metadata={"_user": "u" * 300}, error_message="x" * 5000)
    assert record["success"] is False
    assert record["user"] == "u" * 128
    assert len(record["error_message"]) == 2000
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (10, 5, 15)
    assert record["finish_reasons"] == ["stop"]
    assert _record(status_code=304)["success"] is True


def test_a_record_without_user_metadata_has_an_empty_user():
    assert _record(metadata={"team": "a"})["user"] == ""


def test_a_producer_can_say_a_call_failed_whatever_its_status():
    # OTel spans marked as errors with an HTTP 200 attribute
    assert _record(success=False)["success"] is False


def test_credentials_never_reach_a_stored_body():
    headers = {
        "authorization": "Bearer sk-secret",
        "x-portkey-api-key": "pk-secret",
        "x-api-key": "anthropic-secret",
        "cookie": "session=1",
        "content-type": "application/json",
    }
    body = log_body(headers, "{}", "{}")
    assert body["request_headers"] == {
        "authorization": "[redacted]",
        "x-portkey-api-key": "[redacted]",
        "x-api-key": "[redacted]",
        "cookie": "[redacted]",
        "content-type": "application/json",
    }
    assert redact_headers({"x-goog-api-key": "g"}) == {"x-goog-api-key": "[redacted]"}
