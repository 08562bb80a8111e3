"""Provider kinds: how one request is sent to a provider of a given kind and how its answer is
read. ``prepare_upstream`` is the one entry point: it takes a provider (a ProviderSnapshot:
kind, base URL, secret, api version, deployment) and the client's request, and returns an
``UpstreamRequest`` (URL, headers, body) that also knows how to read that provider's answer
(usage tracker, stream relay, body translation). It does no I/O, so a fallback can call it once
per target, across providers of different kinds.

Kinds (README "Providers"; their names and default API versions in workspaces/provider_kinds.py):
- ``openai`` (and compatible): ``Authorization: Bearer``, ``{base}{path}``; today's behaviour.
- ``azure-openai``: ``api-key``, ``{base}/openai/deployments/{deployment}{path}?api-version=``.
- ``anthropic``: ``x-api-key`` + ``anthropic-version``; native ``/v1/messages`` passes through,
  OpenAI ``/v1/chat/completions`` is translated (gateway/anthropic_translate.py).
- ``google``: native Gemini (``/models/{model}:generateContent``) with ``x-goog-api-key``;
  OpenAI-shaped paths go to Gemini's OpenAI-compatible endpoint (``{base}/openai{path}``).

URLs are only ever built by joining a checked path to the provider's base URL: a path with
``.``/``..`` segments, a backslash, an empty segment or a query/fragment marker is refused,
and the segments built here (Azure deployment) come from a strict pattern, so no request can
leave the provider's base path.
"""

from __future__ import annotations

import contextlib
import functools
import re
from urllib.parse import quote

import orjson

from analytics.usage import StreamRelay, UsageTracker, token_count
from gateway import anthropic_translate, proxy
from gateway.auth import ProviderSnapshot
from workspaces.errors import GatewayError
from workspaces.provider_kinds import (
    ANTHROPIC,
    ANTHROPIC_VERSION,
    AZURE_API_VERSION,
    AZURE_OPENAI,
    GOOGLE,
    OPENAI,
)

# Endpoints whose JSON body is read for model/stream and whose streams carry usage.
GENERATION = frozenset(("/chat/completions", "/completions"))
# Azure serves these under /openai/deployments/{deployment}; everything else under /openai.
_AZURE_DEPLOYMENT_PATHS = frozenset(
    (
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/images/generations",
        "/audio/transcriptions",
        "/audio/translations",
        "/audio/speech",
    )
)
# OpenAI-shaped paths that Gemini serves at {base}/openai/...
_GOOGLE_OPENAI_PATHS = frozenset(("/chat/completions", "/embeddings", "/images/generations"))
# A client's own provider credentials: never sent to a workspace provider, whose secret is ours.
_CLIENT_CREDENTIALS = ("x-api-key", "api-key", "x-goog-api-key")
_SEGMENT = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,64}")
_GEMINI_MODEL = re.compile(r"/(?:models|tunedModels)/([^/:]+):")


class UpstreamRequest:
    """One request ready for the upstream client, and how to read its answer."""

    __slots__ = ("body", "headers", "hide_usage_chunk", "kind", "model", "query", "stream", "translated", "url")

    def __init__(
        self,
        kind: str,
        url: str,
        query: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        stream: bool,
        model: str = "",
        hide_usage_chunk: bool = False,
        translated: bool = False,
    ) -> None:
        self.kind = kind
        self.url = url  # without the query: the SSRF verdict and its memo depend on the host only
        self.query = query
        self.headers = headers
        self.body = body
        self.stream = stream
        self.model = model  # when the path names it (Gemini); else the body's model is used
        self.hide_usage_chunk = hide_usage_chunk
        self.translated = translated  # OpenAI chat in, Anthropic Messages upstream

    def usage_tracker(self) -> UsageTracker:
        """A tracker that reads this provider's usage shapes."""
        if self.kind == ANTHROPIC:
            # A translated answer reaches the client as OpenAI's: its finish reasons are logged so.
            return AnthropicUsage(openai_reasons=self.translated)
        if self.kind == GOOGLE and not self.url.endswith(_GOOGLE_OPENAI_SUFFIXES):
            return GeminiUsage()
        return UsageTracker()

    def stream_relay(self, tracker: UsageTracker, *, capture: bool):
        """What turns the upstream's SSE bytes into the client's (a StreamRelay or alike)."""
        if self.translated:
            return anthropic_translate.ChatStreamTranslator(
                tracker, include_usage=not self.hide_usage_chunk, capture=capture, model=self.model
            )
        if isinstance(tracker, GeminiUsage):
            return GeminiStreamRelay(tracker, hide_usage_chunk=False, capture=capture)
        if self.kind == ANTHROPIC:
            return AnthropicStreamRelay(tracker, hide_usage_chunk=False, capture=capture)
        return StreamRelay(tracker, hide_usage_chunk=self.hide_usage_chunk, capture=capture)

    def answer_body(self, status: int, data: bytes) -> bytes:
        """The body the client gets for a non-streamed answer: the provider's own, or for a
        translated request the OpenAI shape (errors too, with the same status)."""
        return anthropic_translate.answer_to_openai(status, data) if self.translated else data


_GOOGLE_OPENAI_SUFFIXES = tuple("/openai" + path for path in _GOOGLE_OPENAI_PATHS)


def prepare_upstream(
    provider: ProviderSnapshot,
    endpoint: str,
    headers: dict[str, str],
    body: bytes,
    doc: dict | None,
    *,
    stream: bool = False,
    query: str = "",
) -> UpstreamRequest:
    """The request to send to ``provider`` for the client's ``endpoint`` (the path after /v1),
    ``headers`` (lower-cased), raw ``body`` and its parsed JSON ``doc`` (None when not JSON).
    ``doc`` is not modified, so the same request can be prepared for several targets."""
    kind = provider.kind
    if kind == OPENAI:
        return _openai(provider, endpoint, headers, body, doc, stream, query)
    if kind == ANTHROPIC:
        return _anthropic(provider, endpoint, headers, body, doc, stream, query)
    if kind == AZURE_OPENAI:
        return _azure(provider, endpoint, headers, body, doc, stream, query)
    if kind == GOOGLE:
        return _google(provider, endpoint, headers, body, doc, stream, query)
    raise GatewayError(
        502, f"Provider '@{provider.slug}' has an unknown kind '{kind}'.", type="api_error", code="provider_kind"
    )


def join_url(base: str, path: str) -> str:
    """``base`` + ``path``, refusing any path that could leave the base path."""
    return base + check_path(path)


def check_path(path: str) -> str:
    """``path`` when it stays below whatever it is appended to, else a 400."""
    if not _path_stays_below(path):
        raise GatewayError(400, f"Invalid request path: {path[:200]!r}.", param="path", code="invalid_path")
    return path


@functools.lru_cache(maxsize=1024)
def _path_stays_below(path: str) -> bool:
    # Memoised: a handful of distinct paths per deployment, checked on every request.
    if not path.startswith("/") or "//" in path or "\\" in path or "?" in path or "#" in path:
        return False
    segments = path.split("/")
    return "." not in segments and ".." not in segments


def _with_stream_usage(doc: dict, body: bytes, endpoint: str, stream: bool) -> tuple[bytes, bool]:
    """The body asking for stream usage (and whether the client had not asked itself, so the
    usage-only chunk is withheld from it). A copy: ``doc`` stays as the client sent it."""
    if not stream or doc is None or endpoint not in GENERATION:
        return body, False
    options = doc.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return body, False
    options = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps({**doc, "stream_options": options}), True


def _provider_headers(headers: dict[str, str]) -> dict[str, str]:
    out = proxy.upstream_headers(headers, "")
    for name in _CLIENT_CREDENTIALS:
        out.pop(name, None)
    return out


def _openai(provider, endpoint, headers, body, doc, stream, query) -> UpstreamRequest:
    hide = False
    if stream:
        body, hide = _with_stream_usage(doc, body, endpoint, stream)
    return UpstreamRequest(
        OPENAI,
        join_url(provider.base_url, endpoint),
        query,
        proxy.upstream_headers(headers, provider.secret),
        body,
        stream=stream,
        hide_usage_chunk=hide,
    )


def _azure(provider, endpoint, headers, body, doc, stream, query) -> UpstreamRequest:
    base = provider.base_url.removesuffix("/openai")
    check_path(endpoint)
    if endpoint in _AZURE_DEPLOYMENT_PATHS:
        deployment = provider.deployment or (doc.get("model") if doc is not None else None)
        if not isinstance(deployment, str) or not _SEGMENT.fullmatch(deployment):
            raise GatewayError(
                400,
                "Azure OpenAI needs a deployment: set the provider's deployment, or send the deployment name "
                "as model (letters, digits, '.', '-', '_').",
                param="model",
            )
        path = f"/openai/deployments/{deployment}{endpoint}"
    else:
        path = "/openai" + endpoint
    url = join_url(base, path)
    if "api-version=" not in query:
        version = "api-version=" + quote(provider.api_version or AZURE_API_VERSION, safe="")
        query = f"{query}&{version}" if query else version
    out = _provider_headers(headers)
    if provider.secret:
        out["api-key"] = provider.secret
    body, hide = _with_stream_usage(doc, body, endpoint, stream)
    return UpstreamRequest(AZURE_OPENAI, url, query, out, body, stream=stream, hide_usage_chunk=hide)


def _anthropic(provider, endpoint, headers, body, doc, stream, query) -> UpstreamRequest:
    out = _provider_headers(headers)
    if provider.secret:
        out["x-api-key"] = provider.secret
    if "anthropic-version" not in out:
        out["anthropic-version"] = provider.api_version or ANTHROPIC_VERSION
    if endpoint != "/chat/completions" or doc is None:
        return UpstreamRequest(ANTHROPIC, join_url(provider.base_url, endpoint), query, out, body, stream=stream)
    translated = anthropic_translate.chat_to_messages(doc)
    options = doc.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    out["content-type"] = "application/json"
    return UpstreamRequest(
        ANTHROPIC,
        join_url(provider.base_url, "/messages"),
        query,
        out,
        orjson.dumps(translated),
        stream=stream,
        model=translated["model"] if isinstance(translated["model"], str) else "",
        hide_usage_chunk=not include_usage,
        translated=True,
    )


def _google(provider, endpoint, headers, body, doc, stream, query) -> UpstreamRequest:
    out = _provider_headers(headers)
    if endpoint in _GOOGLE_OPENAI_PATHS:
        # Gemini's OpenAI-compatible endpoint takes the key as a bearer token.
        if provider.secret:
            out["authorization"] = f"Bearer {provider.secret}"
        url = join_url(provider.base_url, "/openai" + endpoint)
        return UpstreamRequest(GOOGLE, url, query, out, body, stream=stream)
    if provider.secret:
        out["x-goog-api-key"] = provider.secret
    if "key=" in query:  # a client's own ?key= is not sent along with ours
        query = "&".join(p for p in query.split("&") if not p.startswith("key="))
    match = _GEMINI_MODEL.match(endpoint)
    return UpstreamRequest(
        GOOGLE,
        join_url(provider.base_url, endpoint),
        query,
        out,
        body,
        stream=stream or ":streamGenerateContent" in endpoint,
        model=match.group(1) if match else "",
    )


# --------------------------------------------------------------------------- usage


class AnthropicUsage(UsageTracker):
    """Usage in Anthropic's shapes: a message's ``usage``; in a stream, message_start's
    ``message.usage`` then message_delta's cumulative ``usage``. Anthropic counts cache reads
    and writes apart from ``input_tokens``; ``prompt_tokens`` here includes them (OpenAI's
    convention), with ``cached_prompt_tokens``/``cache_write_tokens`` saying how many.

    The finish reason is a message's ``stop_reason`` (a stream's message_delta
    ``delta.stop_reason``): ``end_turn``, ``max_tokens``, ``tool_use``..., or with
    ``openai_reasons`` (an OpenAI request translated) the ``finish_reason`` the client got."""

    def __init__(self, *, openai_reasons: bool = False) -> None:
        super().__init__()
        self.input_tokens = 0
        self.cached_prompt_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.openai_reasons = openai_reasons

    def _stop_reason(self, reason: object) -> None:
        if self.openai_reasons:  # as anthropic_translate answers it
            reason = anthropic_translate.STOP_REASONS.get(reason, "stop") if type(reason) is str else "stop"
        self.finish_reasons = []
        self.add_finish_reason(reason)

    def read_usage(self, doc: dict) -> None:
        kind = doc.get("type")
        if kind == "message_start" and isinstance(doc.get("message"), dict):
            doc = doc["message"]
        elif kind == "message_delta" and isinstance(doc.get("delta"), dict):
            self._stop_reason(doc["delta"].get("stop_reason"))
        elif kind == "message":
            self._stop_reason(doc.get("stop_reason"))
        model = doc.get("model")
        if model and not self.model and isinstance(model, str):
            self.model = model
        usage = doc.get("usage")
        if not isinstance(usage, dict):
            return
        # Present fields replace what an earlier event said (message_delta's are cumulative).
        if usage.get("input_tokens") is not None:
            self.input_tokens = token_count(usage["input_tokens"], "input_tokens")
        if usage.get("cache_read_input_tokens") is not None:
            self.cached_prompt_tokens = token_count(usage["cache_read_input_tokens"], "cache_read_input_tokens")
        if usage.get("cache_creation_input_tokens") is not None:
            self.cache_write_tokens = token_count(usage["cache_creation_input_tokens"], "cache_creation_input_tokens")
        if usage.get("output_tokens") is not None:
            self.completion_tokens = token_count(usage["output_tokens"], "output_tokens")
        self.prompt_tokens = self.input_tokens + self.cached_prompt_tokens + self.cache_write_tokens
        self.total_tokens = self.prompt_tokens + self.completion_tokens
        self.saw_usage = True


class GeminiUsage(UsageTracker):
    """Usage from Gemini's ``usageMetadata`` (every stream chunk carries the running counts).
    ``completion_tokens`` includes thinking tokens (billed as output); cached content is part
    of ``promptTokenCount``, as in OpenAI's convention. Finish reasons are the candidates'
    ``finishReason`` (``STOP``, ``MAX_TOKENS``, ``SAFETY``...), as a stream's last chunk names them."""

    def __init__(self) -> None:
        super().__init__()
        self.cached_prompt_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0

    def read_usage(self, doc: dict) -> None:
        model = doc.get("modelVersion")
        if model and not self.model and isinstance(model, str):
            self.model = model
        candidates = doc.get("candidates")
        if type(candidates) is list:
            for candidate in candidates:  # only a stream's last chunk names one
                if type(candidate) is dict and (reason := candidate.get("finishReason")):
                    self.add_finish_reason(reason)
        usage = doc.get("usageMetadata")
        if not isinstance(usage, dict):
            return
        prompt = token_count(usage.get("promptTokenCount"), "promptTokenCount") + token_count(
            usage.get("toolUsePromptTokenCount"), "toolUsePromptTokenCount"
        )
        thoughts = token_count(usage.get("thoughtsTokenCount"), "thoughtsTokenCount")
        completion = token_count(usage.get("candidatesTokenCount"), "candidatesTokenCount") + thoughts
        self.prompt_tokens, self.completion_tokens = prompt, completion
        self.total_tokens = token_count(usage.get("totalTokenCount"), "totalTokenCount") or prompt + completion
        self.cached_prompt_tokens = token_count(usage.get("cachedContentTokenCount"), "cachedContentTokenCount")
        self.reasoning_tokens = thoughts
        self.saw_usage = True

    def read_body(self, body: bytes) -> None:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        # streamGenerateContent without alt=sse answers a JSON array of chunks.
        for item in doc if isinstance(doc, list) else [doc]:
            if isinstance(item, dict):
                with contextlib.suppress(TypeError, ValueError, OverflowError):
                    self.read_usage(item)


class GeminiStreamRelay(StreamRelay):
    """Gemini SSE (``alt=sse``) relayed unchanged; chunks with usageMetadata or a finishReason are parsed."""

    def _keep(self, event: bytes) -> bool:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            if b'"candidates"' in line:
                self.tracker.content_chunks += 1
            if b'"usageMetadata"' in line or b'"finishReason"' in line or not self.tracker.model:
                try:
                    doc = orjson.loads(line[5:])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict):
                    with contextlib.suppress(TypeError, ValueError, OverflowError):
                        self.tracker.read_usage(doc)
        return True


class AnthropicStreamRelay(StreamRelay):
    """A native Messages stream relayed unchanged; an ``error`` event (Anthropic's way to fail
    a stream after its 200, e.g. overloaded_error) is noted for the log. Looked for once per
    read, in the complete events the read released, not once per event."""

    def feed(self, data: bytes) -> bytes:
        out = super().feed(data)
        if b'"error"' in out:
            self._note_error(out)
        return out

    def tail(self) -> bytes:
        rest = super().tail()  # a last event the upstream did not end with a blank line
        if b'"error"' in rest:
            self._note_error(rest)
        return rest

    def _note_error(self, events: bytes) -> None:
        for line in events.split(b"\n"):
            if line.startswith(b"data:") and b'"error"' in line:
                try:
                    doc = orjson.loads(line[5:].strip())
                except orjson.JSONDecodeError:
                    continue
                if isinstance(doc, dict) and doc.get("type") == "error":
                    self.error = anthropic_translate.stream_error(doc)


USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def usage_fields(tracker: UsageTracker) -> dict[str, int]:
    """The token counts a log record can carry, 0 where the provider reports none."""
    return {name: getattr(tracker, name, 0) or 0 for name in USAGE_FIELDS}


def read_usage(kind: str, endpoint: str, body_or_events: bytes | list[dict]) -> dict[str, int | str]:
    """Usage of a whole answer (a body, or a stream's parsed events) in ``kind``'s shapes."""
    if kind == ANTHROPIC:
        tracker = AnthropicUsage()
    elif kind == GOOGLE and endpoint not in _GOOGLE_OPENAI_PATHS:
        tracker = GeminiUsage()
    else:
        tracker = UsageTracker()
    if isinstance(body_or_events, bytes | bytearray):
        tracker.read_body(bytes(body_or_events))
    else:
        for event in body_or_events:
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                tracker.read_usage(event)
    return {**usage_fields(tracker), "model": tracker.model}
