"""The gateway as real clients see it: official OpenAI and Portkey SDKs, curl-like httpx."""

from __future__ import annotations

import time
import uuid

import httpx
import orjson
import pytest
from openai import OpenAI
from portkey_ai import Portkey


def test_it_proxies_chat_with_the_openai_sdk(gw):
    client = OpenAI(api_key="unused", base_url=gw.v1, default_headers=gw.headers())
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "This is a mock reply."
    assert reply.usage.prompt_tokens == 5  # 2 words + 3 per message (mock's rule)
    sent = gw.upstream.requests[-1]
    # The provider's secret goes upstream, never the caller's Authorization or Portico key.
    assert sent["authorization"] == "Bearer sk-provider-secret"
    assert not any(h.startswith("x-portkey-") for h in sent["headers"])
    [log] = gw.wait_for_logs(1)
    assert (log.status_code, log.success, log.model, log.provider) == (200, True, "gpt-4o-mini", "@mock")
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (5, 5, 10)
    assert log.cost is not None and log.cost > 0
    assert log.sdk_version.startswith("openai ")


def test_it_forwards_the_body_byte_for_byte(gw):
    raw = b'{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"caf\\u00e9"}],"temperature":0.70}'
    resp = httpx.post(
        gw.v1 + "/chat/completions", content=raw, headers={**gw.headers(), "content-type": "application/json"}
    )
    assert resp.status_code == 200
    assert gw.upstream.requests[-1]["body"] == raw.decode()


def test_it_answers_portkey_response_headers(gw):
    resp = gw.post(headers=gw.headers(x_portkey_trace_id="trace-abc"))
    assert resp.headers["x-portkey-trace-id"] == "trace-abc"
    assert resp.headers["x-portkey-provider"] == "@mock"
    assert resp.headers["x-portkey-retry-attempt-count"] == "0"
    assert resp.headers["x-portkey-cache-status"] == "DISABLED"
    [log] = gw.wait_for_logs(1)
    assert str(log.id) == resp.headers["x-portico-log-id"]
    assert log.trace_id == "trace-abc"


def test_it_generates_a_trace_id_and_reads_traceparent(gw):
    before = time.time()
    resp = gw.post()
    generated = resp.headers["x-portkey-trace-id"]
    # Generated log and trace ids are time-ordered UUIDv7 (analytics.ids): 48-bit Unix ms first.
    for made in (generated, resp.headers["x-portico-log-id"]):
        assert uuid.UUID(made).version == 7 and str(uuid.UUID(made)) == made
        assert before - 1 <= int(made.replace("-", "")[:12], 16) / 1000 <= time.time() + 1
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    resp = gw.post(headers=gw.headers(traceparent=tp, x_portkey_span_name="summarise"))
    assert resp.headers["x-portkey-trace-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    logs = gw.wait_for_logs(2)
    assert (logs[1].span_id, logs[1].span_name) == ("00f067aa0ba902b7", "summarise")


def test_it_streams_chunks_before_the_upstream_finishes(gw):
    headers = gw.headers(x_mock_chunks="5", x_mock_chunk_delay_ms="150")
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    started = time.perf_counter()
    arrivals = []
    with httpx.stream("POST", gw.v1 + "/chat/completions", json=body, headers=headers, timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.perf_counter() - started, line))
    # First event well before the ~900 ms the whole stream takes.
    assert arrivals[0][0] < 0.5 < arrivals[-1][0]
    assert arrivals[-1][1] == "data: [DONE]"
    # The client did not ask for usage: it sees no usage chunk, but the log has the tokens.
    assert not any('"usage":{' in line.replace(" ", "") for _, line in arrivals)
    sent = orjson.loads(gw.upstream.requests[-1]["body"])
    assert sent["stream_options"] == {"include_usage": True}
    [log] = gw.wait_for_logs(1)
    assert log.is_stream and log.status_code == 200
    assert log.completion_tokens == 5 and log.prompt_tokens > 0
    assert 0 < log.ttft_ms < log.latency_ms


def test_it_streams_with_usage_through_the_openai_sdk(gw):
    client = OpenAI(api_key="unused", base_url=gw.v1, default_headers=gw.headers())
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "This is a mock reply."
    assert chunks[-1].usage.completion_tokens == 5
    [log] = gw.wait_for_logs(1)
    assert (log.prompt_tokens, log.completion_tokens) == (6, 5)


def test_it_proxies_embeddings_models_and_other_paths(gw):
    client = OpenAI(api_key="unused", base_url=gw.v1, default_headers=gw.headers())
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
    assert len(emb.data) == 2
    assert [m.id for m in client.models.list()]
    echo = httpx.get(gw.v1 + "/files?purpose=batch", headers=gw.headers(), timeout=10).json()
    assert (echo["object"], echo["path"], echo["query"]) == ("echo", "/v1/files", {"purpose": "batch"})
    logs = gw.wait_for_logs(3)
    assert {log.endpoint for log in logs} == {"/embeddings", "/models", "/files"}


def test_it_works_with_the_portkey_sdk_and_its_metadata(gw):
    client = Portkey(api_key=gw.key, base_url=gw.v1, provider="@mock", metadata={"environment": "staging"})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    client.with_options(metadata={"feature": "search", "_user": "u-9"}).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    first, second = gw.wait_for_logs(2)
    assert first.metadata == {"environment": "staging"}
    # with_options replaces the client's metadata for that call (Portkey SDK behaviour).
    assert second.metadata == {"feature": "search", "_user": "u-9"}
    assert second.user == "u-9"
    # The SDK's placeholder Authorization never reaches the provider.
    assert gw.upstream.requests[-1]["authorization"] == "Bearer sk-provider-secret"


def test_it_accepts_the_portico_key_as_bearer_token(gw):
    resp = gw.post(headers={"authorization": f"Bearer {gw.key}", "x-portkey-provider": "@mock"})
    assert resp.status_code == 200
    assert gw.upstream.requests[-1]["authorization"] == "Bearer sk-provider-secret"


@pytest.mark.parametrize("debug, stored", [("true", True), ("false", False)])
def test_it_stores_bodies_unless_debug_is_false(gw, debug, stored):
    gw.post(headers=gw.headers(x_portkey_debug=debug))
    [log] = gw.wait_for_logs(1)
    assert hasattr(log, "body") is stored
    if stored:
        assert log.body.request_headers["x-portkey-api-key"] == "[redacted]"
        assert "mock reply" in log.body.response_body
