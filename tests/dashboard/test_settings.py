"""Settings pages: workspace metadata and schema with validation, API keys shown once and
revoked, providers added, tested and rotated without their secret ever reaching the page."""

from __future__ import annotations

import json
import uuid

import pytest
from django.urls import reverse

from workspaces.models import ApiKey, AuditEvent, Provider

pytestmark = pytest.mark.django_db

SCHEMA = {"type": "object", "properties": {"environment": {"type": "string", "enum": ["production", "staging"]}}}


def _url(name, workspace, *args):
    return reverse(f"dashboard:{name}", args=[workspace.slug, *args])


def test_it_saves_workspace_metadata_and_audits_it(owner_client, owner, workspace):
    response = owner_client.post(
        _url("settings", workspace),
        {"default_metadata": '{"environment": "production"}', "metadata_schema": json.dumps(SCHEMA)},
    )
    assert "Saved." in response.content.decode()
    workspace.refresh_from_db()
    assert workspace.default_metadata == {"environment": "production"}
    event = AuditEvent.objects.filter(action="workspace.update").get()
    assert (event.actor, event.via) == (owner, "dashboard")
    assert event.before["default_metadata"] == {} and event.after["default_metadata"] == {"environment": "production"}


def test_it_shows_the_schema_error_and_does_not_save(owner_client, workspace):
    response = owner_client.post(
        _url("settings", workspace),
        {"default_metadata": '{"environment": "prod"}', "metadata_schema": json.dumps(SCHEMA)},
    )
    page = response.content.decode()
    assert "Saved." not in page
    assert "&#x27;prod&#x27; is not one of" in page
    workspace.refresh_from_db()
    assert workspace.default_metadata == {}
    assert not AuditEvent.objects.filter(action="workspace.update").exists()


def test_it_shows_invalid_json_inline(owner_client, workspace):
    page = owner_client.post(_url("settings", workspace), {"default_metadata": "{nope", "metadata_schema": ""})
    assert "Enter a valid JSON" in page.content.decode()


def test_live_validation_reports_without_saving(owner_client, workspace):
    data = {"default_metadata": '{"environment": "prod"}', "metadata_schema": json.dumps(SCHEMA)}
    response = owner_client.post(_url("settings_validate", workspace), data, headers={"HX-Request": "true"})
    assert "would be rejected" in response.content.decode()
    assert "is not one of" in response.content.decode()
    data["default_metadata"] = '{"environment": "staging"}'
    ok = owner_client.post(_url("settings_validate", workspace), data, headers={"HX-Request": "true"})
    assert "Valid" in ok.content.decode()
    workspace.refresh_from_db()
    assert workspace.metadata_schema == {}


def test_it_creates_a_key_shown_once(owner_client, workspace):
    response = owner_client.post(
        _url("settings_keys", workspace),
        {"name": "ci", "scopes": ["inference"], "default_metadata": '{"team": "search"}', "metadata_schema": ""},
    )
    page = response.content.decode()
    key = ApiKey.objects.get(name="ci")
    full_key = page.split('id="new-key" tabindex="0">')[1].split("<")[0]
    assert full_key.startswith(key.prefix) and len(full_key) == 51
    assert "no-store" in response["Cache-Control"]
    assert key.scopes == ["inference"] and key.default_metadata == {"team": "search"}
    assert full_key not in owner_client.get(_url("settings_keys", workspace)).content.decode()
    assert AuditEvent.objects.get(action="api_key.create").via == "dashboard"


def test_it_refuses_key_defaults_that_break_the_workspace_schema(owner_client, workspace):
    workspace.metadata_schema = SCHEMA
    workspace.save()
    response = owner_client.post(
        _url("settings_keys", workspace), {"name": "ci", "default_metadata": '{"environment": "qa"}'}
    )
    assert "is not one of" in response.content.decode()
    assert not ApiKey.objects.filter(name="ci").exists()


def test_it_revokes_a_key(owner_client, workspace, api_key):
    response = owner_client.post(_url("settings_key_revoke", workspace, api_key[0].id))
    assert response.status_code == 302
    api_key[0].refresh_from_db()
    assert not api_key[0].is_active and api_key[0].revoked_at
    event = AuditEvent.objects.get(action="api_key.revoke")
    assert event.before["is_active"] is True and event.after["is_active"] is False
    assert "revoked" in owner_client.get(_url("settings_keys", workspace)).content.decode()


def test_it_adds_a_provider_without_echoing_the_secret(owner_client, workspace):
    response = owner_client.post(
        _url("settings_providers", workspace),
        {"slug": "openai", "base_url": "https://api.openai.com/v1/", "api_key": "sk-very-secret"},
    )
    assert response.status_code == 302
    provider = Provider.objects.get(slug="openai")
    assert provider.get_secret() == "sk-very-secret" and provider.base_url == "https://api.openai.com/v1"
    page = owner_client.get(_url("settings_providers", workspace)).content.decode()
    assert "sk-very-secret" not in page and provider.encrypted_secret not in page
    event = AuditEvent.objects.get(action="provider.create")
    assert "sk-very-secret" not in json.dumps(event.after)


def test_it_rejects_a_duplicate_provider_slug(owner_client, workspace, provider):
    response = owner_client.post(
        _url("settings_providers", workspace), {"slug": "mock", "base_url": "https://x.example.com"}
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_it_rotates_a_provider_secret(owner_client, workspace, provider):
    response = owner_client.post(_url("settings_provider_rotate", workspace, provider.id), {"api_key": "sk-rotated"})
    assert "Secret replaced" in response.content.decode()
    assert "sk-rotated" not in response.content.decode()
    provider.refresh_from_db()
    assert provider.get_secret() == "sk-rotated"
    event = AuditEvent.objects.get(action="provider.rotate_secret")
    assert event.after["secret"] == "changed"
    assert "sk-rotated" not in json.dumps([event.before, event.after])


def test_read_only_roles_see_settings_without_forms(client, member, workspace, api_key):
    client.force_login(member)
    page = client.get(_url("settings_keys", workspace)).content.decode()
    assert api_key[0].prefix in page
    assert "Create an API key" not in page and "Revoke" not in page
    assert "only workspace owners and admins can change them" in page


def test_a_resubmitted_create_form_does_not_make_a_second_key(owner_client, workspace):
    data = {"name": "ci", "form_nonce": uuid.uuid4().hex}  # the cache may outlive the test database
    first = owner_client.post(_url("settings_keys", workspace), data)
    assert 'id="new-key"' in first.content.decode()
    again = owner_client.post(_url("settings_keys", workspace), data)
    assert "already submitted" in again.content.decode()
    assert 'id="new-key"' not in again.content.decode()
    assert ApiKey.objects.filter(name="ci").count() == 1


def test_the_time_zone_of_policy_windows_is_edited_and_audited(owner_client, owner, workspace):
    page = owner_client.get(_url("settings", workspace)).content.decode()
    assert 'name="time_zone"' in page and 'value="UTC"' in page
    data = {"default_metadata": "", "metadata_schema": "", "time_zone": "Europe/Paris"}
    response = owner_client.post(_url("settings", workspace), data)
    assert "Saved." in response.content.decode()
    workspace.refresh_from_db()
    assert workspace.time_zone == "Europe/Paris"
    event = AuditEvent.objects.filter(action="workspace.update").get()
    assert (event.actor, event.via) == (owner, "dashboard")
    assert (event.before["time_zone"], event.after["time_zone"]) == ("UTC", "Europe/Paris")
    # Posted without it (an older form): unchanged.
    owner_client.post(_url("settings", workspace), {"default_metadata": "", "metadata_schema": ""})
    workspace.refresh_from_db()
    assert workspace.time_zone == "Europe/Paris"


def test_an_unknown_time_zone_is_refused_naming_the_field(owner_client, workspace):
    data = {"default_metadata": "", "metadata_schema": "", "time_zone": "Mars/Olympus_Mons"}
    page = owner_client.post(_url("settings", workspace), data).content.decode()
    assert "Saved." not in page
    assert "Time zone &#x27;Mars/Olympus_Mons&#x27; is not an IANA time zone name" in page
    workspace.refresh_from_db()
    assert workspace.time_zone == "UTC"
    assert not AuditEvent.objects.filter(action="workspace.update").exists()
    live = owner_client.post(_url("settings_validate", workspace), data, headers={"HX-Request": "true"})
    assert "is not an IANA time zone name" in live.content.decode()


def test_members_cannot_change_the_time_zone(client, member, workspace):
    client.force_login(member)
    data = {"default_metadata": "", "metadata_schema": "", "time_zone": "Asia/Tokyo"}
    assert client.post(_url("settings", workspace), data).status_code == 403
    workspace.refresh_from_db()
    assert workspace.time_zone == "UTC"
