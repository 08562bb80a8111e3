"""Tests for the OpenAI-compatible mock upstream (no Django involved)."""

from __future__ import annotations

import base64
import http.client
import json
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bench.mock_upstream import MockUpstream, split_reply

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server


def call(
    upstream: MockUpstream,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    timeout: float = 5.0,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(upstream.url + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        # HTTPError is the response for 4xx/5xx: hand it back like a success.
        return err.code, err.headers, err.read()


def sse_events(raw: bytes) -> list[str]:
    assert raw.endswith(b"\n\n")
    events = raw.decode().split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: ") :] for e in events]


def stream_chat(upstream: MockUpstream, body: dict[str, Any], **headers: str) -> list[str]:
    status, resp_headers, raw = call(upstream, CHAT, {**body, "stream": True}, headers)
    assert status == 200
    assert resp_headers["content-type"].startswith("text/event-stream")
    return sse_events(raw)


MESSAGES = [
    {"role": "system", "content": "You are helpful"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "hello world"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    },
]
# (3 words + 3) + (2 text-part words + 3)
MESSAGES_TOKENS = 11


def test_chat_non_stream_usage(upstream: MockUpstream) -> None:
    status, headers, raw = call(upstream, CHAT, {"model": "gpt-4o-mini", "messages": MESSAGES})
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    body = json.loads(raw)
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "This is a mock reply."}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def test_reply_and_chunks_headers_shape_non_stream_reply(upstream: MockUpstream) -> None:
    headers = {"x-mock-reply": "one two three", "x-mock-chunks": "5"}
    _, _, raw = call(upstream, CHAT, {"messages": []}, headers)
    body = json.loads(raw)
    assert body["choices"][0]["message"]["content"] == "one two three one two"
    assert body["usage"]["completion_tokens"] == 5


def test_stream_without_include_usage(upstream: MockUpstream) -> None:
    events = stream_chat(upstream, {"model": "m", "messages": MESSAGES})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert deltas == ["This", " is", " a", " mock", " reply."]
    last = chunks[-1]["choices"][0]
    assert last["delta"] == {}
    assert last["finish_reason"] == "stop"


def test_stream_with_include_usage(upstream: MockUpstream) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream_options": {"include_usage": True}}
    events = stream_chat(upstream, body, **{"x-mock-chunks": "2"})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    # role, 2 content chunks, finish, usage
    assert len(chunks) == 5
    assert all(c["usage"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "This is a mock reply."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": MESSAGES_TOKENS,
        "completion_tokens": 5,
        "total_tokens": MESSAGES_TOKENS + 5,
    }


def test_completions_plain_and_stream(upstream: MockUpstream) -> None:
    body = {"model": "davinci", "prompt": "say something nice"}
    _, _, raw = call(upstream, "/v1/completions", body)
    plain = json.loads(raw)
    assert plain["object"] == "text_completion"
    assert plain["choices"][0]["text"] == "This is a mock reply."
    assert plain["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}

    stream_body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    _, _, raw = call(upstream, "/v1/completions", stream_body)
    events = sse_events(raw)
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "This is a mock reply."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == plain["usage"]


def test_status_429_has_openai_error_and_retry_after(upstream: MockUpstream) -> None:
    status, headers, raw = call(upstream, CHAT, {"messages": []}, {"x-mock-status": "429"})
    assert status == 429
    assert headers["retry-after"] == "1"
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}


def test_status_500(upstream: MockUpstream) -> None:
    status, headers, raw = call(upstream, "/v1/models", headers={"x-mock-status": "500"})
    assert status == 500
    assert "retry-after" not in headers
    assert json.loads(raw)["error"]["type"] == "server_error"


def test_reset_after_breaks_the_stream(upstream: MockUpstream) -> None:
    req = urllib.request.Request(
        upstream.url + CHAT,
        data=json.dumps({"messages": [], "stream": True}).encode(),
        headers={"x-mock-reset-after": "3"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp, pytest.raises(http.client.IncompleteRead) as excinfo:
        resp.read()
    partial = excinfo.value.partial
    assert partial.count(b"data: ") == 3
    assert b"[DONE]" not in partial


def test_hang_times_out_without_blocking_others(upstream: MockUpstream) -> None:
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            call(upstream, CHAT, {"messages": []}, {"x-mock-hang": "1"}, timeout=0.3)
        except BaseException as exc:  # collected for the main thread's assertions
            errors.append(exc)

    worker = threading.Thread(target=hang)
    worker.start()
    status, _, _ = call(upstream, CHAT, {"messages": []})
    assert status == 200
    worker.join(5)
    assert len(errors) == 1
    assert isinstance(errors[0], TimeoutError | urllib.error.URLError)
    # The parked handler is cancelled once the client has gone away.
    deadline = time.monotonic() + 2
    while upstream.stats["hanging"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.stats["hanging"] == 0


def test_latency_header_delays_response(upstream: MockUpstream) -> None:
    started = time.monotonic()
    status, _, _ = call(upstream, CHAT, {"messages": []}, {"x-mock-latency-ms": "80"})
    assert status == 200
    assert time.monotonic() - started >= 0.08


def test_chunk_delay_paces_stream(upstream: MockUpstream) -> None:
    started = time.monotonic()
    events = stream_chat(upstream, {"messages": []}, **{"x-mock-chunk-delay-ms": "20"})
    # 8 events means 7 pauses between them.
    assert len(events) == 8
    assert time.monotonic() - started >= 0.14


RESPONSES = "/v1/responses"


def test_responses_body(upstream: MockUpstream) -> None:
    body = {"model": "gpt-4o-mini", "input": MESSAGES, "instructions": "be brief"}
    status, _, raw = call(upstream, RESPONSES, body)
    assert status == 200
    reply = json.loads(raw)
    assert reply["id"].startswith("resp-")
    assert (reply["object"], reply["status"], reply["model"]) == ("response", "completed", "gpt-4o-mini")
    [message] = reply["output"]
    assert (message["type"], message["role"]) == ("message", "assistant")
    assert message["content"][0] == {
        "type": "output_text",
        "annotations": [],
        "logprobs": [],
        "text": "This is a mock reply.",
    }
    usage = reply["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (
        MESSAGES_TOKENS + 2,
        5,
        MESSAGES_TOKENS + 7,
    )


def response_events(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == event_line[len("event: ") :]
        events.append((data["type"], data))
    return events


def test_responses_stream_events_end_with_completed_and_no_done(upstream: MockUpstream) -> None:
    status, headers, raw = call(upstream, RESPONSES, {"model": "m", "input": "hello there", "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert b"[DONE]" not in raw
    events = response_events(raw)
    kinds = [kind for kind, _ in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[4:9] == ["response.output_text.delta"] * 5
    assert kinds[9:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert "".join(data["delta"] for kind, data in events if kind.endswith(".delta")) == "This is a mock reply."
    created, completed = events[0][1]["response"], events[-1][1]["response"]
    assert (created["status"], created["usage"], created["model"]) == ("in_progress", None, "m")
    assert completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == "This is a mock reply."
    assert completed["usage"]["input_tokens"] == 2 and completed["usage"]["output_tokens"] == 5


def test_responses_stream_reset_after(upstream: MockUpstream) -> None:
    req = urllib.request.Request(
        upstream.url + RESPONSES,
        data=json.dumps({"input": "hi", "stream": True}).encode(),
        headers={"x-mock-reset-after": "5"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp, pytest.raises(http.client.IncompleteRead) as excinfo:
        resp.read()
    assert excinfo.value.partial.count(b"event: ") == 5
    assert b"response.completed" not in excinfo.value.partial


def test_embeddings(upstream: MockUpstream) -> None:
    body = {"model": "text-embedding-3-small", "input": ["hello world", "hi"]}
    _, _, raw = call(upstream, "/v1/embeddings", body)
    result = json.loads(raw)
    assert result["object"] == "list"
    assert [d["index"] for d in result["data"]] == [0, 1]
    vectors = [d["embedding"] for d in result["data"]]
    assert all(len(v) == 8 for v in vectors)
    assert vectors[0] != vectors[1]
    assert result["usage"] == {"prompt_tokens": 3, "total_tokens": 3}

    _, _, raw = call(upstream, "/v1/embeddings", {"input": "hello world"})
    assert json.loads(raw)["data"][0]["embedding"] == vectors[0]

    _, _, raw = call(upstream, "/v1/embeddings", {"input": "hi", "encoding_format": "base64"})
    encoded = json.loads(raw)["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(encoded))
    assert decoded == pytest.approx(vectors[1], abs=1e-6)


def test_models(upstream: MockUpstream) -> None:
    _, _, raw = call(upstream, "/v1/models")
    body = json.loads(raw)
    assert body["object"] == "list"
    first = body["data"][0]
    assert (first["id"], first["object"], first["owned_by"]) == ("gpt-4o-mini", "model", "mock")


def test_echo_other_paths(upstream: MockUpstream) -> None:
    status, _, raw = call(upstream, "/v1/files/abc?purpose=x", {"a": 1}, method="PUT")
    assert status == 200
    assert json.loads(raw) == {
        "object": "echo",
        "method": "PUT",
        "path": "/v1/files/abc",
        "query": {"purpose": "x"},
        "body": {"a": 1},
    }
    _, _, raw = call(upstream, "/v1/batches", b"not json", method="POST")
    assert json.loads(raw)["body"] is None


def test_invalid_json_is_400(upstream: MockUpstream) -> None:
    status, _, raw = call(upstream, CHAT, b"{not json")
    assert status == 400
    assert json.loads(raw) == {
        "error": {
            "message": "Invalid JSON body.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_recorded_requests_and_stats(upstream: MockUpstream) -> None:
    upstream.clear()
    headers = {"Authorization": "Bearer sk-provider-1", "X-Trace": "t1"}
    call(upstream, CHAT, {"messages": []}, headers)
    call(upstream, "/v1/models", headers={"Authorization": "Bearer sk-provider-2"})

    recorded = upstream.requests
    assert [r["path"] for r in recorded] == [CHAT, "/v1/models"]
    first = recorded[0]
    assert first["method"] == "POST"
    assert first["authorization"] == "Bearer sk-provider-1"
    assert first["headers"]["x-trace"] == "t1"
    assert json.loads(first["body"]) == {"messages": []}

    _, _, raw = call(upstream, "/_mock/requests")
    served = json.loads(raw)
    assert [r["authorization"] for r in served] == ["Bearer sk-provider-1", "Bearer sk-provider-2"]
    _, _, raw = call(upstream, "/_mock/stats")
    assert json.loads(raw)["requests"] == 2
    assert json.loads(raw)["open_streams"] == 0

    status, _, _ = call(upstream, "/_mock/requests", method="DELETE")
    assert status == 200
    assert upstream.requests == []


def test_constructor_defaults_and_header_override() -> None:
    with MockUpstream(reply="alpha beta gamma", chunks=2) as server:
        _, _, raw = call(server, CHAT, {"messages": []})
        assert json.loads(raw)["choices"][0]["message"]["content"] == "alpha beta gamma"
        events = stream_chat(server, {"messages": []})
        assert len(events) == 5  # role, 2 content chunks, finish, [DONE]
        _, _, raw = call(server, CHAT, {"messages": []}, {"x-mock-reply": "override"})
        # The server-wide chunks=2 still applies, so the one-word reply is cycled to two.
        assert json.loads(raw)["choices"][0]["message"]["content"] == "override override"
        assert server.base_url == server.url + "/v1"
        assert server.url.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("reply", "chunks", "expected"),
    [
        ("a b c", None, ("a", " b", " c")),
        ("a b c d e", 2, ("a b c", " d e")),
        ("a b", 3, ("a", " b", " a")),
        ("a  b", 0, ()),
        ("", 4, ()),
    ],
)
def test_split_reply(reply: str, chunks: int | None, expected: tuple[str, ...]) -> None:
    assert split_reply(reply, chunks) == expected
