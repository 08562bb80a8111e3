"""Management commands ops script against: output contract and errors naming the option."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from workspaces import services
from workspaces.models import ApiKey, Membership, Provider, Workspace

pytestmark = pytest.mark.django_db

ENV_SCHEMA = {"type": "object", "properties": {"environment": {"type": "string", "enum": ["dev", "prod"]}}}


def _run(*args: str) -> list[str]:
    """The command's stdout lines (stderr, meant for people, is captured apart)."""
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue().splitlines()


def test_create_workspace_prints_the_slug_last(owner):
    lines = _run(
        "create_workspace",
        "beta",
        "--name",
        "Beta Inc",
        "--metadata",
        '{"environment": "prod"}',
        "--schema",
        json.dumps(ENV_SCHEMA),
        "--retention-days",
        "7",
        "--no-store-bodies",
        "--owner",
        "owner",
    )
    assert lines[-1] == "beta"
    workspace = Workspace.objects.get(slug="beta")
    assert workspace.name == "Beta Inc"
    assert workspace.default_metadata == {"environment": "prod"}
    assert workspace.metadata_schema == ENV_SCHEMA
    assert workspace.log_retention_days == 7
    assert workspace.store_bodies is False
    assert workspace.allow_custom_hosts is False
    assert Membership.objects.get(workspace=workspace).user == owner


def test_create_workspace_rejects_invalid_metadata_json():
    with pytest.raises(CommandError, match="--metadata is not valid JSON"):
        _run("create_workspace", "beta", "--metadata", "{environment: prod}")
    assert not Workspace.objects.exists()


def test_create_workspace_rejects_metadata_that_is_not_an_object():
    with pytest.raises(CommandError, match="--metadata must be a JSON object"):
        _run("create_workspace", "beta", "--metadata", '["prod"]')


def test_create_workspace_names_the_key_that_breaks_the_schema():
    with pytest.raises(CommandError, match="--metadata: metadata key 'environment'"):
        _run("create_workspace", "beta", "--schema", json.dumps(ENV_SCHEMA), "--metadata", '{"environment": "qa"}')


def test_create_workspace_names_the_bad_schema_keyword():
    schema = {"type": "object", "properties": {"environment": {"type": "string", "format": "date"}}}
    with pytest.raises(CommandError, match=r"--schema: metadata schema at properties/environment.*'format'"):
        _run("create_workspace", "beta", "--schema", json.dumps(schema))


def test_create_workspace_rejects_a_taken_slug(workspace):
    with pytest.raises(CommandError, match="SLUG: Workspace with this Slug already exists"):
        _run("create_workspace", "acme")


def test_create_workspace_rejects_an_unknown_owner():
    with pytest.raises(CommandError, match="--owner: no user named 'nobody'"):
        _run("create_workspace", "beta", "--owner", "nobody")


def test_create_api_key_prints_a_usable_key_last(workspace):
    lines = _run(
        "create_api_key",
        "--workspace",
        "acme",
        "--name",
        "ci",
        "--scopes",
        "inference",
        "--metadata",
        '{"environment": "ci"}',
        "--expires-in-days",
        "30",
    )
    api_key = services.api_key_authenticate(lines[-1])
    assert api_key is not None
    assert api_key.name == "ci"
    assert api_key.scopes == ["inference"]
    assert api_key.default_metadata == {"environment": "ci"}
    assert api_key.expires_at is not None
    assert api_key.hashed_key != lines[-1]


def test_create_api_key_uses_default_scopes(workspace):
    lines = _run("create_api_key", "--workspace", "acme", "--name", "ci")
    assert services.api_key_authenticate(lines[-1]).scopes == ApiKey.DEFAULT_SCOPES


def test_create_api_key_rejects_an_unknown_workspace():
    with pytest.raises(CommandError, match="--workspace: no workspace with slug 'nope'"):
        _run("create_api_key", "--workspace", "nope", "--name", "ci")


def test_create_api_key_rejects_invalid_metadata_json(workspace):
    with pytest.raises(CommandError, match="--metadata is not valid JSON"):
        _run("create_api_key", "--workspace", "acme", "--name", "ci", "--metadata", "{'environment': 'ci'}")


def test_create_api_key_names_the_key_that_breaks_the_workspace_schema(workspace):
    services.workspace_update(workspace=workspace, metadata_schema=ENV_SCHEMA)
    with pytest.raises(CommandError, match=r"--metadata: metadata key 'environment'.*\(workspace schema\)"):
        _run("create_api_key", "--workspace", "acme", "--name", "ci", "--metadata", '{"environment": "qa"}')
    assert not ApiKey.objects.exists()


def test_create_api_key_names_the_key_that_breaks_its_own_schema(workspace):
    with pytest.raises(CommandError, match=r"--metadata: metadata key 'environment'.*\(API key schema\)"):
        _run(
            "create_api_key",
            "--workspace",
            "acme",
            "--name",
            "ci",
            "--schema",
            json.dumps(ENV_SCHEMA),
            "--metadata",
            '{"environment": "qa"}',
        )


def test_create_api_key_rejects_a_past_expiry(workspace):
    with pytest.raises(CommandError, match="--expires-in-days must be at least 1"):
        _run("create_api_key", "--workspace", "acme", "--name", "ci", "--expires-in-days", "0")


def test_create_provider_reads_the_key_from_the_environment(workspace, monkeypatch):
    monkeypatch.setenv("PROVIDER_API_KEY", "sk-from-env")
    lines = _run(
        "create_provider", "--workspace", "acme", "--slug", "openai", "--base-url", "https://api.openai.com/v1"
    )
    assert lines[-1] == "@openai"
    provider = Provider.objects.get(workspace=workspace, slug="openai")
    assert provider.get_secret() == "sk-from-env"
    assert "sk-from-env" not in provider.encrypted_secret


def test_create_provider_prefers_the_api_key_option(workspace, monkeypatch):
    monkeypatch.setenv("PROVIDER_API_KEY", "sk-from-env")
    _run(
        "create_provider",
        "--workspace",
        "acme",
        "--slug",
        "openai",
        "--base-url",
        "https://x.test",
        "--api-key",
        "sk-opt",
    )
    assert Provider.objects.get(slug="openai").get_secret() == "sk-opt"


def test_create_provider_names_a_bad_base_url(workspace, monkeypatch):
    monkeypatch.delenv("PROVIDER_API_KEY", raising=False)
    with pytest.raises(CommandError, match="--base-url: Enter a valid URL"):
        _run("create_provider", "--workspace", "acme", "--slug", "openai", "--base-url", "api.openai.com")


def test_create_provider_rejects_a_taken_slug(workspace):
    services.provider_create(workspace=workspace, slug="openai", base_url="https://x.test")
    with pytest.raises(CommandError, match="--slug: Provider with this Workspace and Slug already exists"):
        _run("create_provider", "--workspace", "acme", "--slug", "openai", "--base-url", "https://y.test")


def test_revoke_api_key_by_prefix(api_key):
    stored, full_key = api_key
    assert _run("revoke_api_key", stored.prefix, "--workspace", "acme")[-1] == stored.prefix
    assert services.api_key_authenticate(full_key) is None


def test_revoke_api_key_by_name(api_key):
    stored, full_key = api_key
    _run("revoke_api_key", "default", "--workspace", "acme")
    stored.refresh_from_db()
    assert stored.revoked_at is not None
    assert services.api_key_authenticate(full_key) is None


def test_revoke_api_key_refuses_an_ambiguous_name(workspace):
    services.api_key_create(workspace=workspace, name="ci")
    services.api_key_create(workspace=workspace, name="ci")
    with pytest.raises(CommandError, match="several API keys are named 'ci'"):
        _run("revoke_api_key", "ci", "--workspace", "acme")
    assert ApiKey.objects.filter(is_active=True).count() == 2


def test_revoke_api_key_does_not_reach_into_other_workspaces(api_key, other_workspace):
    stored, _ = api_key
    with pytest.raises(CommandError, match="no API key with prefix"):
        _run("revoke_api_key", stored.prefix, "--workspace", "other")
    stored.refresh_from_db()
    assert stored.is_active
