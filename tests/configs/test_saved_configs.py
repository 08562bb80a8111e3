"""Saved configs: validated by the gateway's parser on every write path, audited, edited in
Settings > Configs by owners and admins only (read-only for members, 404 for outsiders) and
in the admin through the services."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from workspaces import services
from workspaces.models import AuditEvent, Membership, RoutingConfig

pytestmark = pytest.mark.django_db
FALLBACK = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@primary"}, {"provider": "@backup"}]}


@pytest.fixture
def providers(workspace):
    for slug in ("primary", "backup"):
        services.provider_create(workspace=workspace, slug=slug, base_url="https://upstream.example.com/v1")


@pytest.fixture
def saved(workspace, providers):
    return services.config_create(workspace=workspace, slug="resilient", config=FALLBACK)


def test_create_update_delete_are_audited(workspace, owner, providers):
    saved = services.config_create(workspace=workspace, slug="resilient", config=FALLBACK, actor=owner, via="dashboard")
    assert saved.public_id.startswith("pc-") and saved.name == "resilient"
    services.config_update(
        routing_config=saved, config={**FALLBACK, "retry": {"attempts": 2}}, actor=owner, via="admin"
    )
    services.config_delete(routing_config=saved, actor=owner, via="api")
    created, updated, deleted = AuditEvent.objects.filter(object_type="config").order_by("id")
    assert (created.action, created.via, created.after["config"]) == ("config.create", "dashboard", FALLBACK)
    assert updated.action == "config.update" and updated.after["config"]["retry"] == {"attempts": 2}
    assert updated.before["config"] == FALLBACK and updated.actor_label == "owner"
    assert deleted.action == "config.delete" and deleted.before["public_id"] == saved.public_id


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"cache": {"mode": "semantic"}}, "x-portkey-config.cache.mode: semantic caching is not supported"),
        ({"provider": "@primary", "output_guardrails": ["pg-1"]}, "guardrails are not supported"),
        ({"provider": "@nowhere"}, "x-portkey-config: @nowhere is not a provider of this workspace"),
        (
            {"strategy": {"mode": "fallback"}, "targets": [{"provider": "@primary"}, {"virtual_key": "gone"}]},
            "x-portkey-config.targets[1]: @gone is not a provider",
        ),
    ],
)
def test_invalid_configs_are_not_saved(workspace, providers, config, words):
    with pytest.raises(ValidationError) as caught:
        services.config_create(workspace=workspace, slug="bad", config=config)
    assert any(words in message for message in caught.value.message_dict["config"])
    assert not RoutingConfig.objects.exists() and not AuditEvent.objects.filter(object_type="config").exists()


def test_a_slug_cannot_look_like_a_config_id(workspace, providers):
    with pytest.raises(ValidationError) as caught:
        services.config_create(workspace=workspace, slug="pc-123", config=FALLBACK)
    assert "slug" in caught.value.message_dict


def test_settings_page_creates_and_lists(client, owner, workspace, providers):
    client.force_login(owner)
    url = reverse("dashboard:settings_configs", args=[workspace.slug])
    resp = client.post(url, {"slug": "resilient", "name": "Resilient", "config": json.dumps(FALLBACK)})
    assert resp.status_code == 302
    saved = RoutingConfig.objects.get(workspace=workspace)
    assert saved.config == FALLBACK
    page = client.get(url).content.decode()
    assert saved.public_id in page and "resilient" in page and "<script" not in page.split("</nav>", 1)[1]
    assert AuditEvent.objects.get(object_type="config").via == "dashboard"


def test_settings_page_shows_the_field_error(client, owner, workspace, providers):
    client.force_login(owner)
    url = reverse("dashboard:settings_configs", args=[workspace.slug])
    resp = client.post(url, {"slug": "bad", "config": '{"input_guardrails": ["pg-1"]}'})
    assert resp.status_code == 400
    assert "x-portkey-config.input_guardrails: guardrails are not supported" in resp.content.decode()
    assert not RoutingConfig.objects.exists()


def test_settings_page_edits_and_deletes(client, owner, workspace, saved):
    client.force_login(owner)
    edit = reverse("dashboard:settings_config_edit", args=[workspace.slug, saved.pk])
    changed = {**FALLBACK, "retry": {"attempts": 1}}
    assert client.post(edit, {"slug": "resilient", "name": "x", "config": json.dumps(changed)}).status_code == 302
    saved.refresh_from_db()
    assert saved.config == changed
    delete = reverse("dashboard:settings_config_delete", args=[workspace.slug, saved.pk])
    assert "Delete config resilient?" in client.get(delete).content.decode()
    assert client.post(delete).status_code == 302 and not RoutingConfig.objects.exists()


def test_members_read_but_cannot_change(client, member, workspace, saved):
    client.force_login(member)
    listing = reverse("dashboard:settings_configs", args=[workspace.slug])
    page = client.get(listing).content.decode()
    assert saved.public_id in page and "Add a config" not in page
    assert client.post(listing, {"slug": "x", "config": json.dumps(FALLBACK)}).status_code == 403
    edit = reverse("dashboard:settings_config_edit", args=[workspace.slug, saved.pk])
    assert client.get(edit).status_code == 200
    assert client.post(edit, {"slug": "x", "config": "{}"}).status_code == 403
    delete = reverse("dashboard:settings_config_delete", args=[workspace.slug, saved.pk])
    assert client.post(delete).status_code == 403 and RoutingConfig.objects.filter(pk=saved.pk).exists()


def test_admins_may_change(client, django_user_model, workspace, saved):
    admin = django_user_model.objects.create_user("wsadmin", "a@example.com", "admin-pass-123")
    services.membership_add(workspace=workspace, user=admin, role=Membership.Role.ADMIN)
    client.force_login(admin)
    delete = reverse("dashboard:settings_config_delete", args=[workspace.slug, saved.pk])
    assert client.post(delete).status_code == 302


def test_outsiders_get_404(client, outsider, workspace, saved, other_workspace):
    client.force_login(outsider)
    assert client.get(reverse("dashboard:settings_configs", args=[workspace.slug])).status_code == 404
    # Their own workspace's URLs do not reach another workspace's config either.
    edit = reverse("dashboard:settings_config_edit", args=[other_workspace.slug, saved.pk])
    assert client.get(edit).status_code == 404


def test_admin_saves_and_deletes_through_the_services(admin_client, workspace, saved):
    url = reverse("admin:workspaces_routingconfig_change", args=[saved.pk])
    changed = {**FALLBACK, "cache": {"mode": "simple"}}
    resp = admin_client.post(url, {"slug": "resilient", "name": "R", "config": json.dumps(changed)})
    assert resp.status_code == 302
    assert AuditEvent.objects.filter(object_type="config", action="config.update", via="admin").exists()
    resp = admin_client.post(url, {"slug": "resilient", "name": "R", "config": '{"cache": {"mode": "semantic"}}'})
    assert resp.status_code == 200 and "semantic caching is not supported" in resp.content.decode()
    delete = reverse("admin:workspaces_routingconfig_delete", args=[saved.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 302
    assert AuditEvent.objects.filter(object_type="config", action="config.delete", via="admin").exists()
