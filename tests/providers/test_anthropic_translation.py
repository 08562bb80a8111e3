"""The OpenAI SDK talking to an ``anthropic`` provider: /v1/chat/completions is translated to
Anthropic Messages and the answer (body, stream, errors, usage) back to OpenAI's shapes."""

from __future__ import annotations

import json

import openai
import orjson
import pytest

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def sdk(pgw, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-placeholder",
        base_url=pgw.v1,
        default_headers={"x-portkey-api-key": pgw.key, "x-portkey-provider": "@claude", **headers},
        max_retries=0,
    )


def sent_body(pgw) -> dict:
    return orjson.loads(pgw.last_request()["body"])


def test_a_chat_completion_is_translated_both_ways(pgw):
    completion = sdk(pgw).chat.completions.create(
        model="claude-mock",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Say hi"},
        ],
        stop=["zzz"],
        temperature=0.2,
        top_p=0.9,
        user="alice",
    )

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "This is a mock reply."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "claude-mock"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (8, 5)
    request = pgw.last_request()
    assert request["path"] == "/anthropic/v1/messages"
    assert request["headers"]["x-api-key"] == "sk-ant-stored"
    assert request["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request["headers"]
    assert sent_body(pgw) == {
        "model": "claude-mock",
        "system": "You are terse.\n\nAnswer in English.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}],
        "max_tokens": 4096,
        "stop_sequences": ["zzz"],
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"user_id": "alice"},
    }
    log = pgw.wait_for_logs(1)[0]
    assert (log.status_code, log.endpoint, log.model, log.prompt_tokens, log.completion_tokens) == (
        200,
        "/chat/completions",
        "claude-mock",
        8,
        5,
    )
    # The log keeps what the client sent and what it got: the OpenAI shapes.
    assert json.loads(log.body.response_body)["object"] == "chat.completion"


def test_max_tokens_and_stop_sequences_map_to_finish_reasons(pgw):
    client = sdk(pgw)
    messages = [{"role": "user", "content": "hi"}]

    cut = client.chat.completions.create(model="claude-mock", messages=messages, max_tokens=2)
    stopped = client.chat.completions.create(model="claude-mock", messages=messages, stop="mock")

    assert (cut.choices[0].finish_reason, cut.choices[0].message.content) == ("length", "This is")
    assert sent_body(pgw)["stop_sequences"] == ["mock"]
    assert (stopped.choices[0].finish_reason, stopped.choices[0].message.content) == ("stop", "This is a ")


def test_a_stream_becomes_chat_completion_chunks_with_a_usage_chunk_and_done(pgw):
    stream = sdk(pgw).chat.completions.create(
        model="claude-mock",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "This is a mock reply."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 5)
    assert sent_body(pgw)["stream"] is True
    log = pgw.wait_for_logs(1)[0]
    assert log.is_stream and (log.prompt_tokens, log.completion_tokens) == (2, 5)


def test_a_stream_without_include_usage_has_no_usage_chunk_but_the_log_has_tokens(pgw, gateway_url):
    import httpx

    with httpx.stream(
        "POST",
        pgw.v1 + "/chat/completions",
        json={"model": "claude-mock", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=pgw.headers("claude"),
        timeout=10,
    ) as resp:
        raw = resp.read().decode()

    assert resp.headers["content-type"].startswith("text/event-stream")
    assert raw.endswith("data: [DONE]\n\n")
    assert '"usage"' not in raw and "event:" not in raw
    log = pgw.wait_for_logs(1)[0]
    assert (log.prompt_tokens, log.completion_tokens) == (1, 5)


def test_a_tool_call_round_trip(pgw):
    client = sdk(pgw, **{"x-mock-tool-input": '{"city": "Paris"}'})
    messages = [{"role": "user", "content": "Weather in Paris?"}]

    first = client.chat.completions.create(model="claude-mock", messages=messages, tools=TOOLS, tool_choice="auto")

    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == (
        "function",
        "get_weather",
        {"city": "Paris"},
    )
    assert sent_body(pgw)["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": TOOLS[0]["function"]["parameters"],
        }
    ]
    assert sent_body(pgw)["tool_choice"] == {"type": "auto"}

    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    second = client.chat.completions.create(model="claude-mock", messages=messages, tools=TOOLS)

    assert second.choices[0].message.content == "Tool said: 18C and sunny"
    sent = sent_body(pgw)["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}}],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}],
    }


def test_a_streamed_tool_call_arrives_as_tool_call_deltas(pgw):
    stream = sdk(pgw, **{"x-mock-tool-input": '{"city": "Oslo"}'}).chat.completions.create(
        model="claude-mock",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        stream=True,
    )
    chunks = list(stream)

    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Oslo"}
    assert {tc.index for tc in calls} == {0}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert sent_body(pgw)["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}


def test_provider_errors_become_openai_errors_with_the_same_status(pgw):
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(pgw, **{"x-mock-status": "429"}).chat.completions.create(
            model="claude-mock", messages=[{"role": "user", "content": "hi"}]
        )

    assert caught.value.status_code == 429
    assert caught.value.body == {
        "message": "Mock Anthropic error (status 429)",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    assert pgw.wait_for_logs(1)[0].status_code == 429


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"}, "max_tokens"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{oops"}}]}
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web"}]}, "tools[0]"),
    ],
)
def test_requests_that_cannot_be_translated_are_a_400_naming_the_field(pgw, body, param):
    resp = pgw.post("claude", "/chat/completions", {"model": "claude-mock", **body})

    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param
    assert pgw.mock.requests == []  # nothing went upstream


@pytest.mark.parametrize(("failure", "status"), [("overloaded_error", 529), ("api_error", 500)])
def test_an_error_event_mid_stream_is_an_openai_error_chunk_and_a_failed_log(pgw, failure, status):
    stream = sdk(pgw, **{"x-mock-stream-error": failure}).chat.completions.create(
        model="claude-mock", messages=[{"role": "user", "content": "stream it"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    assert caught.value.body["type"] == failure and caught.value.body["message"]
    assert received[0] == "" and "This is a mock reply.".startswith("".join(received)) and "".join(received)
    log = pgw.wait_for_logs(1)[0]
    assert (log.status_code, log.success, log.is_stream) == (status, False, True)
    assert f"{failure}: {caught.value.body['message']}" in log.error_message
    # The client's stream ended with the error chunk, not with [DONE].
    events = [e for e in log.body.response_body.split("\n\n") if e]
    assert orjson.loads(events[-1].removeprefix("data: "))["error"]["type"] == failure
    assert "[DONE]" not in log.body.response_body
