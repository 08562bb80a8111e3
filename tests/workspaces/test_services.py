"""Services: API key issue/authentication and provider secrets at rest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from workspaces import keys, services
from workspaces.models import ApiKey, Membership, Provider

pytestmark = pytest.mark.django_db


def test_it_makes_the_creator_owner(owner):
    workspace = services.workspace_create(slug="beta", owner=owner)
    assert workspace.name == "beta"
    assert Membership.objects.get(workspace=workspace, user=owner).role == Membership.Role.OWNER


def test_it_issues_keys_in_the_pk_format(workspace):
    api_key, full_key = services.api_key_create(workspace=workspace, name="ci")
    assert full_key.startswith("pk-")
    assert len(full_key) == 51
    assert full_key[3:].isalnum()
    assert api_key.prefix == full_key[:11]
    assert api_key.scopes == ApiKey.DEFAULT_SCOPES


def test_it_stores_only_a_hash_of_the_key(workspace):
    api_key, full_key = services.api_key_create(workspace=workspace, name="ci")
    row = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert row["hashed_key"] == keys.hash_key(full_key)
    assert not any(full_key in str(value) for value in row.values())


def test_it_authenticates_a_valid_key(api_key):
    stored, full_key = api_key
    found = services.api_key_authenticate(full_key)
    assert found == stored
    assert found.workspace.slug == "acme"


def test_it_rejects_a_wrong_key_with_a_known_prefix(api_key):
    _, full_key = api_key
    wrong = full_key[:-1] + ("A" if full_key[-1] != "A" else "B")
    assert services.api_key_authenticate(wrong) is None


@pytest.mark.parametrize("candidate", ["", "pk-", "sk-" + "a" * 48, "pk-" + "a" * 47, "pk-" + "a" * 48])
def test_it_rejects_malformed_or_unknown_keys(api_key, candidate):
    assert services.api_key_authenticate(candidate) is None


def test_it_rejects_a_revoked_key(api_key):
    stored, full_key = api_key
    services.api_key_revoke(api_key=stored)
    stored.refresh_from_db()
    assert stored.revoked_at is not None
    assert services.api_key_authenticate(full_key) is None


def test_it_rejects_an_expired_key(workspace):
    _, full_key = services.api_key_create(
        workspace=workspace, name="old", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert services.api_key_authenticate(full_key) is None


def test_it_accepts_a_key_before_it_expires(workspace):
    _, full_key = services.api_key_create(
        workspace=workspace, name="new", expires_at=timezone.now() + timedelta(days=1)
    )
    assert services.api_key_authenticate(full_key) is not None


def test_it_refuses_to_create_a_key_with_invalid_defaults(workspace):
    with pytest.raises(ValidationError) as info:
        services.api_key_create(workspace=workspace, name="ci", default_metadata={"replicas": 3})
    assert "metadata key 'replicas'" in info.value.message_dict["default_metadata"][0]
    assert not ApiKey.objects.filter(name="ci").exists()


def _raw_secret_column(provider: Provider) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT encrypted_secret FROM workspaces_provider WHERE id = %s", [provider.pk])
        return cursor.fetchone()[0]


def test_it_encrypts_provider_secrets_at_rest(workspace):
    provider = services.provider_create(
        workspace=workspace, slug="openai", base_url="https://api.openai.com/v1/", api_key="sk-live-plaintext-123"
    )
    raw = _raw_secret_column(provider)
    assert raw
    assert "sk-live-plaintext-123" not in raw
    assert Provider.objects.get(pk=provider.pk).get_secret() == "sk-live-plaintext-123"
    assert provider.base_url == "https://api.openai.com/v1"


def test_it_rotates_a_provider_secret(workspace):
    provider = services.provider_create(workspace=workspace, slug="openai", base_url="https://x.test", api_key="old")
    before = _raw_secret_column(provider)
    services.provider_rotate_secret(provider=provider, api_key="new-secret")
    after = _raw_secret_column(provider)
    assert after != before
    assert "new-secret" not in after
    assert Provider.objects.get(pk=provider.pk).get_secret() == "new-secret"


def test_it_allows_a_provider_without_a_secret(workspace):
    provider = services.provider_create(workspace=workspace, slug="local", base_url="http://localhost:11434/v1")
    assert not provider.has_secret
    assert provider.get_secret() == ""


@pytest.mark.parametrize(
    "base_url",
    ["https://user:pw@api.example.com/v1", "https://api.example.com/v1?x=1", "https://api.example.com/v1/../admin"],
)
def test_it_holds_provider_base_urls_to_the_custom_host_rules(workspace, base_url):
    # A stored base URL is forwarded to exactly like x-portkey-custom-host, so the same
    # shape rules apply: no credentials, query or dot segments.
    with pytest.raises(ValidationError) as exc:
        services.provider_create(workspace=workspace, slug="bad", base_url=base_url)
    assert "base_url" in exc.value.message_dict
