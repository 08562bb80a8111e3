"""The audit trail: every write service records who changed what, from where, with before and
after values and never a secret; the admin and the commands say where they came from; the
audit page lists and filters the events of its workspace only."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from workspaces import services
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_services_record_create_update_and_revoke(owner, workspace):
    key, full_key = services.api_key_create(workspace=workspace, name="ci", actor=owner, via="api")
    services.api_key_update(api_key=key, name="ci-2", actor=owner, via="api")
    services.api_key_revoke(api_key=key, actor=owner, via="api")
    events = list(AuditEvent.objects.filter(object_type="api_key").order_by("id"))
    assert [e.action for e in events] == ["api_key.create", "api_key.update", "api_key.revoke"]
    assert events[1].changes == [("name", "ci", "ci-2")]
    assert all(e.via == "api" and e.actor == owner for e in events)
    dumped = json.dumps([[e.before, e.after] for e in events])
    assert full_key not in dumped and key.hashed_key not in dumped


def test_an_unchanged_save_records_nothing(workspace):
    before = AuditEvent.objects.count()
    services.workspace_update(workspace=workspace)
    assert AuditEvent.objects.count() == before


def test_existing_callers_still_work_and_are_labelled_system(workspace):
    services.workspace_update(workspace=workspace, default_metadata={"team": "x"})
    event = AuditEvent.objects.filter(action="workspace.update").get()
    assert (event.via, event.actor, event.actor_label) == ("system", None, "system")


def test_commands_record_via_command(workspace, capsys):
    call_command("create_api_key", "--workspace", "acme", "--name", "cli-key")
    call_command("revoke_api_key", "cli-key", "--workspace", "acme")
    call_command("create_provider", "--workspace", "acme", "--slug", "cli", "--base-url", "https://x.example.com")
    vias = set(
        AuditEvent.objects.filter(action__in=["api_key.create", "api_key.revoke", "provider.create"]).values_list(
            "via", flat=True
        )
    )
    assert vias == {"command"}


def test_admin_changes_record_via_admin(client, django_user_model, workspace, api_key):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(root)
    client.post(
        reverse("admin:workspaces_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [api_key[0].pk]},
    )
    event = AuditEvent.objects.get(action="api_key.revoke")
    assert (event.via, event.actor) == ("admin", root)


def test_provider_secret_changes_are_recorded_without_the_secret(workspace):
    provider = services.provider_create(workspace=workspace, slug="p", base_url="https://x.example.com", api_key="sk-1")
    services.provider_update(provider=provider, secret="sk-2", name="renamed")
    event = AuditEvent.objects.get(action="provider.update")
    assert event.after["secret"] == "changed" and event.after["name"] == "renamed"
    assert "sk-2" not in json.dumps(event.after) and "sk-1" not in json.dumps(event.before)


def test_audit_page_lists_and_filters(owner_client, owner, workspace, other_workspace):
    key, _ = services.api_key_create(workspace=workspace, name="ci", actor=owner, via="dashboard")
    services.api_key_revoke(api_key=key, actor=owner, via="dashboard")
    services.api_key_create(workspace=other_workspace, name="foreign-key", via="command")
    url = reverse("dashboard:audit", args=[workspace.slug])
    page = owner_client.get(url).content.decode()
    assert "api_key.revoke" in page and "foreign-key" not in page
    filtered = owner_client.get(url, {"action": "api_key.revoke"})
    assert [e.action for e in filtered.context["events"]] == ["api_key.revoke"]
    by_via = owner_client.get(url, {"via": "dashboard", "object_type": "api_key"})
    assert {e.via for e in by_via.context["events"]} == {"dashboard"}


def test_audit_events_cannot_be_edited_in_the_admin(client, django_user_model, workspace):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(root)
    event = AuditEvent.objects.first()
    assert client.get(reverse("admin:workspaces_auditevent_changelist")).status_code == 200
    assert (
        client.post(reverse("admin:workspaces_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    )
    assert AuditEvent.objects.filter(pk=event.pk).exists()
