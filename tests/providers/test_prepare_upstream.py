"""providers.prepare_upstream without a server: URL shapes, headers, and the guarantees a
fallback over targets of different kinds relies on."""

from __future__ import annotations

import orjson
import pytest

from gateway import providers
from gateway.auth import ProviderSnapshot
from workspaces import provider_kinds
from workspaces.errors import GatewayError

CLIENT = {
    "authorization": "Bearer sk-client",
    "x-api-key": "client",
    "api-key": "client",
    "x-goog-api-key": "client",
    "x-portkey-provider": "@p",
    "content-type": "application/json",
    "x-custom": "kept",
}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def snapshot(kind: str, base: str = "https://up.example/v1", **extra: str) -> ProviderSnapshot:
    return ProviderSnapshot(slug="p", kind=kind, base_url=base, secret="stored", **extra)


def prepare(provider, endpoint="/chat/completions", doc=CHAT, **kw):
    return providers.prepare_upstream(provider, endpoint, CLIENT, orjson.dumps(doc), doc, **kw)


def test_openai_is_todays_behaviour():
    up = prepare(snapshot("openai"))

    assert up.url == "https://up.example/v1/chat/completions"
    assert up.headers == {
        "content-type": "application/json",
        "x-custom": "kept",
        "x-api-key": "client",
        "api-key": "client",
        "x-goog-api-key": "client",
        "authorization": "Bearer stored",
    }
    assert up.body == orjson.dumps(CHAT) and not up.translated


@pytest.mark.parametrize(
    ("kind", "header"),
    [("anthropic", "x-api-key"), ("azure-openai", "api-key"), ("google", "x-goog-api-key")],
)
def test_each_kind_sends_only_its_own_credential(kind, header):
    up = prepare(snapshot(kind), endpoint="/models/gemini:generateContent" if kind == "google" else "/chat/completions")

    credentials = {
        h: v for h, v in up.headers.items() if h in ("authorization", "x-api-key", "api-key", "x-goog-api-key")
    }
    assert credentials == {header: "stored"}
    assert "x-portkey-provider" not in up.headers and up.headers["x-custom"] == "kept"


@pytest.mark.parametrize("path", ["/../admin", "/chat/../../x", "/./x", "/a//b", "/a\\b", "/x/..", "chat"])
@pytest.mark.parametrize("kind", provider_kinds.KINDS)
def test_paths_that_could_leave_the_base_path_are_refused(kind, path):
    with pytest.raises(GatewayError) as caught:
        prepare(snapshot(kind, deployment="d") if kind == "azure-openai" else snapshot(kind), endpoint=path)

    assert (caught.value.status, caught.value.param) == (400, "path")


def test_the_clients_doc_is_not_changed_so_each_target_gets_the_same_request():
    doc = {**CHAT, "stream": True}

    first = prepare(snapshot("openai"), doc=doc, stream=True)
    second = prepare(snapshot("azure-openai"), doc=doc, stream=True)
    third = prepare(snapshot("anthropic"), doc=doc, stream=True)

    assert doc == {**CHAT, "stream": True}
    assert first.hide_usage_chunk and second.hide_usage_chunk and third.hide_usage_chunk
    assert orjson.loads(first.body)["stream_options"] == {"include_usage": True}
    assert orjson.loads(third.body)["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_azure_urls_and_api_version():
    base = "https://res.openai.azure.com/openai"  # a base with /openai is not doubled
    up = prepare(snapshot("azure-openai", base=base, api_version="2024-06-01"), query="x=1")
    other = prepare(snapshot("azure-openai", base="https://res.openai.azure.com"), endpoint="/files", doc=None)

    assert up.url == "https://res.openai.azure.com/openai/deployments/m/chat/completions"
    assert up.query == "x=1&api-version=2024-06-01"
    assert (other.url, other.query) == ("https://res.openai.azure.com/openai/files", "api-version=2024-10-21")


def test_read_usage_reads_each_kinds_shapes():
    anthropic_events = [
        {
            "type": "message_start",
            "message": {
                "model": "c",
                "usage": {
                    "input_tokens": 9,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 20,
                    "output_tokens": 1,
                },
            },
        },
        {"type": "message_delta", "usage": {"output_tokens": 30}},
    ]
    gemini = orjson.dumps(
        {
            "usageMetadata": {
                "promptTokenCount": 50,
                "candidatesTokenCount": 10,
                "thoughtsTokenCount": 5,
                "cachedContentTokenCount": 40,
                "totalTokenCount": 65,
            }
        }
    )

    assert providers.read_usage("anthropic", "/messages", anthropic_events) == {
        "prompt_tokens": 129,
        "completion_tokens": 30,
        "total_tokens": 159,
        "cached_prompt_tokens": 100,
        "cache_write_tokens": 20,
        "reasoning_tokens": 0,
        "model": "c",
    }
    assert providers.read_usage("google", "/models/g:generateContent", gemini) == {
        "prompt_tokens": 50,
        "completion_tokens": 15,
        "total_tokens": 65,
        "cached_prompt_tokens": 40,
        "cache_write_tokens": 0,
        "reasoning_tokens": 5,
        "model": "",
    }


def test_an_unknown_kind_is_a_clear_502():
    with pytest.raises(GatewayError) as caught:
        prepare(snapshot("bedrock"))

    assert caught.value.status == 502 and "unknown kind 'bedrock'" in caught.value.message


def test_the_native_anthropic_relay_notes_an_error_event_however_the_stream_is_cut():
    from gateway.providers import AnthropicStreamRelay, AnthropicUsage

    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    start = b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3}}}\n\n'
    for stream, ended in ((start + error + b"\n\n", True), (start + error, False)):
        relay = AnthropicStreamRelay(AnthropicUsage(), hide_usage_chunk=False)
        relayed = b"".join(relay.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + relay.tail()
        assert relayed == stream  # unchanged, split anywhere, with or without the final blank line
        assert relay.error == (529, "The provider's stream failed: overloaded_error: Overloaded"), ended
    plain = AnthropicStreamRelay(AnthropicUsage(), hide_usage_chunk=False)
    plain.feed(start + b'event: content_block_delta\ndata: {"delta": {"text": "an \\"error\\" word"}}\n\n')
    assert plain.error is None
