"""Property-based fuzzing of header/body parsing, request paths and metadata resolution: never a
500, always an OpenAI-shaped 4xx naming the problem."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth import key_cache
from workspaces import services
from workspaces.metadata import MetadataError, MetadataPolicy, resolve_metadata

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=200),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=12,
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
metadata_headers = st.one_of(
    header_text,
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.dictionaries(st.text(max_size=140), json_values, max_size=8).map(lambda v: orjson.dumps(v).decode()),
)
POLICY = MetadataPolicy(
    workspace_defaults={"environment": "production"},
    workspace_schema={"type": "object", "properties": {"tier": {"type": "string", "enum": ["a", "b"]}}},
)


@settings(max_examples=400, deadline=None)
@given(
    header=st.one_of(st.none(), st.binary(max_size=300), metadata_headers.map(str.encode)),
    user=json_values,
    baggage=st.one_of(st.none(), header_text),
    strict=st.booleans(),
    request_first=st.booleans(),
)
def test_metadata_resolution_never_crashes(header, user, baggage, strict, request_first):
    try:
        resolved = resolve_metadata(
            header_value=header,
            body_user=user,
            mapped_headers={},
            baggage=baggage,
            policy=POLICY,
            strict=strict,
            request_first=request_first,
            max_keys=16,
        )
    except MetadataError as err:
        assert err.status == 400
        assert err.param is None or err.param.startswith("x-portkey-metadata")
        assert "metadata" in err.message.lower()
        assert err.resolved.changes  # what was refused is named for the log
        resolved = err.resolved
    # What is logged, refused or not, obeys the format rules.
    assert len(resolved.metadata) <= 16
    for key, value in resolved.metadata.items():
        assert isinstance(key, str) and key
        assert isinstance(value, str) and len(value) <= 128
    assert resolved.metadata["environment"] == "production" or request_first


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    metadata=metadata_headers,
    body=st.one_of(st.binary(max_size=200), json_values.map(orjson.dumps)),
    timeout=st.one_of(st.none(), header_text.filter(lambda t: t.strip() == t)),
    # (never "openai" without a custom host here: that would call the real provider)
    provider=st.sampled_from(["@mock", "@missing", "", "@", "x" * 70]),
    trace=st.one_of(st.none(), header_text.filter(lambda t: t.strip() == t)),
)
def test_the_gateway_answers_arbitrary_input_without_500(gw, metadata, body, timeout, provider, trace):
    headers = gw.headers()
    headers["x-portkey-metadata"] = metadata.strip().encode() or b"{}"  # raw UTF-8 bytes, as some clients send
    headers["x-portkey-provider"] = provider
    headers["content-type"] = "application/json"
    if timeout:
        headers["x-portkey-request-timeout"] = timeout
    if trace:
        headers["x-portkey-trace-id"] = trace
        headers["traceparent"] = trace
    resp = httpx.post(gw.v1 + "/chat/completions", content=body, headers=headers, timeout=10)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def _raw_post(url: str, path: str, headers: dict[str, bytes]) -> tuple[int, bytes]:
    """POST ``path`` byte for byte (httpx would resolve dot segments and re-encode it)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request("POST", path, body=b"{}", headers={"content-type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _assert_not_a_gateway_failure(status: int, body: bytes, *, upstream_may_fail: bool = False) -> None:
    """A 4xx naming the problem, or (for hosts the client chose) the provider being out of reach."""
    if status >= 400 and body.startswith(b'{"error"'):
        error = orjson.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        if upstream_may_fail and error["code"] in ("upstream_unreachable", "upstream_timeout", "request_timeout"):
            return
    assert status < 500, body


# Dot segments in every spelling, separators, encodings and plain endpoint words.
path_pieces = st.sampled_from(
    [
        "..",
        ".",
        "/",
        "\\",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "%25",
        "%252e",
        "%00",
        "%ff",
        "%3f",
        "%23",
        ";",
        "@",
        ":",
        "?",
        "&",
        "=",
        "~",
        "//",
        "chat",
        "completions",
        "models",
        "v1",
        "_mock",
    ]
)
request_paths = st.one_of(
    st.lists(path_pieces, max_size=12).map("".join),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=120),
).map(lambda tail: "/v1/" + tail)
latin1_header = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=300
).map(lambda t: t.strip(" \t"))
timeouts = st.one_of(
    latin1_header,
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["²", "¹²³", "1" * 5000, "0x10", "1_000", "+5", "5.0"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=request_paths, timeout=st.one_of(st.none(), timeouts))
def test_arbitrary_paths_and_request_timeouts_never_make_the_gateway_fail(gw, path, timeout):
    headers = {name: value.encode() for name, value in gw.headers().items()}
    if timeout:
        headers["x-portkey-request-timeout"] = timeout.encode("latin-1")
    status, body = _raw_post(gw.url, path, headers)
    _assert_not_a_gateway_failure(status, body)
    # The mock answers every path under /v1/; its plain 404/405 means a path outside it was reached.
    assert not body.startswith((b"404: ", b"405: ")), (path, body)


custom_hosts = st.one_of(
    latin1_header,
    st.tuples(
        st.sampled_from(["http://", "https://", "ftp://", "http:", "//", "", "HTTP://", "http://user:pw@"]),
        st.one_of(
            st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=80),
            st.lists(
                st.sampled_from(["a", "xn--", "xn--a", "-", ".", "..", "[", "]", "::1", "127.0.0.1"]), max_size=8
            ).map("".join),
        ),
        st.sampled_from(["", ":", ":0", ":99999", ":-1", ":80", "/v1", "/v1/../x", "?q", "#f", "]]"]),
    ).map("".join),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=custom_hosts)
def test_arbitrary_custom_hosts_never_make_the_gateway_fail(gw, host):
    services.workspace_update(workspace=gw.workspace, allow_custom_hosts=True)
    key_cache.clear()
    headers = {name: value.encode() for name, value in gw.headers(x_portkey_provider="openai").items()}
    headers["x-portkey-custom-host"] = host.encode("latin-1")
    # A well-formed name is resolved: keep an unknown one from waiting on DNS for long.
    headers["x-portkey-request-timeout"] = b"2000"
    status, body = _raw_post(gw.url, "/v1/chat/completions", headers)
    _assert_not_a_gateway_failure(status, body, upstream_may_fail=True)
