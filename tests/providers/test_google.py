"""Google Gemini: the native API passes through with the stored key in x-goog-api-key and usage
from usageMetadata; OpenAI-shaped paths go to Gemini's OpenAI-compatible endpoint."""

from __future__ import annotations

import httpx
import orjson
from genai_prices import Usage, calc_price

from analytics.pricing import COST_QUANTUM

NATIVE = {
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "contents": [{"role": "user", "parts": [{"text": "hello gemini friend"}]}],
}


def test_generate_content_passes_through_with_x_goog_api_key(pgw):
    resp = pgw.post(
        "gemini",
        "/models/gemini-2.5-flash:generateContent",
        NATIVE,
        **{"x-goog-api-key": "client-key", "x-mock-thoughts": "12", "x-mock-cache-read": "2"},
    )

    assert resp.status_code == 200
    assert resp.json()["candidates"][0]["content"]["parts"][0]["text"] == "This is a mock reply."
    sent = pgw.last_request()
    assert sent["path"] == "/google/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == "goog-stored"
    assert "authorization" not in sent["headers"]
    assert orjson.loads(sent["body"]) == NATIVE
    log = pgw.wait_for_logs(1)[0]
    assert (log.model, log.status_code, log.is_stream) == ("gemini-2.5-flash", 200, False)
    # Thinking tokens are billed as output: completion = candidates + thoughts.
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (5, 5 + 12, 22)
    assert (log.cached_prompt_tokens, log.reasoning_tokens) == (2, 12)
    usage = Usage(input_tokens=5, cache_read_tokens=2, output_tokens=17, output_reasoning_tokens=12)
    assert log.cost == calc_price(usage, "gemini-2.5-flash", provider_id="google").total_price.quantize(COST_QUANTUM)


def test_a_clients_key_in_the_query_is_not_sent(pgw):
    httpx.post(
        pgw.v1 + "/models/gemini-2.5-flash:generateContent?key=client-key",
        json=NATIVE,
        headers=pgw.headers("gemini"),
        timeout=10,
    )

    assert "key=" not in pgw.last_request()["query_string"]


def test_stream_generate_content_sse_is_relayed_and_usage_read_from_the_last_chunk(pgw):
    with httpx.stream(
        "POST",
        pgw.v1 + "/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        json=NATIVE,
        headers=pgw.headers("gemini"),
        timeout=10,
    ) as resp:
        raw = resp.read().decode()

    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [orjson.loads(line[5:]) for line in raw.split("\n") if line.startswith("data:")]
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == "This is a mock reply."
    assert pgw.last_request()["query_string"] == "alt=sse"
    log = pgw.wait_for_logs(1)[0]
    assert log.is_stream and (log.prompt_tokens, log.completion_tokens) == (5, 5)


def test_stream_generate_content_without_sse_is_a_json_array_with_usage(pgw):
    resp = pgw.post("gemini", "/models/gemini-2.5-flash:streamGenerateContent", NATIVE)

    assert isinstance(resp.json(), list)
    log = pgw.wait_for_logs(1)[0]
    assert (log.prompt_tokens, log.completion_tokens) == (5, 5)


def test_openai_chat_goes_to_the_openai_compatible_endpoint_with_a_bearer_key(pgw):
    resp = pgw.post(
        "gemini", "/chat/completions", {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    )

    assert resp.status_code == 200 and resp.json()["object"] == "chat.completion"
    sent = pgw.last_request()
    assert sent["path"] == "/google/v1beta/openai/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer goog-stored"
    assert "x-goog-api-key" not in sent["headers"]
    assert pgw.wait_for_logs(1)[0].prompt_tokens == 4


def test_gemini_errors_pass_through(pgw):
    resp = pgw.post("gemini", "/models/gemini-2.5-flash:generateContent", NATIVE, **{"x-mock-status": "400"})

    assert resp.status_code == 400
    assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"
