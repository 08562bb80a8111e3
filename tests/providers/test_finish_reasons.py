"""Finish reasons (gen_ai.response.finish_reasons) read from every answer shape the gateway relays,
through the real gateway and the mock upstreams: OpenAI chat and completions (bodies and
streams), the Responses API, native Anthropic Messages, the OpenAI -> Anthropic translation and
Gemini's generateContent. Each log keeps what the answer the client got said."""

from __future__ import annotations

import httpx
import pytest

from workspaces import services

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-sonnet-4", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


@pytest.fixture
def fgw(pgw, upstream):
    """The providers' gateway plus ``@openai``, the OpenAI mock."""
    upstream.clear()
    services.provider_create(workspace=pgw.workspace, slug="openai", base_url=upstream.base_url, api_key="sk-x")
    return pgw


def send(gw, provider: str, path: str, body: dict) -> str:
    """POST through the gateway (streamed when the body asks); the answer's text."""
    if body.get("stream") or "streamGenerateContent" in path:
        with httpx.stream("POST", gw.v1 + path, json=body, headers=gw.headers(provider), timeout=10) as response:
            text = response.read().decode()
    else:
        response = gw.post(provider, path, body)
        text = response.text
    assert response.status_code == 200, text
    return text


def reasons(gw, count: int) -> list:
    return [log.finish_reasons for log in gw.wait_for_logs(count)]


def test_openai_chat_bodies_and_streams(fgw):
    send(fgw, "openai", "/chat/completions", {**CHAT, "n": 2})
    send(fgw, "openai", "/chat/completions", {**CHAT, "max_tokens": 2})
    # The client asked for no usage: the gateway asks, hides the usage chunk, reads the reason.
    streamed = send(fgw, "openai", "/chat/completions", {**CHAT, "stream": True, "max_tokens": 3})
    send(fgw, "openai", "/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    send(fgw, "openai", "/chat/completions", {**CHAT, "stream": True, "n": 2})

    assert '"finish_reason":"length"' in streamed
    assert reasons(fgw, 5) == [["stop", "stop"], ["length"], ["length"], ["stop"], ["stop", "stop"]]


def test_completions_bodies_and_streams(fgw):
    prompt = {"model": "gpt-3.5-turbo-instruct", "prompt": "say something"}
    send(fgw, "openai", "/completions", prompt)
    send(fgw, "openai", "/completions", {**prompt, "max_tokens": 1, "stream": True})

    assert reasons(fgw, 2) == [["stop"], ["length"]]


def test_responses_api_status_and_incomplete_details(fgw):
    body = {"model": "gpt-4o-mini", "input": "hello"}
    send(fgw, "openai", "/responses", body)
    send(fgw, "openai", "/responses", {**body, "max_output_tokens": 2})
    send(fgw, "openai", "/responses", {**body, "stream": True})
    streamed = send(fgw, "openai", "/responses", {**body, "stream": True, "max_output_tokens": 2})

    assert "event: response.incomplete" in streamed
    assert reasons(fgw, 4) == [["completed"], ["max_output_tokens"], ["completed"], ["max_output_tokens"]]


def test_native_anthropic_messages_keep_anthropic_stop_reasons(fgw):
    send(fgw, "claude", "/messages", MESSAGES)
    send(fgw, "claude", "/messages", {**MESSAGES, "max_tokens": 2})
    send(fgw, "claude", "/messages", {**MESSAGES, "stream": True})
    streamed = send(fgw, "claude", "/messages", {**MESSAGES, "stream": True, "stop_sequences": ["mock"]})

    assert '"stop_reason":"stop_sequence"' in streamed
    assert reasons(fgw, 4) == [["end_turn"], ["max_tokens"], ["end_turn"], ["stop_sequence"]]


def test_translated_anthropic_answers_log_the_openai_reason_the_client_got(fgw):
    chat = {**CHAT, "model": "claude-sonnet-4"}
    answer = fgw.post("claude", "/chat/completions", {**chat, "max_tokens": 2}).json()
    send(fgw, "claude", "/chat/completions", chat)
    streamed = send(fgw, "claude", "/chat/completions", {**chat, "stream": True, "max_tokens": 2})
    send(fgw, "claude", "/chat/completions", {**chat, "stream": True})

    assert answer["choices"][0]["finish_reason"] == "length"
    assert '"finish_reason":"length"' in streamed
    assert reasons(fgw, 4) == [["length"], ["stop"], ["length"], ["stop"]]


def test_gemini_generate_content_candidates(fgw):
    send(fgw, "gemini", "/models/gemini-2.5-flash:generateContent", GEMINI)
    cut = {**GEMINI, "generationConfig": {"maxOutputTokens": 2}}
    send(fgw, "gemini", "/models/gemini-2.5-flash:generateContent", cut)
    send(fgw, "gemini", "/models/gemini-2.5-flash:streamGenerateContent?alt=sse", GEMINI)
    send(fgw, "gemini", "/models/gemini-2.5-flash:streamGenerateContent", cut)  # a JSON array of chunks

    assert reasons(fgw, 4) == [["STOP"], ["MAX_TOKENS"], ["STOP"], ["MAX_TOKENS"]]


def test_errors_and_embeddings_name_no_reason(fgw):
    fgw.post("openai", "/embeddings", {"model": "text-embedding-3-small", "input": "hi"})
    fgw.post("openai", "/chat/completions", CHAT, **{"x-mock-status": "500"})

    assert reasons(fgw, 2) == [None, None]
