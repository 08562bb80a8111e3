"""Property-based fuzzing of header/body parsing and metadata resolution: never a 500, always
an OpenAI-shaped 4xx naming the problem."""

from __future__ import annotations

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.metadata import MetadataError, MetadataPolicy, resolve_metadata

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
