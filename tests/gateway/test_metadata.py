"""DESIGN.md's metadata rules, one by one: unit level on resolve_metadata, then end to end."""

from __future__ import annotations

import orjson
import pytest

from workspaces.errors import GatewayError
from workspaces.metadata import MetadataPolicy, parse_baggage, resolve_metadata


def resolve(header=None, *, user=None, mapped=None, baggage=None, policy=None, **kw):
    raw = orjson.dumps(header) if isinstance(header, dict | list | int) else header
    return resolve_metadata(
        header_value=raw.encode() if isinstance(raw, str) else raw,
        body_user=user,
        mapped_headers=mapped or {},
        baggage=baggage,
        policy=policy or MetadataPolicy(),
        **kw,
    )


def bad(*args, **kw) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        resolve(*args, **kw)
    assert info.value.status == 400
    return info.value


POLICY = MetadataPolicy(
    workspace_defaults={"environment": "production", "team": "ws"},
    key_defaults={"team": "key", "feature": "key-feature"},
)


def test_workspace_defaults_win_by_default():
    md = resolve({"environment": "dev", "team": "req", "feature": "req", "x": "1"}, policy=POLICY).metadata
    assert md == {"environment": "production", "team": "ws", "feature": "key-feature", "x": "1"}


def test_request_first_restores_the_older_order():
    md = resolve({"environment": "dev", "x": "1"}, policy=POLICY, request_first=True).metadata
    assert md == {"environment": "dev", "team": "key", "feature": "key-feature", "x": "1"}


def test_body_user_fills_user_unless_given():
    assert resolve({}, user="alice").metadata == {"_user": "alice"}
    assert resolve({"_user": "bob"}, user="alice").metadata["_user"] == "bob"
    assert resolve({"_user": ""}, user="alice").metadata["_user"] == "alice"
    assert "_user" not in resolve({}, user="").metadata


def test_mapped_headers_and_baggage_sit_below_request_metadata():
    md = resolve(
        {"region": "eu"},
        mapped={"x-team": "platform", "region": "us"},
        baggage="region=ap, tenant=acme%20corp;prop=1",
    ).metadata
    assert md == {"region": "eu", "x-team": "platform", "tenant": "acme corp"}


def test_baggage_parsing_drops_properties_and_decodes():
    assert parse_baggage("a=1;p=q, b=%2Fx ,broken, =y") == {"a": "1", "b": "/x"}


@pytest.mark.parametrize(
    "header, param",
    [
        ("not json", "x-portkey-metadata"),
        ([1, 2], "x-portkey-metadata"),
        ({"n": 5}, "x-portkey-metadata.n"),
        ({"long": "x" * 129}, "x-portkey-metadata.long"),
        ({"": "empty key"}, "x-portkey-metadata."),
        ({"nested": {"a": "b"}}, "x-portkey-metadata.nested"),
    ],
)
def test_strict_mode_names_the_offending_key(header, param):
    err = bad(header)
    assert err.param == param or (param.endswith(".") and err.param == "x-portkey-metadata")
    assert "metadata" in err.message


def test_strict_mode_accepts_exactly_128_characters():
    assert resolve({"v": "x" * 128}).metadata["v"] == "x" * 128


def test_strict_mode_rejects_too_many_keys():
    err = bad({f"k{i}": "v" for i in range(5)}, max_keys=4)
    assert "at most 4" in err.message


def test_lenient_mode_coerces_truncates_and_records():
    resolved = resolve({"n": 5, "ok": True, "off": False, "none": None, "long": "y" * 200, "s": "v"}, strict=False)
    assert resolved.metadata == {"n": "5", "ok": "true", "long": "y" * 128, "s": "v"}
    assert any("truncated 'long'" in c for c in resolved.changes)
    assert any("converted 'n'" in c for c in resolved.changes)


def test_lenient_mode_drops_bad_json():
    resolved = resolve("{oops", strict=False)
    assert resolved.metadata == {} and resolved.changes


SCHEMA_POLICY = MetadataPolicy(
    workspace_schema={
        "type": "object",
        "properties": {
            "environment": {"type": "string", "enum": ["dev", "staging", "production"]},
            "team": {"type": "string", "default": "unassigned"},
        },
        "required": ["environment"],
    },
    key_schema={
        "type": "object",
        "properties": {"ticket": {"type": "string", "pattern": "^T-[0-9]+$"}},
        "required": ["ticket"],
    },
)


def test_required_keys_are_enforced_and_listed():
    err = bad({}, policy=SCHEMA_POLICY)
    assert "'environment' is required" in err.message and "'ticket' is required" in err.message


def test_schema_defaults_are_applied_and_constraints_checked():
    md = resolve({"environment": "dev", "ticket": "T-1"}, policy=SCHEMA_POLICY).metadata
    assert md["team"] == "unassigned"
    err = bad({"environment": "prod", "ticket": "T-1"}, policy=SCHEMA_POLICY)
    assert err.param == "x-portkey-metadata.environment"
    err = bad({"environment": "dev", "ticket": "1"}, policy=SCHEMA_POLICY)
    assert err.param == "x-portkey-metadata.ticket"


def test_a_refusal_carries_what_could_be_resolved():
    err = bad({"topic": "chat", "n": 5}, user="alice", mapped={"x-team": "T1"}, baggage="tenant=acme", policy=POLICY)
    assert err.param == "x-portkey-metadata.n"  # the client's error is unchanged
    assert err.resolved.metadata == {
        "environment": "production",
        "team": "ws",
        "feature": "key-feature",
        "topic": "chat",
        "_user": "alice",
        "x-team": "T1",
        "tenant": "acme",
    }
    assert err.resolved.changes == ["refused 'n': metadata key 'n' must have a string value, got int"]


def test_refused_header_values_and_baggage_are_named_with_their_source():
    err = bad({"ok": "1"}, mapped={"x-long": "h" * 200}, baggage="b=1")
    assert err.resolved.metadata == {"ok": "1", "b": "1"}
    assert err.resolved.changes == [
        "refused 'x-long': metadata key 'x-long' value is longer than 128 characters (from HEADERS_TO_METADATA)"
    ]


def test_too_many_keys_after_merging_keep_the_highest_precedence():
    err = bad({"a": "1", "b": "2", "c": "3"}, mapped={"h1": "x", "h2": "y"}, policy=POLICY, max_keys=5)
    assert "after merging" in err.message
    # Workspace, then key defaults, then the request; header values (lowest) make way.
    assert err.resolved.metadata == {
        "environment": "production",
        "team": "ws",
        "feature": "key-feature",
        "a": "1",
        "b": "2",
    }


def test_schema_refusals_drop_the_invalid_key_and_name_the_missing_one():
    err = bad({"environment": "prod", "team": "core"}, policy=SCHEMA_POLICY)
    assert err.message.startswith("Invalid metadata: ")
    assert err.resolved.metadata == {"team": "core"}
    assert err.resolved.changes[0].startswith("refused 'environment': metadata key 'environment': 'prod'")
    assert err.resolved.changes[1] == "missing 'ticket': metadata key 'ticket' is required"


# --- end to end ----------------------------------------------------------------------


def test_metadata_reaches_the_log_with_key_and_workspace_defaults(gw):
    from workspaces import services

    services.workspace_update(workspace=gw.workspace, default_metadata={"environment": "production"})
    services.api_key_update(api_key=gw.api_key, default_metadata={"team": "search"})
    from gateway.auth import key_cache

    key_cache.clear()
    md = {"environment": "dev", "feature": "chat", "_user": "u1"}
    resp = gw.post(headers=gw.headers(x_portkey_metadata=orjson.dumps(md).decode()))
    assert resp.status_code == 200
    [log] = gw.wait_for_logs(1)
    assert log.metadata == {"environment": "production", "feature": "chat", "_user": "u1", "team": "search"}
    assert log.user == "u1"


def test_body_user_and_mapped_headers_end_to_end(gw, settings):
    settings.HEADERS_TO_METADATA = ["x-team-id"]
    body = {"model": "gpt-4o-mini", "user": "body-user", "messages": [{"role": "user", "content": "hi"}]}
    gw.post(json=body, headers={**gw.headers(), "X-Team-Id": "T42", "baggage": "tenant=acme"})
    [log] = gw.wait_for_logs(1)
    assert log.metadata == {"_user": "body-user", "x-team-id": "T42", "tenant": "acme"}


def test_invalid_metadata_is_a_logged_400(gw):
    resp = gw.post(headers=gw.headers(x_portkey_metadata='{"n": 1}'))
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "x-portkey-metadata.n"
    [log] = gw.wait_for_logs(1)
    assert log.status_code == 400 and "n" in log.error_message
    assert gw.upstream.requests == []


def test_lenient_changes_are_recorded_on_the_log(gw, settings):
    settings.METADATA_VALIDATION = "lenient"
    gw.post(headers=gw.headers(x_portkey_metadata='{"n": 1, "big": "' + "z" * 300 + '"}'))
    [log] = gw.wait_for_logs(1)
    assert log.metadata == {"n": "1", "big": "z" * 128}
    assert len(log.metadata_changes) == 2


def test_required_workspace_metadata_on_every_request(gw):
    from gateway.auth import key_cache
    from workspaces import services

    services.workspace_update(workspace=gw.workspace, metadata_schema={"type": "object", "required": ["environment"]})
    key_cache.clear()
    resp = gw.post()
    assert resp.status_code == 400
    assert "'environment' is required" in resp.json()["error"]["message"]
    assert gw.post(headers=gw.headers(x_portkey_metadata='{"environment": "dev"}')).status_code == 200


def test_raw_utf8_metadata_headers_keep_their_characters(gw):
    resp = gw.post(headers={**gw.headers(), "x-portkey-metadata": '{"city": "Zürich"}'.encode()})
    assert resp.status_code == 200
    assert gw.wait_for_logs(1)[0].metadata == {"city": "Zürich"}


def test_the_same_header_again_follows_new_defaults_and_settings(gw, settings):
    """The gateway memoises accepted resolutions of a repeated header; a changed key default
    or validation setting still applies to the very next request carrying the same header."""
    from gateway.auth import key_cache
    from workspaces import services

    header = gw.headers(x_portkey_metadata='{"feature": "chat", "n": 1}')
    settings.METADATA_VALIDATION = "lenient"
    assert gw.post(headers=header).status_code == 200
    assert gw.post(headers=header).status_code == 200
    services.api_key_update(api_key=gw.api_key, default_metadata={"team": "search"})
    key_cache.clear()
    assert gw.post(headers=header).status_code == 200
    settings.METADATA_VALIDATION = "strict"
    assert gw.post(headers=header).status_code == 400
    logs = gw.wait_for_logs(4)
    assert [log.metadata for log in logs[:3]] == [
        {"feature": "chat", "n": "1"},
        {"feature": "chat", "n": "1"},
        {"feature": "chat", "n": "1", "team": "search"},
    ]
    assert [len(log.metadata_changes) for log in logs[:3]] == [1, 1, 1]
    assert logs[3].status_code == 400
