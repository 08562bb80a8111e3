"""Azure OpenAI: OpenAI-shaped requests go to the deployment URL with api-version and the
stored key in api-key; answers and usage are OpenAI's shapes."""

from __future__ import annotations

import openai
import orjson

CHAT = {"model": "gpt4o-deploy", "messages": [{"role": "user", "content": "hello azure"}]}


def test_chat_goes_to_the_models_deployment_with_api_version_and_api_key(pgw):
    client = openai.OpenAI(
        api_key="sk-placeholder",
        base_url=pgw.v1,
        default_headers={"x-portkey-api-key": pgw.key, "x-portkey-provider": "@azure"},
        max_retries=0,
    )

    completion = client.chat.completions.create(**CHAT)

    assert completion.choices[0].message.content == "This is a mock reply."
    sent = pgw.last_request()
    assert sent["path"] == "/azure/openai/deployments/gpt4o-deploy/chat/completions"
    assert sent["query_string"] == "api-version=2024-10-21"
    assert sent["headers"]["api-key"] == "azure-stored"
    assert "authorization" not in sent["headers"]
    assert orjson.loads(sent["body"]) == CHAT
    log = pgw.wait_for_logs(1)[0]
    assert (log.status_code, log.prompt_tokens, log.completion_tokens) == (200, 5, 5)


def test_a_fixed_deployment_wins_over_the_model_and_the_default_api_version_is_used(pgw):
    resp = pgw.post("azure-fixed", "/embeddings", {"model": "whatever", "input": "a b c"})

    assert resp.status_code == 200
    sent = pgw.last_request()
    assert sent["path"] == "/azure/openai/deployments/gpt4o-prod/embeddings"
    assert sent["query_string"] == "api-version=2024-10-21"


def test_the_clients_api_version_is_kept(pgw):
    import httpx

    httpx.post(pgw.v1 + "/chat/completions?api-version=2025-01-01-preview", json=CHAT, headers=pgw.headers("azure"))

    assert pgw.last_request()["query_string"] == "api-version=2025-01-01-preview"


def test_a_stream_gets_usage_for_the_log_without_showing_the_usage_chunk(pgw):
    import httpx

    with httpx.stream(
        "POST", pgw.v1 + "/chat/completions", json={**CHAT, "stream": True}, headers=pgw.headers("azure"), timeout=10
    ) as resp:
        raw = resp.read().decode()

    assert raw.endswith("data: [DONE]\n\n") and '"usage":{' not in raw
    assert orjson.loads(pgw.last_request()["body"])["stream_options"] == {"include_usage": True}
    log = pgw.wait_for_logs(1)[0]
    assert log.is_stream and (log.prompt_tokens, log.completion_tokens) == (5, 5)


def test_without_a_deployment_the_answer_is_a_400_naming_model(pgw):
    missing = pgw.post("azure", "/chat/completions", {"messages": CHAT["messages"]})
    escaping = pgw.post("azure", "/chat/completions", {**CHAT, "model": "../../admin"})

    assert (missing.status_code, missing.json()["error"]["param"]) == (400, "model")
    assert (escaping.status_code, escaping.json()["error"]["param"]) == (400, "model")
    assert pgw.mock.requests == []


def test_azure_errors_pass_through(pgw):
    resp = pgw.post("azure", "/chat/completions", CHAT, **{"x-mock-status": "400"})

    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "Mock upstream error (status 400)"
