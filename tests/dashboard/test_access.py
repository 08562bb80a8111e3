"""Tenancy and roles: every dashboard URL pattern answers 404 to someone outside the workspace
(pages and partials alike), logs in anonymous visitors first, and refuses edits to viewers."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.urls import URLPattern, reverse

from analytics import pricing
from analytics.alerts import services as alert_services
from analytics.policies import services as policy_services
from dashboard import urls as dashboard_urls
from workspaces import services
from workspaces.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db

POST_ONLY = {
    "settings_validate",
    "settings_key_revoke",
    "settings_provider_test",
    "settings_provider_rotate",
    "settings_member_role",
    "alert_rule_test",
    "alert_rule_rotate_secret",
    "policy_preview",
}
# Pages only owners may open (the removal confirmation); members get a 403.
OWNER_ONLY = {"settings_member_remove"}
# Pages only owners and admins may open (a deletion confirmation); members get a 403.
EDITOR_ONLY = {"settings_config_delete", "settings_price_delete", "alert_rule_delete", "policy_delete"}
EDITS = [
    "settings",
    "settings_validate",
    "settings_keys",
    "settings_providers",
    "settings_members",
    "settings_member_remove",
    "settings_configs",
    "settings_config_edit",
    "settings_config_delete",
    "settings_prices",
    "settings_price_edit",
    "settings_price_delete",
    "alerts",
    "alert_rule_edit",
    "alert_rule_delete",
    "policies",
    "policy_edit",
    "policy_delete",
    # The preview only reads: every member may use it.
    *sorted(POST_ONLY - {"settings_validate", "policy_preview"}),
]


def _workspace_routes() -> list[str]:
    return [p.name for p in dashboard_urls.workspace_patterns if isinstance(p, URLPattern)]


def _url(name: str, slug: str, ids: dict) -> str:
    kwargs = {"slug": slug}
    pattern = next(p for p in dashboard_urls.workspace_patterns if p.name == name)
    for param in pattern.pattern.converters:
        kwargs[param] = ids[param]
    return reverse(f"dashboard:{name}", kwargs=kwargs)


@pytest.fixture
def ids(workspace, member, api_key, provider, logs):
    return {
        "log_id": uuid.UUID(logs[0]["id"]),
        "key_id": api_key[0].id,
        "provider_id": provider.id,
        "membership_id": workspace.memberships.get(user=member).id,
        "config_id": services.config_create(workspace=workspace, slug="cfg", config={"provider": "@mock"}).id,
        "price_id": pricing.price_create(
            workspace=workspace, model="gpt-4o", input_per_million=Decimal(2), output_per_million=Decimal(8)
        ).id,
        "rule_id": alert_services.alert_rule_create(workspace=workspace, name="r", metric="spend", threshold=1)[0].id,
        "policy_id": policy_services.policy_create(workspace=workspace, name="p", limit=1).id,
    }


def test_every_workspace_route_is_covered():
    assert set(_workspace_routes()) >= {"overview", "logs", "log_rows", "log_detail", "summary", "audit"}
    assert len(_workspace_routes()) == 38


@pytest.mark.parametrize("name", _workspace_routes())
def test_it_rejects_foreign_workspace(client, outsider, other_workspace, workspace, ids, name):
    client.force_login(outsider)
    url = _url(name, workspace.slug, ids)
    response = client.post(url) if name in POST_ONLY else client.get(url)
    assert response.status_code == 404
    assert ApiKey.objects.get(pk=ids["key_id"]).is_active


@pytest.mark.parametrize("name", _workspace_routes())
def test_it_rejects_a_workspace_that_does_not_exist(owner_client, ids, name):
    url = _url(name, "no-such-workspace", ids)
    response = owner_client.post(url) if name in POST_ONLY else owner_client.get(url)
    assert response.status_code == 404


@pytest.mark.parametrize("name", _workspace_routes())
def test_it_sends_anonymous_visitors_to_the_login_page(client, workspace, ids, name):
    url = _url(name, workspace.slug, ids)
    response = client.post(url) if name in POST_ONLY else client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("dashboard:login"))


@pytest.mark.parametrize("name", sorted(set(_workspace_routes()) - POST_ONLY - OWNER_ONLY - EDITOR_ONLY))
def test_a_member_can_open_every_page(client, member, workspace, ids, name):
    client.force_login(member)
    response = client.get(_url(name, workspace.slug, ids))
    assert response.status_code in (200, 302)


def test_it_does_not_show_another_tenants_log_in_my_workspace(client, outsider, other_workspace, ids):
    # The outsider owns other_workspace; a log id from "acme" under their own slug is still a 404.
    client.force_login(outsider)
    assert client.get(_url("log_detail", other_workspace.slug, ids)).status_code == 404


def test_it_does_not_revoke_another_tenants_key_through_my_workspace(client, outsider, other_workspace, ids):
    client.force_login(outsider)
    response = client.post(_url("settings_key_revoke", other_workspace.slug, ids))
    assert response.status_code == 404
    assert ApiKey.objects.get(pk=ids["key_id"]).is_active


@pytest.mark.parametrize("name", EDITS)
def test_a_viewer_cannot_edit(client, viewer, workspace, ids, name):
    client.force_login(viewer)
    data = {"name": "sneaky", "default_metadata": '{"a": "b"}', "slug": "x", "base_url": "https://x.example.com"}
    response = client.post(_url(name, workspace.slug, ids), data | {"api_key": "sk-new"})
    assert response.status_code == 403
    assert ApiKey.objects.get(pk=ids["key_id"]).is_active
    assert not ApiKey.objects.filter(name="sneaky").exists()
    assert not AuditEvent.objects.filter(actor=viewer).exists()


def test_a_member_cannot_edit_either(client, member, workspace, ids):
    client.force_login(member)
    response = client.post(_url("settings_key_revoke", workspace.slug, ids))
    assert response.status_code == 403
    assert ApiKey.objects.get(pk=ids["key_id"]).is_active


def test_an_admin_can_edit(client, django_user_model, workspace, ids):
    admin = django_user_model.objects.create_user("wsadmin", "a@example.com", "pw-123456789")
    services.membership_add(workspace=workspace, user=admin, role="admin")
    client.force_login(admin)
    response = client.post(_url("settings_key_revoke", workspace.slug, ids))
    assert response.status_code == 302
    assert not ApiKey.objects.get(pk=ids["key_id"]).is_active


def test_home_redirects_a_single_membership_to_its_overview(owner_client, workspace):
    response = owner_client.get(reverse("dashboard:home"))
    assert response["Location"] == reverse("dashboard:overview", args=[workspace.slug])


def test_home_lists_workspaces_for_several_memberships(owner_client, owner, workspace):
    services.workspace_create(slug="second", name="Second team", owner=owner)
    page = owner_client.get(reverse("dashboard:home")).content.decode()
    assert "Second team" in page and "Acme" in page


def test_the_switcher_without_javascript_opens_the_chosen_workspace(owner_client, owner, workspace, other_workspace):
    services.workspace_create(slug="second", name="Second team", owner=owner)
    chosen = reverse("dashboard:overview", args=["second"])
    response = owner_client.get(reverse("dashboard:home"), {"ws": chosen})
    assert response.status_code == 302 and response["Location"] == chosen
    # Someone else's workspace or an outside URL is never followed: the chooser is shown.
    for foreign in (reverse("dashboard:overview", args=[other_workspace.slug]), "https://evil.example/"):
        response = owner_client.get(reverse("dashboard:home"), {"ws": foreign})
        assert response.status_code == 200 and "Second team" in response.content.decode()


def test_the_switcher_lists_only_my_workspaces(owner_client, owner, workspace, other_workspace):
    services.workspace_create(slug="second", name="Second team", owner=owner)
    page = owner_client.get(reverse("dashboard:overview", args=[workspace.slug])).content.decode()
    assert "Second team" in page
    assert "Other Co" not in page


def test_login_and_logout(client, owner, workspace):
    response = client.post(reverse("dashboard:login"), {"username": "owner", "password": "owner-pass-123"})
    assert response.status_code == 302
    assert client.get(reverse("dashboard:overview", args=[workspace.slug])).status_code == 200
    client.post(reverse("dashboard:logout"))
    assert client.get(reverse("dashboard:overview", args=[workspace.slug])).status_code == 302
