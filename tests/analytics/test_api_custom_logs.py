"""POST /v1/logs: Portkey's custom log insert, through the gateway's metadata rules and the
log writer (so rollups count custom logs too)."""

from __future__ import annotations

import gzip
from decimal import Decimal

import orjson
import pytest

from analytics.models import DimensionRollup, MetadataRollup, ModelPrice, RequestBody, RequestLog
from workspaces import services

pytestmark = pytest.mark.django_db

URL = "/v1/logs"


def item(**overrides) -> dict:
    log = {
        "request": {
            "url": "https://api.openai.com/v1/chat/completions",
            "method": "POST",
            "headers": {"Content-Type": "application/json", "Authorization": "Bearer sk-secret"},
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "user": "carol"},
        },
        "response": {
            "status": 200,
            "headers": {},
            "body": {
                "id": "chatcmpl-1",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
            },
            "response_time": 321.5,
        },
        "metadata": {"environment": "production", "traceId": "trace-42", "spanName": "answer"},
    }
    for name, value in overrides.items():
        log[name] = value
    return log


def post(client, payload, full_key):
    return client.post(URL, payload, content_type="application/json", headers={"x-portkey-api-key": full_key})


def test_it_inserts_one_log_like_the_gateway_would(client, api_key, workspace):
    ModelPrice.objects.update_or_create(
        model="gpt-4o-mini", defaults={"input_per_million": Decimal("0.15"), "output_per_million": Decimal("0.6")}
    )
    response = post(client, item(), api_key[1])
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "success" and len(body["log_ids"]) == 1
    log = RequestLog.objects.get(id=body["log_ids"][0])
    assert (log.workspace_id, log.api_key_id) == (workspace.id, api_key[0].id)
    assert (log.provider, log.model, log.endpoint, log.method) == ("openai", "gpt-4o-mini", "/chat/completions", "POST")
    assert (log.status_code, log.success, log.latency_ms) == (200, True, 321.5)
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (1000, 500, 1500)
    assert log.cost == Decimal("0.00045000")
    assert (log.trace_id, log.span_name) == ("trace-42", "answer")
    assert log.finish_reasons == ["stop"]  # read from the response body, as the gateway reads answers
    assert log.metadata == {"environment": "production", "_user": "carol"}
    assert log.user == "carol"
    stored = RequestBody.objects.get(log=log)
    assert stored.request_headers["authorization"] == "[redacted]"
    assert '"gpt-4o-mini"' in stored.request_body
    assert MetadataRollup.objects.filter(workspace=workspace, key="environment", value="production").exists()
    assert DimensionRollup.objects.get(workspace=workspace).requests == 1


def test_it_inserts_an_array(client, api_key):
    failed = item(response={"status": 503, "body": "upstream down"})
    response = post(client, [item(), failed], api_key[1])
    assert response.status_code == 200
    logs = RequestLog.objects.in_bulk(response.json()["log_ids"])
    assert sorted((log.status_code, log.success) for log in logs.values()) == [(200, True), (503, False)]
    assert {log.error_message for log in logs.values()} == {"", "upstream down"}


def test_defaults_and_string_bodies(client, api_key):
    minimal = {
        "request": {"url": "https://llm.internal.example/generate", "body": '{"model": "custom-1"}'},
        "response": {"body": '{"usage": {"input_tokens": 3, "output_tokens": 4}}'},
    }
    response = post(client, minimal, api_key[1])
    assert response.status_code == 200, response.json()
    log = RequestLog.objects.get()
    assert (log.provider, log.model, log.status_code, log.success) == ("llm.internal.example", "custom-1", 200, True)
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens, log.cost) == (3, 4, 7, None)
    assert log.finish_reasons is None  # the answer named none
    assert log.trace_id  # generated, as the gateway does


def test_workspace_and_key_default_metadata_apply(client, workspace):
    services.workspace_update(workspace=workspace, default_metadata={"team": "platform"})
    key = services.api_key_create(workspace=workspace, name="k", default_metadata={"source": "batch"})[1]
    response = post(client, item(metadata={"team": "mine", "environment": "dev"}), key)
    assert response.status_code == 200
    assert RequestLog.objects.get().metadata == {
        "team": "platform",
        "source": "batch",
        "environment": "dev",
        "_user": "carol",
    }


def test_required_metadata_is_enforced(client, workspace):
    schema = {"type": "object", "properties": {"cost_center": {"type": "string"}}, "required": ["cost_center"]}
    key = services.api_key_create(workspace=workspace, name="k", metadata_schema=schema)[1]
    response = post(client, item(), key)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "metadata.cost_center"
    assert RequestLog.objects.count() == 0


def test_invalid_metadata_in_an_array_names_the_item(client, api_key):
    response = post(client, [item(), item(metadata={"environment": 5})], api_key[1])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "[1].metadata.environment"
    assert RequestLog.objects.count() == 0


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"response": {"status": 200}}, "request"),
        ({"request": {"url": "https://x"}}, "response"),
        (item(request={"method": "POST"}), "request.url"),
        (item(response={"status": 99}), "response.status"),
        (item(response={"status": "ok"}), "response.status"),
        (item(response={"response_time": -1}), "response.response_time"),
        (item(response={"body": {"usage": {"prompt_tokens": "many"}}}), "response.body.usage.prompt_tokens"),
        (item(metadata=["not", "an", "object"]), "metadata"),
        ([item(), {"request": {}}], "[1].request.url"),
        (item(request={"url": "http://[::1"}), "request.url"),
    ],
)
def test_validation_errors_name_the_field(client, api_key, payload, param):
    response = post(client, payload, api_key[1])
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["param"] == param
    assert RequestLog.objects.count() == 0


@pytest.mark.parametrize(
    ("usage", "param"),
    [
        # 10**30 and 1e308 made pricing raise decimal.InvalidOperation (a 500); -5 was priced
        # as a negative cost; 1.5 and true were taken as 1.
        ({"prompt_tokens": 10**30}, "prompt_tokens"),
        ({"completion_tokens": 1e308}, "completion_tokens"),
        ({"completion_tokens": -5}, "completion_tokens"),
        ({"prompt_tokens": 1.5}, "prompt_tokens"),
        ({"prompt_tokens": True}, "prompt_tokens"),
        ({"prompt_tokens": 1, "total_tokens": 2**31}, "total_tokens"),
        ({"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": [1]}}, "prompt_tokens_details.cached_tokens"),
        ({"input_tokens": 1, "output_tokens": {"n": 1}}, "output_tokens"),
        ({"input_tokens": 1, "cache_read_input_tokens": -1}, "cache_read_input_tokens"),
    ],
)
def test_token_counts_that_are_no_counts_are_a_400_naming_the_count(client, api_key, usage, param):
    # A priced model: the counts reach the cost computation unless refused first.
    ModelPrice.objects.create(model="gpt-4o-mini", input_per_million=1, output_per_million=2)
    response = post(client, item(response={"status": 200, "body": {"usage": usage}}), api_key[1])
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["param"] == f"response.body.usage.{param}"
    assert "whole number from 0 to 2147483647" in error["message"]
    assert RequestLog.objects.count() == 0


def test_integral_float_token_counts_are_taken(client, api_key):
    response = post(client, item(response={"status": 200, "body": {"usage": {"prompt_tokens": 12.0}}}), api_key[1])
    assert response.status_code == 200, response.json()
    assert RequestLog.objects.get().prompt_tokens == 12


@pytest.mark.parametrize("payload", ["just text", 42, [], None])
def test_a_body_that_is_no_log_is_a_400(client, api_key, payload):
    response = post(client, payload, api_key[1])
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("url", [URL, "/v1/feedback"])
def test_a_compressed_body_is_a_415_naming_content_encoding(client, api_key, url):
    """It was a 400 "JSON parse error - str is not valid UTF-8" (gzip bytes read as JSON)."""
    body = gzip.compress(orjson.dumps(item()))
    headers = {"x-portkey-api-key": api_key[1], "content-encoding": "gzip"}
    response = client.post(url, body, content_type="application/json", headers=headers)
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["param"] == "Content-Encoding" and "send the JSON body uncompressed" in error["message"]
    assert RequestLog.objects.count() == 0


def test_invalid_json_is_a_400(client, api_key):
    response = client.post(URL, "{nope", content_type="application/json", headers={"x-portkey-api-key": api_key[1]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_an_inference_only_key_may_insert(client, workspace):
    key = services.api_key_create(workspace=workspace, name="k", scopes=["inference"])[1]
    assert post(client, item(), key).status_code == 200


def test_an_admin_only_key_may_not(client, workspace):
    key = services.api_key_create(workspace=workspace, name="k", scopes=["admin"])[1]
    response = post(client, item(), key)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_a_session_is_not_enough(client, owner, workspace):
    client.force_login(owner)
    response = client.post(URL, item(), content_type="application/json")
    assert response.status_code == 401


def test_an_oversized_body_is_a_413(client, api_key, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1024
    response = post(client, item(request={"url": "https://x", "body": {"text": "x" * 2000}}), api_key[1])
    assert response.status_code == 413
